//! BIP-324 (v2 encrypted transport) and v1 framing of the Bitcoin P2P protocol, without I/O.
//!
//! Everything here takes and returns bytes: no sockets, no clocks, no runtime and no
//! randomness of its own (the caller passes entropy in). A driver moves bytes between two
//! sockets through a [`Pipe`]; tests and fuzzers feed the same state machines directly.
//!
//! * [`Handshake`]: either [`Role`]'s side of the v2 handshake, until the peer's version
//!   packet authenticated, which yields a [`Session`]; its key's encoding may start with a
//!   chosen [`KeyPrefix`] (ElligatorSwift's inverse map, in `ellswift`).
//! * [`Encoder`] (v1 in, v2 out) and [`Decoder`] (v2 in, v1 out): the two translation
//!   directions, both [`Pipe`]s.
//! * [`classify_client_hello`]: tells a v1 client from a v2 one by its first bytes, and
//!   [`Splice`] passes a v2 client through untouched.
//! * [`classify_peer_hello`]: a responder's view of a connecting peer (v1 of our network, or
//!   v2), as Bitcoin Core decides; [`Rewrite`] adds `NODE_P2P_V2` to a v1-only node's
//!   messages (or a suffix to a client's user agent), and [`Chain`] puts it in front of an
//!   [`Encoder`].
//! * [`resume`]: any pipe, paused mid-stream ([`Pipe::pause`]), rebuilt in another process.
//! * [`v1`] framing and [`message_type`] ids, shared with logs and metrics.
//! * [`socks5`]: the SOCKS5 front end's negotiation, and the messages of its client side.
//!
//! Errors say whose fault they are: [`ProtocolError`] is always the peer's, [`UsageError`]
//! the caller's.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The ciphers and the key schedule are internal; the BIP's vectors, the fuzz targets, the
// benchmarks and the test peers reach them through the `test-util` feature.
#[cfg(feature = "test-util")]
pub mod aead;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub)]
mod aead;
mod buffers;
#[cfg(feature = "test-util")]
pub mod cipher;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub)]
mod cipher;
mod client_hello;
mod decoder;
#[cfg(feature = "test-util")]
pub mod ellswift;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub)]
mod ellswift;
mod encoder;
mod handshake;
mod key_prefix;
#[cfg(feature = "test-util")]
pub mod keys;
#[cfg(not(feature = "test-util"))]
#[allow(unreachable_pub)]
mod keys;
pub mod message_type;
mod network;
mod pipe;
pub mod resume;
mod rewrite;
mod role;
pub mod socks5;
mod splice;
pub mod v1;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use client_hello::{
    ClientHello, PREFIX_LEN as CLIENT_HELLO_LEN, PeerHello, classify as classify_client_hello,
    classify_peer as classify_peer_hello,
};
pub use decoder::Decoder;
pub use encoder::{Encoder, bucket_for};
pub use handshake::{Handshake, HandshakeEntropy, MAX_GARBAGE_LEN, Progress, Session};
pub use key_prefix::{KeyPrefix, KeyPrefixError, MAX_KEY_PREFIX_LEN};
pub use network::{Magic, Network, NetworkLabel};
pub use pipe::{Chain, Event, Pipe};
pub use resume::{ResumeError, Snapshot, resume};
pub use rewrite::{MAX_USER_AGENT_LEN, NODE_P2P_V2, Rewrite};
pub use role::Role;
pub use splice::Splice;

use v1::Command;

/// Why a connection cannot go on: always the peer's fault (it broke the protocol), never a
/// reason to panic. Close that connection and log why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A v1 message of another network than the one this connection started with.
    #[error("v1 message with network magic {got}, but this connection speaks {expected}")]
    V1WrongMagic {
        /// The connection's network.
        expected: Magic,
        /// The message's.
        got: Magic,
    },
    /// A v1 command field that is not printable ASCII padded with zeros.
    #[error("v1 message with an invalid command field {:02x?}", .0.0)]
    V1InvalidCommand(Command),
    /// A v1 payload above the 4,000,000 bytes Bitcoin Core accepts.
    #[error("v1 '{}' message of {len} bytes exceeds the limit of 4000000", command.name())]
    V1PayloadTooLarge {
        /// Its command.
        command: Command,
        /// Its payload length.
        len: usize,
    },
    /// A v1 message whose checksum does not match its payload.
    #[error("v1 '{}' message has a bad checksum", command.name())]
    V1BadChecksum {
        /// Its command.
        command: Command,
    },
    /// A v2 length field above the largest packet Bitcoin Core accepts.
    #[error("v2 packet of {0} bytes exceeds the limit of 4000013")]
    V2PacketTooLarge(usize),
    /// A v2 packet that does not authenticate.
    #[error("v2 packet failed authentication (wrong key, tampering, or not BIP-324 at all)")]
    V2AuthenticationFailed,
    /// A v2 message too large to be framed as v1.
    #[error("v2 '{}' message of {len} bytes is larger than a v1 message may be", command.name())]
    V2PayloadTooLargeForV1 {
        /// Its command.
        command: Command,
        /// Its payload length.
        len: usize,
    },
    /// The peer's garbage ran past its limit without a terminator.
    #[error("no garbage terminator within 4111 bytes after the peer's key (not a BIP-324 peer)")]
    NoGarbageTerminator,
}

impl ProtocolError {
    /// A stable name for logs and tests: the variant, in snake case.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            ProtocolError::V1WrongMagic { .. } => "v1_wrong_magic",
            ProtocolError::V1InvalidCommand(_) => "v1_invalid_command",
            ProtocolError::V1PayloadTooLarge { .. } => "v1_payload_too_large",
            ProtocolError::V1BadChecksum { .. } => "v1_bad_checksum",
            ProtocolError::V2PacketTooLarge(_) => "v2_packet_too_large",
            ProtocolError::V2AuthenticationFailed => "v2_authentication_failed",
            ProtocolError::V2PayloadTooLargeForV1 { .. } => "v2_payload_too_large_for_v1",
            ProtocolError::NoGarbageTerminator => "no_garbage_terminator",
        }
    }
}

/// A mistake of the caller's, never the peer's: what it passed in cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// Negligibly rare with real randomness: draw new entropy.
    #[error("the random secret key is not a valid secp256k1 key; draw another")]
    InvalidSecretKey,
    /// `HandshakeEntropy::garbage` is longer than [`MAX_GARBAGE_LEN`].
    #[error("garbage longer than 4095 bytes")]
    TooMuchGarbage,
    /// No encoding of the key starts with the prefix without starting with the network's
    /// magic too: the prefix begins with that magic. [`KeyPrefix::new`] refuses every known
    /// network's, so only a custom network's gets here, at once and for every handshake.
    #[error("no key encoding starts with the key prefix and not with the network magic")]
    NoEncodingWithPrefix,
}
