//! `bip324-proxy`: gives unmodified v1 Bitcoin P2P clients BIP-324 encrypted transport.
//!
//! The protocol itself (BIP-324 and v1 framing, sans-IO) is the `bip324-protocol` crate;
//! [`daemon`] is the tokio proxy that accepts redirected connections, finds their original
//! destination with `SO_ORIGINAL_DST`, and drives the protocol between the two sockets.

pub mod daemon;
