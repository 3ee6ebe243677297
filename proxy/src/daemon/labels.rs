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
    /// The way a connection came in.
    Front {
        /// Redirected by the kernel from a local client (or a router's LAN).
        Redirect => "redirect",
        /// A peer of the local node (inbound mode).
        Inbound => "inbound",
        /// A SOCKS5 client.
        Socks5 => "socks5",
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
        /// Inbound: the node's port is no network's default port and --inbound-network is
        /// not given.
        UnknownNetwork => "unknown_network",
        /// SOCKS5: not a SOCKS5 client, or no request within --first-bytes-timeout.
        NotSocks5 => "not_socks5",
        /// SOCKS5: a request the proxy does not serve (no acceptable method, a command other
        /// than CONNECT and RESOLVE, a name outside hostname syntax).
        Socks5Request => "socks5_request",
        /// SOCKS5: a port outside --socks5-ports (not an open relay).
        PortNotServed => "port_not_served",
        /// SOCKS5: the destination's name does not resolve on this host.
        Unresolvable => "unresolvable",
    }
);

vocabulary!(
    /// Why a connection ended before it was relayed.
    FailureReason {
        /// The client's first bytes did not tell v1 from v2 within --first-bytes-timeout.
        ClientTimeout => "client_timeout",
        ClientClosed => "client_closed",
        ClientError => "client_error",
        /// Inbound: the peer's first bytes did not come within --first-bytes-timeout.
        PeerTimeout => "peer_timeout",
        PeerClosed => "peer_closed",
        PeerError => "peer_error",
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
        /// Inbound: the peer, or the local node, closed or failed.
        PeerClosed => "peer_closed",
        NodeClosed => "node_closed",
        PeerClosedMidMessage => "peer_closed_mid_message",
        NodeClosedMidMessage => "node_closed_mid_message",
        PeerError => "peer_error",
        NodeError => "node_error",
        /// The peer broke v2 (or v1, if it chose v1).
        PeerProtocol => "peer_protocol",
        /// The node broke v1.
        NodeProtocol => "node_protocol",
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
