//! Why a connection is refused before it is relayed, for every front: the label for the
//! metrics, the sentence for the log.

use std::io;

use crate::daemon::destination::Forbidden;
use crate::daemon::labels::RefusalKind;
use crate::daemon::pending::{PER_ADDRESS, PER_NETWORK};
use crate::daemon::socks5::wire::{self, Target, WireError};

#[derive(Debug)]
pub(crate) enum Refusal {
    /// The kernel could not say where the connection was going.
    Unreadable(io::Error),
    /// No original destination, or the listener itself: someone connected to the proxy's
    /// port directly.
    NotRedirected,
    /// The destination is one of the proxy's own listening addresses.
    DestinationIsProxy,
    /// The connection is (or targets) one of the proxy's own upstream connections.
    OwnUpstream,
    /// The destination is this host or no single remote host (destination.rs).
    Forbidden { target: String, why: Forbidden },
    /// Inbound: the source address has its share of connections not yet at the node.
    TooManyPending,
    /// Inbound: closed before it reached the node, to admit a newcomer of its full network.
    EvictedPending,
    /// Inbound: the node's port is no network's default port.
    UnknownNetwork { port: u16 },
    /// SOCKS5: what arrived is not SOCKS5.
    NotSocks5(WireError),
    /// SOCKS5: no request within --first-bytes-timeout.
    NoSocks5Request,
    /// SOCKS5: a request the negotiation refused (and answered).
    Socks5Request(wire::Refusal),
    /// SOCKS5: a port outside --socks5-ports.
    PortNotServed(Target),
    /// SOCKS5: this host cannot resolve the name.
    Unresolvable { target: Target, error: io::Error },
}

impl Refusal {
    pub(crate) fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Unreadable(_) => RefusalKind::Unreadable,
            Refusal::NotRedirected => RefusalKind::NotRedirected,
            Refusal::DestinationIsProxy => RefusalKind::DestinationIsProxy,
            Refusal::OwnUpstream => RefusalKind::Loop,
            Refusal::Forbidden { .. } => RefusalKind::ForbiddenDestination,
            Refusal::TooManyPending => RefusalKind::TooManyPending,
            Refusal::EvictedPending => RefusalKind::EvictedPending,
            Refusal::UnknownNetwork { .. } => RefusalKind::UnknownNetwork,
            Refusal::NotSocks5(_) | Refusal::NoSocks5Request => RefusalKind::NotSocks5,
            Refusal::Socks5Request(_) => RefusalKind::Socks5Request,
            Refusal::PortNotServed(_) => RefusalKind::PortNotServed,
            Refusal::Unresolvable { .. } => RefusalKind::Unresolvable,
        }
    }

    /// A configuration problem the operator should see, rather than a stranger's probe.
    pub(crate) fn is_misconfiguration(&self) -> bool {
        matches!(self, Refusal::OwnUpstream | Refusal::UnknownNetwork { .. })
    }
}

/// May quote a client's bytes (a SOCKS5 name has hostname syntax, but all the same): log it
/// through `LogSafe`.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unreadable(e) => write!(f, "cannot read its original destination: {e}"),
            Refusal::NotRedirected => f.write_str(
                "not redirected by the kernel (a direct connection to the proxy's port): the \
                 proxy is not an open relay",
            ),
            Refusal::DestinationIsProxy => {
                f.write_str("its destination is the proxy itself: the proxy is not an open relay")
            }
            Refusal::OwnUpstream => f.write_str(
                "loop: the proxy's own upstream connection was redirected back to it; do not \
                 run the proxy with the redirected group, and exempt its user",
            ),
            Refusal::Forbidden { target, why } => {
                write!(f, "{target}: {why}; the proxy relays to remote nodes only")
            }
            Refusal::TooManyPending => write!(
                f,
                "its address already has {PER_ADDRESS} connections that have not reached the node"
            ),
            Refusal::EvictedPending => write!(
                f,
                "closed before it reached the node, to admit a newcomer: its network had \
                 {PER_NETWORK} such connections and its address held the most"
            ),
            Refusal::UnknownNetwork { port } => write!(
                f,
                "port {port} is no network's default port; give the node's network with \
                 --inbound-network"
            ),
            Refusal::NotSocks5(e) => write!(f, "not a SOCKS5 client: {e}"),
            Refusal::NoSocks5Request => {
                f.write_str("no SOCKS5 request within --first-bytes-timeout")
            }
            Refusal::Socks5Request(why) => write!(f, "{why}"),
            Refusal::PortNotServed(target) => write!(
                f,
                "CONNECT {target}: only the Bitcoin ports of --socks5-ports are served (not an \
                 open relay)"
            ),
            Refusal::Unresolvable { target, error } => {
                write!(f, "CONNECT {target}: cannot resolve the name: {error}")
            }
        }
    }
}
