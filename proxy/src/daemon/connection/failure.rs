//! Why a connection ended before it was relayed: the sentence for the log, the label for
//! the metrics.

use std::io;

use super::super::labels::FailureReason;
use super::super::v2_connect::{HandshakeError, HandshakeFailure};
use bip324_protocol::ProtocolError;

/// Why a connection ended before it was relayed.
#[derive(Debug)]
pub(super) enum Failure {
    ClientTimeout,
    ClientClosedEarly {
        received: usize,
    },
    ClientIo(io::Error),
    Connect(io::Error),
    ConnectTimeout,
    Handshake(HandshakeFailure),
    /// Inbound: the v2 handshake with the connecting peer failed.
    PeerHandshake(HandshakeError),
    /// SOCKS5: this failure, already told to the client as a reply code.
    Answered(Box<Failure>),
    Shutdown,
}

impl Failure {
    pub(super) fn protocol_error(&self) -> Option<&ProtocolError> {
        match self {
            Failure::Handshake(HandshakeFailure {
                error: HandshakeError::Protocol(error),
                ..
            })
            | Failure::PeerHandshake(HandshakeError::Protocol(error)) => Some(error),
            Failure::Answered(failure) => failure.protocol_error(),
            _ => None,
        }
    }

    /// Whether a direct connection would have failed with an error here (refused,
    /// unreachable, reset, a broken handshake), so the client gets a reset rather than a
    /// clean end; not when the client itself stopped or the proxy is shutting down.
    pub(super) fn is_an_error_to_the_client(&self) -> bool {
        !matches!(
            self,
            Failure::ClientTimeout
                | Failure::ClientClosedEarly { .. }
                | Failure::ClientIo(_)
                | Failure::Shutdown
                | Failure::Answered(_)
        )
    }

    pub(super) fn reason(&self) -> FailureReason {
        match self {
            Failure::ClientTimeout => FailureReason::ClientTimeout,
            Failure::ClientClosedEarly { .. } => FailureReason::ClientClosed,
            Failure::ClientIo(_) => FailureReason::ClientError,
            Failure::Connect(_) => FailureReason::ConnectError,
            Failure::ConnectTimeout => FailureReason::ConnectTimeout,
            Failure::Handshake(HandshakeFailure { error, .. }) | Failure::PeerHandshake(error) => {
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
            Failure::Answered(failure) => failure.reason(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ClientTimeout => f.write_str(
                "client sent too few bytes to tell v1 from v2 within --first-bytes-timeout",
            ),
            Failure::ClientClosedEarly { received } => write!(
                f,
                "client closed after {received} bytes, before its transport could be told"
            ),
            Failure::ClientIo(e) => write!(f, "client connection failed: {e}"),
            Failure::Connect(e) => write!(f, "cannot connect to the destination: {e}"),
            Failure::ConnectTimeout => {
                f.write_str("cannot connect to the destination within --handshake-timeout")
            }
            Failure::Handshake(h) => write!(f, "{h}"),
            Failure::PeerHandshake(HandshakeError::Timeout) => {
                f.write_str("the peer's v2 handshake did not complete within --handshake-timeout")
            }
            Failure::PeerHandshake(HandshakeError::Closed) => {
                f.write_str("the peer closed the connection during the v2 handshake")
            }
            Failure::PeerHandshake(HandshakeError::Protocol(e)) => {
                write!(f, "the peer's v2 handshake failed: {e}")
            }
            Failure::PeerHandshake(HandshakeError::Io(e) | HandshakeError::Connect(e)) => {
                write!(
                    f,
                    "the peer's connection failed during the v2 handshake: {e}"
                )
            }
            Failure::PeerHandshake(HandshakeError::Entropy(e)) => {
                write!(f, "no randomness for the v2 handshake: {e}")
            }
            Failure::PeerHandshake(HandshakeError::Setup(e)) => {
                write!(f, "cannot start the v2 handshake: {e}")
            }
            Failure::Shutdown => f.write_str("proxy shutting down"),
            Failure::Answered(failure) => write!(f, "{failure} (told to the SOCKS5 client)"),
        }
    }
}
