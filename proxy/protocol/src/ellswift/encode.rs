//! ElligatorSwift encodings that start with a chosen prefix.
//!
//! As BIP-324's `xelligatorswift`: `u` = prefix followed by random bytes, a random case, and
//! `t = XSwiftECInv(u, x, case)`, again until one succeeds (about 1 in 4 does). When the
//! prefix is all of `u`, only a new key brings new chances, so each further attempt derives
//! a new key. Drawing the case (and key) afresh for each attempt keeps `t` uniform among the
//! encodings that share `u`.
//!
//! The randomness comes from the caller's entropy, without I/O: SHA-256 of a tag, the secret
//! key, `aux_rand`, what is drawn and a counter, as libsecp256k1 stretches its own `aux_rand`.
//! A derived key is as secret as the caller's, and a `u` that goes on the wire reveals
//! nothing of either.

use secp256k1::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::field::Fe;
use super::inverse::inverse;
use crate::UsageError;
use crate::key_prefix::{KeyPrefix, MAX_KEY_PREFIX_LEN};
use crate::keys::ELLSWIFT_LEN;
use crate::network::Magic;

/// Attempts before giving up. Each succeeds with probability about 1/4, so a valid prefix
/// never runs out (3/4 to the 1024th is below 2^-420).
const MAX_ATTEMPTS: u32 = 1024;

/// Separates these hashes from any other use of the same entropy.
const TAG: &[u8] = b"bip324-redirect/ellswift-prefix-encoder";

/// A key and its encoding, which starts with the prefix and not with `magic`.
pub(crate) struct Encoded {
    pub(crate) secret: SecretKey,
    pub(crate) encoding: [u8; ELLSWIFT_LEN],
}

/// Encodes `secret`'s public key (or, with a 32-byte prefix, maybe a key derived from it)
/// starting with `prefix`.
pub(crate) fn encode_with_prefix(
    secret: SecretKey,
    aux_rand: &[u8; 32],
    prefix: &KeyPrefix,
    magic: Magic,
) -> Result<Encoded, UsageError> {
    let draws = Draws::new(&secret, aux_rand);
    let prefix = prefix.as_bytes();
    let mut secret = secret;
    let mut x = x_of(&secret);
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 && prefix.len() == MAX_KEY_PREFIX_LEN {
            let Ok(next) = SecretKey::from_secret_bytes(*draws.get(b'k', attempt)) else {
                continue;
            };
            secret.non_secure_erase();
            secret = next;
            x = x_of(&secret);
        }
        let mut u = *draws.get(b'u', attempt);
        u[..prefix.len()].copy_from_slice(prefix);
        let case = draws.get(b'c', attempt)[0] & 7;
        let Some(t) = inverse(Fe::from_bytes_mod_p(&u), x, case) else {
            continue;
        };
        let mut encoding = [0u8; ELLSWIFT_LEN];
        encoding[..32].copy_from_slice(&u);
        encoding[32..].copy_from_slice(&t.to_bytes());
        // Taken for v1 by a responder: draw again (only a prefix under 4 bytes gets here).
        if encoding[..4] == magic.0 {
            continue;
        }
        return Ok(Encoded { secret, encoding });
    }
    secret.non_secure_erase();
    Err(UsageError::NoEncodingWithPrefix)
}

/// The X coordinate of `secret`'s public key, computed by libsecp256k1 in constant time.
fn x_of(secret: &SecretKey) -> Fe {
    let x = PublicKey::from_secret_key(secret)
        .x_only_public_key()
        .0
        .to_byte_array();
    // Below p, as every X coordinate is.
    Fe::from_bytes_mod_p(&x)
}

/// A stream of 32-byte draws, each named by a label and a counter.
struct Draws(Sha256);

impl Draws {
    fn new(secret: &SecretKey, aux_rand: &[u8; 32]) -> Draws {
        let secret = Zeroizing::new(secret.to_secret_bytes());
        let mut hash = Sha256::new_with_prefix(Sha256::digest(TAG));
        hash.update(&secret[..]);
        hash.update(aux_rand);
        Draws(hash)
    }

    fn get(&self, label: u8, counter: u32) -> Zeroizing<[u8; 32]> {
        let mut hash = self.0.clone();
        hash.update([label]);
        hash.update(counter.to_le_bytes());
        Zeroizing::new(hash.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::ellswift::ElligatorSwift;

    fn decode_x(encoding: [u8; 64]) -> [u8; 32] {
        PublicKey::from_ellswift(ElligatorSwift::from_array(encoding))
            .x_only_public_key()
            .0
            .to_byte_array()
    }

    #[test]
    fn the_encoding_starts_with_the_prefix_and_decodes_to_the_key() {
        let magic = crate::Network::Mainnet.magic();
        for len in [0, 1, 16, 31, 32] {
            let prefix = KeyPrefix::new(&[0x47; 32][..len]).expect("valid");
            let secret = SecretKey::from_secret_bytes([7; 32]).expect("valid");
            let encoded = encode_with_prefix(secret, &[9; 32], &prefix, magic).expect("found");
            assert!(encoded.encoding.starts_with(prefix.as_bytes()));
            let x = PublicKey::from_secret_key(&encoded.secret)
                .x_only_public_key()
                .0
                .to_byte_array();
            assert_eq!(decode_x(encoded.encoding), x, "{len} bytes");
        }
    }

    /// The same entropy gives the same encoding; other `aux_rand`, another one.
    #[test]
    fn draws_are_deterministic_in_the_entropy() {
        let magic = crate::Network::Mainnet.magic();
        let prefix = KeyPrefix::new(b"GET ").expect("valid");
        let secret = SecretKey::from_secret_bytes([7; 32]).expect("valid");
        let encode = |aux| encode_with_prefix(secret, &aux, &prefix, magic).map(|e| e.encoding);
        assert_eq!(encode([1; 32]), encode([1; 32]));
        assert_ne!(encode([1; 32]), encode([2; 32]));
    }

    /// A prefix under 4 bytes that begins the magic is completed now and then: those
    /// encodings are drawn again.
    #[test]
    fn no_encoding_starts_with_the_magic() {
        let magic = crate::Network::Mainnet.magic();
        let prefix = KeyPrefix::new(&magic.0[..3]).expect("3 bytes are allowed");
        let secret = SecretKey::from_secret_bytes([7; 32]).expect("valid");
        let mut completed = 0;
        for i in 0..8000u32 {
            let mut aux = [0u8; 32];
            aux[..4].copy_from_slice(&i.to_le_bytes());
            let encoded = encode_with_prefix(secret, &aux, &prefix, magic).expect("found");
            assert_ne!(encoded.encoding[..4], magic.0, "aux {i}");
            // Would the first attempt have succeeded with the magic complete?
            let draws = Draws::new(&secret, &aux);
            let mut u = *draws.get(b'u', 0);
            u[..3].copy_from_slice(prefix.as_bytes());
            let case = draws.get(b'c', 0)[0] & 7;
            let solved = inverse(Fe::from_bytes_mod_p(&u), x_of(&secret), case).is_some();
            completed += usize::from(solved && u[3] == magic.0[3]);
        }
        assert!(completed > 0, "the test never met a completed magic");
    }

    /// A magic the prefix starts with can never be avoided: the encoder gives up, bounded.
    #[test]
    fn an_unavoidable_magic_ends_in_an_error() {
        let prefix = KeyPrefix::new(b"GET / HTTP/1.1\r\n").expect("valid");
        let magic = Magic(*b"GET ");
        let secret = SecretKey::from_secret_bytes([7; 32]).expect("valid");
        assert!(matches!(
            encode_with_prefix(secret, &[1; 32], &prefix, magic),
            Err(UsageError::NoEncodingWithPrefix)
        ));
    }
}
