//! Why a connection ended before it was relayed: the label for the metrics, the sentence for
//! the log, in the words of its direction.

use std::io;

use bip324_control::Direction;

use super::party::Party;
use crate::daemon::labels::FailureReason;
use crate::daemon::relay::Side;
use crate::daemon::v2_connect::{HandshakeError, HandshakeFailure};
use bip324_protocol::ProtocolError;

#[derive(Debug)]
pub(crate) enum Failure {
    /// The accepted socket's first bytes did not tell its transport within
    /// --first-bytes-timeout.
    FirstBytesTimeout,
    /// The accepted socket closed before its first bytes told its transport.
    ClosedEarly {
        received: usize,
    },
    AcceptedIo(io::Error),
    Connect(io::Error),
    ConnectTimeout,
    /// The v2 handshake the proxy initiated on the dialled socket.
    Handshake(HandshakeFailure),
    /// The v2 handshake the proxy answered on the accepted socket (an inbound peer's).
    Answering(HandshakeError),
    /// SOCKS5: this failure, already told to the client as a reply code.
    Replied(Box<Failure>),
    Shutdown,
}

impl Failure {
    pub(crate) fn protocol_error(&self) -> Option<&ProtocolError> {
        match self {
            Failure::Handshake(HandshakeFailure {
                error: HandshakeError::Protocol(error),
                ..
            })
            | Failure::Answering(HandshakeError::Protocol(error)) => Some(error),
            Failure::Replied(failure) => failure.protocol_error(),
            _ => None,
        }
    }

    /// Whether a direct connection would have failed with an error here (refused,
    /// unreachable, reset, a broken handshake), so the accepted socket gets a reset rather
    /// than a clean end; not when its own party stopped, a reply said it, or the proxy is
    /// shutting down.
    pub(crate) fn is_an_error_to_the_accepted(&self) -> bool {
        !matches!(
            self,
            Failure::FirstBytesTimeout
                | Failure::ClosedEarly { .. }
                | Failure::AcceptedIo(_)
                | Failure::Answering(_)
                | Failure::Shutdown
                | Failure::Replied(_)
        )
    }

    pub(crate) fn reason(&self, direction: Direction) -> FailureReason {
        let accepted = Party::of(direction, Side::Accepted);
        match self {
            Failure::FirstBytesTimeout if accepted == Party::Peer => FailureReason::PeerTimeout,
            Failure::FirstBytesTimeout => FailureReason::ClientTimeout,
            Failure::ClosedEarly { .. } if accepted == Party::Peer => FailureReason::PeerClosed,
            Failure::ClosedEarly { .. } => FailureReason::ClientClosed,
            Failure::AcceptedIo(_) if accepted == Party::Peer => FailureReason::PeerError,
            Failure::AcceptedIo(_) => FailureReason::ClientError,
            Failure::Connect(_) => FailureReason::ConnectError,
            Failure::ConnectTimeout => FailureReason::ConnectTimeout,
            Failure::Handshake(HandshakeFailure { error, .. }) | Failure::Answering(error) => {
                match error {
                    HandshakeError::Connect(_) => FailureReason::ConnectError,
                    HandshakeError::Timeout => FailureReason::HandshakeTimeout,
                    HandshakeError::Closed => FailureReason::HandshakeClosed,
                    HandshakeError::Io(_)
                    | HandshakeError::Entropy(_)
                    | HandshakeError::Setup(_) => FailureReason::HandshakeError,
                    HandshakeError::Protocol(_) => FailureReason::HandshakeProtocol,
                }
            }
            Failure::Shutdown => FailureReason::Shutdown,
            Failure::Replied(failure) => failure.reason(direction),
        }
    }

    /// The sentence for the log, naming the parties as `direction` does.
    pub(crate) fn describe(&self, direction: Direction) -> Described<'_> {
        Described {
            failure: self,
            direction,
        }
    }
}

pub(crate) struct Described<'a> {
    failure: &'a Failure,
    direction: Direction,
}

/// May quote a peer's bytes (a protocol error): log it through `LogSafe`.
impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let accepted = Party::of(self.direction, Side::Accepted);
        let dialled = match Party::of(self.direction, Side::Dialled) {
            Party::Node => "node",
            _ => "destination",
        };
        match self.failure {
            Failure::FirstBytesTimeout => write!(
                f,
                "{accepted} sent too few bytes to tell v1 from v2 within --first-bytes-timeout"
            ),
            Failure::ClosedEarly { received } => write!(
                f,
                "{accepted} closed after {received} bytes, before its transport could be told"
            ),
            Failure::AcceptedIo(e) => write!(f, "{accepted} connection failed: {e}"),
            Failure::Connect(e) => write!(f, "cannot connect to the {dialled}: {e}"),
            Failure::ConnectTimeout => {
                write!(
                    f,
                    "cannot connect to the {dialled} within --handshake-timeout"
                )
            }
            Failure::Handshake(h) => write!(f, "{h}"),
            Failure::Answering(HandshakeError::Timeout) => write!(
                f,
                "the {accepted}'s v2 handshake did not complete within --handshake-timeout"
            ),
            Failure::Answering(HandshakeError::Closed) => {
                write!(
                    f,
                    "the {accepted} closed the connection during the v2 handshake"
                )
            }
            Failure::Answering(HandshakeError::Protocol(e)) => {
                write!(f, "the {accepted}'s v2 handshake failed: {e}")
            }
            Failure::Answering(HandshakeError::Io(e) | HandshakeError::Connect(e)) => write!(
                f,
                "the {accepted}'s connection failed during the v2 handshake: {e}"
            ),
            Failure::Answering(HandshakeError::Entropy(e)) => {
                write!(f, "no randomness for the v2 handshake: {e}")
            }
            Failure::Answering(HandshakeError::Setup(e)) => {
                write!(f, "cannot start the v2 handshake: {e}")
            }
            Failure::Shutdown => f.write_str("proxy shutting down"),
            Failure::Replied(failure) => write!(
                f,
                "{} (told to the SOCKS5 client)",
                failure.describe(self.direction)
            ),
        }
    }
}
