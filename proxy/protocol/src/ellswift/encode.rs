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
//! nothing of either. The hash states and every draw are wiped when dropped.
//!
//! Encodings a v2 responder would take for v1 are drawn again: a prefix can be completed,
//! by the random bytes after it, into a network's magic (bytes 0..4) or into the `version`
//! command (bytes 4..16), which `KeyPrefix::new` refuses only when the prefix holds it whole.

use secp256k1::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::field::Fe;
use super::inverse::inverse;
use crate::UsageError;
use crate::key_prefix::{KeyPrefix, MAX_KEY_PREFIX_LEN, V1_VERSION_COMMAND};
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
    let mut secret = secret;
    let prefix = prefix.as_bytes();
    // Every encoding would start with the magic: no attempt can succeed. Only a custom
    // network's magic gets past `KeyPrefix::new`.
    if prefix.len() >= magic.0.len() && prefix[..magic.0.len()] == magic.0 {
        secret.non_secure_erase();
        return Err(UsageError::NoEncodingWithPrefix);
    }
    let draws = Draws::new(&secret, aux_rand);
    let mut x = x_of(&secret);
    for attempt in 0..MAX_ATTEMPTS {
        #[cfg(test)]
        tests::ATTEMPTS.with(|n| n.set(n.get() + 1));
        if attempt > 0 && prefix.len() == MAX_KEY_PREFIX_LEN {
            let bytes = draws.get(b'k', attempt);
            // secp256k1 takes a key's bytes only by value: that copy becomes the key, which
            // is erased as the caller's is.
            let Ok(next) = SecretKey::from_secret_bytes(*bytes) else {
                continue;
            };
            secret.non_secure_erase();
            secret = next;
            x = x_of(&secret);
        }
        let mut u = draws.get(b'u', attempt);
        u[..prefix.len()].copy_from_slice(prefix);
        let case = draws.get(b'c', attempt)[0] & 7;
        let Some(t) = inverse(u_as_decoded(&u), x, case) else {
            continue;
        };
        let mut encoding = [0u8; ELLSWIFT_LEN];
        encoding[..32].copy_from_slice(&u[..]);
        encoding[32..].copy_from_slice(&t.to_bytes());
        // Taken for v1 by a responder: draw again. The magic can only be completed after a
        // prefix under 4 bytes; bytes 4..16 as `version` and 5 NULs, which make Bitcoin
        // Core's responder disconnect whatever bytes 0..4 are, after one under 16 bytes.
        if encoding[..4] == magic.0 || encoding[4..16] == V1_VERSION_COMMAND[..] {
            continue;
        }
        return Ok(Encoded { secret, encoding });
    }
    secret.non_secure_erase();
    Err(UsageError::NoEncodingWithPrefix)
}

/// `u` as decoding reads it: mod p, and 0 as 1 (so a prefix of 32 bytes that are 0 mod p
/// still encodes).
fn u_as_decoded(bytes: &[u8; 32]) -> Fe {
    let u = Fe::from_bytes_mod_p(bytes);
    if u.is_zero() { Fe::ONE } else { u }
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

/// A stream of 32-byte draws, each named by a label and a counter. The hash state holds the
/// secret key: sha2's `zeroize` feature wipes it (and every clone) on drop.
struct Draws(Sha256);

const _: () = {
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}
    let _ = wiped_on_drop::<Sha256>;
};

impl Draws {
    fn new(secret: &SecretKey, aux_rand: &[u8; 32]) -> Draws {
        let mut hash = Sha256::new_with_prefix(Sha256::digest(TAG));
        hash.update(secret.as_secret_bytes());
        hash.update(aux_rand);
        Draws(hash)
    }

    fn get(&self, label: u8, counter: u32) -> Zeroizing<[u8; 32]> {
        let mut hash = self.0.clone();
        hash.update([label]);
        hash.update(counter.to_le_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        hash.finalize_into((&mut *out).into());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use secp256k1::ellswift::ElligatorSwift;

    thread_local! {
        /// Attempts the encoder made on this thread.
        pub(super) static ATTEMPTS: Cell<u32> = const { Cell::new(0) };
    }

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

    /// Whether the encoder's first attempt solves, and its first random byte after `prefix`
    /// is `next`: the encoding that a check must then refuse.
    fn first_draw_completes(
        secret: SecretKey,
        aux: &[u8; 32],
        prefix: &KeyPrefix,
        next: u8,
    ) -> bool {
        let draws = Draws::new(&secret, aux);
        let mut u = draws.get(b'u', 0);
        let len = prefix.as_bytes().len();
        u[..len].copy_from_slice(prefix.as_bytes());
        let case = draws.get(b'c', 0)[0] & 7;
        inverse(u_as_decoded(&u), x_of(&secret), case).is_some() && u[len] == next
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
            completed += usize::from(first_draw_completes(secret, &aux, &prefix, magic.0[3]));
        }
        assert!(completed > 0, "the test never met a completed magic");
    }

    /// A custom network's magic that the prefix starts with can never be avoided: the encoder
    /// says so at once, without spending its attempts.
    #[test]
    fn an_unavoidable_magic_ends_in_an_error_at_once() {
        let magic = Magic(*b"GET ");
        let secret = SecretKey::from_secret_bytes([7; 32]).expect("valid");
        for bytes in [
            &b"GET "[..],
            b"GET / HTTP/1.1\r\n",
            &[b"GET ", &[0x41; 28][..]].concat(),
        ] {
            let prefix = KeyPrefix::new(bytes).expect("valid");
            ATTEMPTS.with(|n| n.set(0));
            assert!(matches!(
                encode_with_prefix(secret, &[1; 32], &prefix, magic),
                Err(UsageError::NoEncodingWithPrefix)
            ));
            assert_eq!(ATTEMPTS.with(Cell::get), 0, "{prefix:?}");
        }
    }

    /// Bitcoin Core's responder drops a peer whose bytes 4..16 are `version` and 5 NULs,
    /// whatever bytes 0..4 are. A prefix that leaves only the 16th byte random gets it
    /// completed now and then: those encodings are drawn again.
    #[test]
    fn no_encoding_reads_as_version_after_any_magic() {
        let magic = crate::Network::Mainnet.magic();
        let prefix = KeyPrefix::new(b"GET version\0\0\0\0").expect("15 bytes are allowed");
        let secret = SecretKey::from_secret_bytes([7; 32]).expect("valid");
        let mut completed = 0;
        for i in 0..8000u32 {
            let mut aux = [0u8; 32];
            aux[..4].copy_from_slice(&i.to_le_bytes());
            let encoded = encode_with_prefix(secret, &aux, &prefix, magic).expect("found");
            assert_ne!(&encoded.encoding[4..16], V1_VERSION_COMMAND, "aux {i}");
            // Would the first attempt have succeeded with the command complete?
            completed += usize::from(first_draw_completes(secret, &aux, &prefix, 0));
        }
        assert!(completed > 0, "the test never met a completed command");
    }

    /// A `u` above p (here 0xff..ff): decoding reduces it mod p, and so does the encoder.
    #[test]
    fn a_u_above_p_decodes_to_the_key() {
        round_trips_with_the_whole_of_u(&[0xff; 32]);
    }

    /// A `u` that is 0 mod p (0 or p itself): decoding reads it as 1, and so does the encoder.
    #[test]
    fn a_u_of_zero_mod_p_decodes_to_the_key() {
        round_trips_with_the_whole_of_u(&[0; 32]);
        let mut p = [0xff; 32];
        p[27..].copy_from_slice(&[0xfe, 0xff, 0xff, 0xfc, 0x2f]);
        round_trips_with_the_whole_of_u(&p);
    }

    /// With `u` as the prefix, several keys' encodings decode (by libsecp256k1) to their x.
    fn round_trips_with_the_whole_of_u(u: &[u8; 32]) {
        let magic = crate::Network::Mainnet.magic();
        let prefix = KeyPrefix::new(u).expect("accepted");
        for seed in 1..=8u8 {
            let secret = SecretKey::from_secret_bytes([seed; 32]).expect("valid");
            let encoded = encode_with_prefix(secret, &[seed; 32], &prefix, magic).expect("found");
            assert_eq!(encoded.encoding[..32], u[..], "seed {seed}");
            let x = PublicKey::from_secret_key(&encoded.secret)
                .x_only_public_key()
                .0
                .to_byte_array();
            assert_eq!(decode_x(encoded.encoding), x, "seed {seed}");
        }
    }
}
