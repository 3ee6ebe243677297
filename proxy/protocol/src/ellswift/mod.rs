//! ElligatorSwift in Rust, for what libsecp256k1 keeps internal: BIP-324's inverse map
//! (`XSwiftECInv`) and an encoder built on it whose encodings start with a chosen prefix.
//! Secret keys, public keys, ECDH and decoding stay on libsecp256k1. The inverse map sees
//! public data only (see `inverse`); the encoder hashes the secret key for its randomness and
//! wipes what it derives (see `encode`).

mod encode;
mod field;
mod inverse;

pub(crate) use encode::encode_with_prefix;
#[cfg(any(test, feature = "test-util"))]
pub use inverse::xswiftec_inv;
