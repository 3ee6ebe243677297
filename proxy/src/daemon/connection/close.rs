//! How a relayed connection ended, in the words of its direction, and what the other side is
//! told: a reset or a broken protocol on one side is a reset on the other, as a direct
//! connection would have shown it (a clean close was passed on as a FIN by the relay).

use bip324_control::Direction;
use tokio::net::TcpStream;

use super::party::Party;
use crate::daemon::labels::CloseKind;
use crate::daemon::relay::{CloseReason, HALF_CLOSE_GRACE, Side};

/// Indexed by `Party`: client, remote, peer, node.
const CLOSED: [CloseKind; 4] = [
    CloseKind::ClientClosed,
    CloseKind::RemoteClosed,
    CloseKind::PeerClosed,
    CloseKind::NodeClosed,
];
const CLOSED_MID_MESSAGE: [CloseKind; 4] = [
    CloseKind::ClientClosedMidMessage,
    CloseKind::RemoteClosedMidMessage,
    CloseKind::PeerClosedMidMessage,
    CloseKind::NodeClosedMidMessage,
];
const ERROR: [CloseKind; 4] = [
    CloseKind::ClientError,
    CloseKind::RemoteError,
    CloseKind::PeerError,
    CloseKind::NodeError,
];
const PROTOCOL: [CloseKind; 4] = [
    CloseKind::ClientProtocol,
    CloseKind::RemoteProtocol,
    CloseKind::PeerProtocol,
    CloseKind::NodeProtocol,
];

pub(crate) fn kind(reason: &CloseReason, direction: Direction) -> CloseKind {
    let party = |side| Party::of(direction, side) as usize;
    match reason {
        CloseReason::Closed { side, discarded: 0 } => CLOSED[party(*side)],
        CloseReason::Closed { side, .. } => CLOSED_MID_MESSAGE[party(*side)],
        CloseReason::Io { side, .. } => ERROR[party(*side)],
        CloseReason::Protocol { side, .. } => PROTOCOL[party(*side)],
        CloseReason::HalfCloseTimeout { .. } => CloseKind::HalfCloseTimeout,
        CloseReason::Shutdown => CloseKind::Shutdown,
        CloseReason::HandedOver => CloseKind::HandedOver,
    }
}

/// The side whose error should reach the other one as a reset.
pub(crate) fn failed_side(reason: &CloseReason) -> Option<Side> {
    match reason {
        CloseReason::Io { side, .. } | CloseReason::Protocol { side, .. } => Some(*side),
        _ => None,
    }
}

/// Makes dropping `stream` send a reset (SO_LINGER 0) instead of a FIN. A zero linger never
/// blocks.
pub(crate) fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}

pub(crate) struct Described<'a> {
    pub(crate) reason: &'a CloseReason,
    pub(crate) direction: Direction,
}

/// May quote a peer's bytes (a protocol error): log it through `LogSafe`.
impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let party = |side| Party::of(self.direction, side);
        match self.reason {
            CloseReason::Closed { side, discarded: 0 } => {
                write!(f, "{} closed the connection", party(*side))
            }
            CloseReason::Closed { side, discarded } => write!(
                f,
                "{} closed the connection in the middle of a message ({discarded} bytes dropped)",
                party(*side)
            ),
            CloseReason::Io { side, error } => {
                write!(f, "{} connection failed: {error}", party(*side))
            }
            // The error names the transport (v1 or v2).
            CloseReason::Protocol { side, error } => {
                write!(f, "{} broke the protocol: {error}", party(*side))
            }
            CloseReason::HalfCloseTimeout { closed } => write!(
                f,
                "{} closed the connection and the other side did not close within {}s",
                party(*closed),
                HALF_CLOSE_GRACE.as_secs()
            ),
            CloseReason::Shutdown => f.write_str("proxy shutting down"),
            CloseReason::HandedOver => {
                f.write_str("handed over to a successor, which carries it on")
            }
        }
    }
}
