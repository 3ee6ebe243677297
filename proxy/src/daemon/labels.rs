//! The daemon's vocabulary: how a connection was carried, why one was refused or failed.
//! Each is an enum whose `as_str` is the one spelling used by logs, metrics labels and the
//! control socket, and whose `ALL` lists every value (metrics export each, even at zero).

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary!(
    /// How an opened connection is carried to its destination.
    TransportKind {
        /// Encrypted: translated between the client's v1 and the remote's v2.
        V2 => "v2",
        /// Plaintext v1, after a failed v2 attempt (`--v1-fallback`).
        V1Fallback => "v1_fallback",
        /// The client spoke something else than v1 (v2 itself): bytes pass unchanged.
        Passthrough => "passthrough",
        /// An inbound peer that chose v1: plaintext, as it would be without the proxy.
        V1 => "v1",
    }
);

vocabulary!(
    /// Why a connection was refused before anything was read from it.
    RefusalKind {
        NotRedirected => "not_redirected",
        DestinationIsProxy => "destination_is_proxy",
        Loop => "loop",
        Unreadable => "unreadable",
        /// Inbound: the source address already has its share of connections that have not
        /// reached the node yet.
        TooManyPending => "too_many_pending",
        /// Inbound: evicted before it reached the node, to admit a newcomer of its full
        /// network (its address held the most there).
        EvictedPending => "evicted_pending",
        /// The destination is this host, or no single remote host (destination.rs).
        ForbiddenDestination => "forbidden_destination",
    }
);

vocabulary!(
    /// Why a connection ended before it was relayed.
    FailureReason {
        ClientTimeout => "client_timeout",
        ClientClosed => "client_closed",
        ClientError => "client_error",
        ConnectError => "connect_error",
        ConnectTimeout => "connect_timeout",
        HandshakeTimeout => "handshake_timeout",
        HandshakeClosed => "handshake_closed",
        HandshakeError => "handshake_error",
        HandshakeProtocol => "handshake_protocol",
        Shutdown => "shutdown",
    }
);

vocabulary!(
    /// How a relayed connection ended.
    CloseKind {
        ClientClosed => "client_closed",
        RemoteClosed => "remote_closed",
        /// It closed with an unfinished message, which was dropped.
        ClientClosedMidMessage => "client_closed_mid_message",
        RemoteClosedMidMessage => "remote_closed_mid_message",
        ClientError => "client_error",
        RemoteError => "remote_error",
        /// The client broke v1.
        ClientProtocol => "client_protocol",
        /// The remote broke v2.
        RemoteProtocol => "remote_protocol",
        HalfCloseTimeout => "half_close_timeout",
        Shutdown => "shutdown",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Metrics index counters by position: `ALL` must list each value once, in order.
    #[test]
    fn all_lists_every_value_in_declaration_order() {
        for (i, kind) in TransportKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, kind) in RefusalKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, kind) in FailureReason::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, kind) in CloseKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        assert_eq!(TransportKind::V1Fallback.to_string(), "v1_fallback");
    }
}
