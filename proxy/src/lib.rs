//! `bip324-proxy`: gives unmodified v1 Bitcoin P2P clients BIP-324 encrypted transport.
//!
//! * [`protocol`]: BIP-324 and v1 framing as sans-IO state machines.
//! * [`daemon`]: the tokio proxy that accepts redirected connections, finds their original
//!   destination with `SO_ORIGINAL_DST`, and drives the protocol between the two sockets.

pub mod daemon;
pub mod protocol;
