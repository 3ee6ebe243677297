//! ElligatorSwift in Rust, for what libsecp256k1 keeps internal: BIP-324's inverse map
//! (`XSwiftECInv`) and an encoder built on it whose encodings start with a chosen prefix.
//! Secret keys, public keys, ECDH and decoding stay on libsecp256k1; this works on public
//! data only (see `inverse`).

mod encode;
mod field;
mod inverse;

pub(crate) use encode::encode_with_prefix;
#[cfg(any(test, feature = "test-util"))]
pub use inverse::xswiftec_inv;

/// Whether 32 big-endian bytes are 0 mod p (0 or p itself).
pub(crate) fn is_zero_mod_p(bytes: &[u8; 32]) -> bool {
    field::Fe::from_bytes_mod_p(bytes).is_zero()
}
