//! BIP-324 (v2 encrypted transport) and v1 framing, without I/O.
//!
//! Everything here takes and returns bytes: no sockets, no clocks, no randomness of its own
//! (the caller passes entropy in). The daemon drives it; tests and fuzzers feed it directly.

pub mod aead;
mod buffers;
pub mod cipher;
pub mod client_hello;
pub mod decoder;
pub mod encoder;
pub mod handshake;
pub mod keys;
pub mod message_type;
pub mod network;
pub mod pipe;
pub mod splice;
pub mod v1;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use client_hello::{ClientHello, classify as classify_client_hello};
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use handshake::{Handshake, HandshakeEntropy, Progress, Session};
pub use network::{Magic, Network, NetworkLabel};
pub use pipe::{Event, Pipe};

use v1::Command;

/// Why a connection cannot go on. Every variant is the peer's fault (or a caller's bug for
/// `TooMuchGarbage` and `HandshakeFinished`), never a reason to panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("v1 message with network magic {got}, but this connection speaks {expected}")]
    V1WrongMagic { expected: Magic, got: Magic },
    #[error("v1 message with an invalid command field {:02x?}", .0.0)]
    V1InvalidCommand(Command),
    #[error("v1 '{}' message of {len} bytes exceeds the limit of 4000000", command.name())]
    V1PayloadTooLarge { command: Command, len: usize },
    #[error("v1 '{}' message has a bad checksum", command.name())]
    V1BadChecksum { command: Command },
    #[error("v2 packet of {0} bytes exceeds the limit of 4000013")]
    V2PacketTooLarge(usize),
    #[error("v2 packet failed authentication (wrong key, tampering, or not BIP-324 at all)")]
    V2AuthenticationFailed,
    #[error("v2 '{}' message of {len} bytes is larger than a v1 message may be", command.name())]
    V2PayloadTooLargeForV1 { command: Command, len: usize },
    #[error("no garbage terminator within 4111 bytes after the peer's key (not a BIP-324 peer)")]
    NoGarbageTerminator,
    #[error("the random secret key is not a valid secp256k1 key; draw another")]
    InvalidSecretKey,
    #[error("garbage longer than 4095 bytes")]
    TooMuchGarbage,
    #[error("handshake already finished")]
    HandshakeFinished,
}
