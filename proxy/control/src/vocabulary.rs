//! The proxy's vocabulary: how a connection came in (front, direction), how it was carried
//! (transport), why one was refused or failed, how one closed. Each is an enum whose `as_str`
//! is the one spelling used by the proxy's logs, its metrics labels and the control socket's
//! JSON (serde's `snake_case` of the variant, checked by the tests below), and whose `ALL`
//! lists every value the proxy produces, in declaration order (metrics export each, even at
//! zero, and index their counters by `value as usize`).
//!
//! The words a client reads from the control socket (front, transport, failure, close) also
//! have an `Unknown`, last and outside `ALL`: what a client makes of a word a newer proxy
//! added, so that one new word does not make it refuse the whole document. The proxy never
//! says `Unknown`.

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    (
        $(#[$doc:meta])*
        $name:ident {
            $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+
        }
        $(unknown: $(#[$udoc:meta])* $unknown:ident,)?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            $($(#[$udoc])* #[serde(other)] $unknown,)?
        }

        impl $name {
            /// Every value the proxy says, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The one spelling in logs, metrics labels and the control socket.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $($name::$unknown => "unknown",)?
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
    /// Which of the proxy's listeners accepted a connection.
    Front {
        /// A local client's connection, redirected by the kernel (nftables or eBPF).
        Redirect => "redirect",
        /// A peer's connection to the local node (inbound mode).
        Inbound => "inbound",
        /// A client that asked the SOCKS5 listener.
        Socks5 => "socks5",
    }
    unknown:
    /// Not said: a proxy older than this field, or a front newer than this client.
    Unknown,
);

/// Unlike the others: `front` is absent from older proxies' documents.
impl Default for Front {
    fn default() -> Front {
        Front::Unknown
    }
}

vocabulary!(
    /// Which way a connection goes through the proxy.
    Direction {
        /// A local client's connection out: the client speaks v1, the remote v2.
        Outbound => "outbound",
        /// A peer's connection in to the local node: the "client" is the peer (v2, or v1 if
        /// it chose so), the "remote" is the node (v1).
        Inbound => "inbound",
    }
);

/// Absent from proxies older than inbound mode: outbound.
impl Default for Direction {
    fn default() -> Direction {
        Direction::Outbound
    }
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
    unknown:
    /// A transport newer than this client.
    Unknown,
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
    unknown:
    /// A refusal newer than this client.
    Unknown,
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
    unknown:
    /// A reason newer than this client.
    Unknown,
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
        /// The remote broke v2 (or v1, after --v1-fallback).
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
        /// It goes on in a successor (`bip324-proxy --take-over`): nothing was closed.
        HandedOver => "handed_over",
    }
    unknown:
    /// A close newer than this client.
    Unknown,
);

impl CloseKind {
    /// The remote node of an outbound connection ended it.
    pub const fn by_remote(self) -> bool {
        matches!(
            self,
            CloseKind::RemoteClosed
                | CloseKind::RemoteClosedMidMessage
                | CloseKind::RemoteError
                | CloseKind::RemoteProtocol
        )
    }
}

/// `ConnectionStatus::transport` on the wire: the transport's word once it opened,
/// "connecting" before.
pub(crate) mod connecting {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TransportKind;

    const CONNECTING: &str = "connecting";

    pub(crate) fn serialize<S: Serializer>(
        transport: &Option<TransportKind>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match transport {
            Some(kind) => kind.serialize(serializer),
            None => serializer.serialize_str(CONNECTING),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<TransportKind>, D::Error> {
        let word = String::deserialize(deserializer)?;
        if word == CONNECTING {
            return Ok(None);
        }
        TransportKind::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&word))
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value's JSON is its `as_str`, and reads back as itself.
    fn spelled_as_labels<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        for &value in all {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(json, format!("\"{}\"", as_str(value)), "{value:?}");
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value);
        }
    }

    #[test]
    fn every_word_is_spelled_in_json_as_in_logs_and_metrics() {
        spelled_as_labels(Front::ALL, Front::as_str);
        spelled_as_labels(Direction::ALL, Direction::as_str);
        spelled_as_labels(TransportKind::ALL, TransportKind::as_str);
        spelled_as_labels(RefusalKind::ALL, RefusalKind::as_str);
        spelled_as_labels(FailureReason::ALL, FailureReason::as_str);
        spelled_as_labels(CloseKind::ALL, CloseKind::as_str);
        assert_eq!(
            Front::ALL.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            ["redirect", "inbound", "socks5"]
        );
        assert_eq!(TransportKind::V1Fallback.to_string(), "v1_fallback");
    }

    /// A word a newer proxy added reads as `Unknown`, which no proxy says: metrics never
    /// count it.
    #[test]
    fn a_newer_proxys_word_reads_as_unknown() {
        let read = |json| serde_json::from_str::<TransportKind>(json).unwrap();
        assert_eq!(read("\"v3\""), TransportKind::Unknown);
        assert!(!TransportKind::ALL.contains(&TransportKind::Unknown));
        assert_eq!(
            serde_json::from_str::<Front>("\"tor\"").unwrap(),
            Front::Unknown
        );
        assert!(!Front::ALL.contains(&Front::Unknown));
        assert_eq!(
            serde_json::from_str::<FailureReason>("\"dns_error\"").unwrap(),
            FailureReason::Unknown
        );
        assert!(!FailureReason::ALL.contains(&FailureReason::Unknown));
        assert_eq!(
            serde_json::from_str::<CloseKind>("\"evicted\"").unwrap(),
            CloseKind::Unknown
        );
        assert!(!CloseKind::ALL.contains(&CloseKind::Unknown));
    }

    #[test]
    fn closes_by_the_remote_are_the_remote_words() {
        for &kind in CloseKind::ALL {
            assert_eq!(
                kind.by_remote(),
                kind.as_str().starts_with("remote"),
                "{kind}"
            );
        }
    }
}
