//! RFC 8439 ChaCha20-Poly1305, the AEAD inside every v2 packet, with two engines chosen by
//! size. RustCrypto's SIMD `chacha20` and `poly1305` move large packets (blocks, headers,
//! filters) at GB/s but spend 1-2 µs setting up each message; rust-bitcoin's portable
//! `chacha20-poly1305` has no such cost, so it takes the small packets (pings, invs,
//! transactions), where that setup would dominate the proxy's added latency.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use poly1305::universal_hash::{KeyInit, UniversalHash};

/// An implementation of the AEAD; both give identical results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// RFC 8439 through rust-bitcoin's portable crate: cheaper set-up for small packets.
    Portable,
    /// RustCrypto's `chacha20` and `poly1305`, with SIMD backends chosen at run time.
    Simd,
}

impl Engine {
    /// From this many bytes of text on, the SIMD engine is faster: the crossover measured by
    /// `cargo bench -p bip324-protocol -- aead/` on AVX2 and AVX-512 machines.
    pub const SIMD_FROM: usize = 1024;

    /// The faster engine for a text of this length.
    pub fn for_len(text_len: usize) -> Engine {
        if text_len < Self::SIMD_FROM {
            Engine::Portable
        } else {
            Engine::Simd
        }
    }

    /// Encrypts `text` in place and returns the tag over `aad` and the ciphertext.
    pub fn encrypt(self, key: &[u8; 32], nonce: [u8; 12], aad: &[u8], text: &mut [u8]) -> [u8; 16] {
        match self {
            Engine::Portable => {
                portable::keystream(key, nonce).apply_keystream(text);
                portable::tag(key, nonce, aad, text)
            }
            Engine::Simd => {
                let (mut stream, poly) = simd::start(key, nonce);
                stream.apply_keystream(text);
                simd::tag(poly, aad, text)
            }
        }
    }

    /// Checks the tag, then decrypts `text` in place; on a bad tag `text` is left as it was.
    #[must_use = "the text is only decrypted when this returns true"]
    pub fn decrypt(
        self,
        key: &[u8; 32],
        nonce: [u8; 12],
        aad: &[u8],
        text: &mut [u8],
        tag: &[u8; 16],
    ) -> bool {
        match self {
            Engine::Portable => {
                if !tags_equal(&portable::tag(key, nonce, aad, text), tag) {
                    return false;
                }
                portable::keystream(key, nonce).apply_keystream(text);
            }
            Engine::Simd => {
                let (mut stream, poly) = simd::start(key, nonce);
                if !tags_equal(&simd::tag(poly, aad, text), tag) {
                    return false;
                }
                stream.apply_keystream(text);
            }
        }
        true
    }
}

/// Seals with the engine that suits the length.
pub fn encrypt(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], text: &mut [u8]) -> [u8; 16] {
    Engine::for_len(text.len()).encrypt(key, nonce, aad, text)
}

/// Opens with the engine that suits the length.
#[must_use = "the text is only decrypted when this returns true"]
pub fn decrypt(
    key: &[u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    text: &mut [u8],
    tag: &[u8; 16],
) -> bool {
    Engine::for_len(text.len()).decrypt(key, nonce, aad, text, tag)
}

/// Compares in time independent of where the tags differ.
fn tags_equal(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// RFC 8439's MAC input after the data: the two lengths, little-endian.
fn lengths_block(aad_len: usize, text_len: usize) -> [u8; 16] {
    let mut lengths = [0u8; 16];
    lengths[..8].copy_from_slice(&(aad_len as u64).to_le_bytes());
    lengths[8..].copy_from_slice(&(text_len as u64).to_le_bytes());
    lengths
}

mod simd {
    use super::*;
    use chacha20::{ChaCha20, Key, Nonce};
    use poly1305::Poly1305;

    /// A ChaCha20 positioned at block 1 and the Poly1305 keyed from block 0.
    pub(super) fn start(key: &[u8; 32], nonce: [u8; 12]) -> (ChaCha20, Poly1305) {
        let mut stream = ChaCha20::new(&Key::from(*key), &Nonce::from(nonce));
        let mut block0 = [0u8; 64];
        stream.apply_keystream(&mut block0);
        let poly = Poly1305::new(block0[..32].try_into().expect("32 of 64 bytes"));
        zeroize::Zeroize::zeroize(&mut block0);
        (stream, poly)
    }

    pub(super) fn tag(mut poly: Poly1305, aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        poly.update_padded(aad);
        poly.update_padded(ciphertext);
        poly.update(&[lengths_block(aad.len(), ciphertext.len()).into()]);
        poly.finalize().into()
    }
}

mod portable {
    use super::*;
    use chacha20_poly1305::chacha20::ChaCha20;
    use chacha20_poly1305::poly1305::Poly1305;
    use chacha20_poly1305::{Key, Nonce};

    /// The keystream from block 1 on, which encrypts the text.
    pub(super) fn keystream(key: &[u8; 32], nonce: [u8; 12]) -> ChaCha20 {
        ChaCha20::new_from_block(Key::new(*key), Nonce::new(nonce), 1)
    }

    pub(super) fn tag(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        let block0 =
            ChaCha20::new_from_block(Key::new(*key), Nonce::new(nonce), 0).get_keystream(0);
        let mut poly = Poly1305::new(block0[..32].try_into().expect("32 of 64 bytes"));
        for data in [aad, ciphertext] {
            poly.input(data);
            poly.input(&[0u8; 16][..(16 - data.len() % 16) % 16]);
        }
        poly.input(&lengths_block(aad.len(), ciphertext.len()));
        poly.tag()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENGINES: [Engine; 2] = [Engine::Portable, Engine::Simd];

    /// RFC 8439 section 2.8.2, through each engine.
    #[test]
    fn both_engines_match_rfc8439() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let plaintext = *b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        for engine in ENGINES {
            let mut text = plaintext;
            let tag = engine.encrypt(&key, nonce, &aad, &mut text);
            assert_eq!(
                hex::encode(&text[..16]),
                "d31a8d34648e60db7b86afbc53ef7ec2",
                "{engine:?}"
            );
            assert_eq!(hex::encode(&text[text.len() - 2..]), "6116", "{engine:?}");
            assert_eq!(
                hex::encode(tag),
                "1ae10b594f09e26a7e902ecbd0600691",
                "{engine:?}"
            );
            assert!(engine.decrypt(&key, nonce, &aad, &mut text, &tag));
            assert_eq!(text, plaintext);
        }
    }

    /// Every length around block and crossover boundaries, with AAD of several lengths.
    #[test]
    fn engines_agree_and_reject_tampering() {
        let key = [0x5a; 32];
        let lengths = (0..300)
            .chain(Engine::SIMD_FROM - 70..Engine::SIMD_FROM + 70)
            .chain([4096, 65_537]);
        for len in lengths {
            let aad = vec![0xaa; len % 37];
            let nonce = [len as u8; 12];
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut sealed = [plaintext.clone(), plaintext.clone()];
            let tags = [0, 1].map(|i| ENGINES[i].encrypt(&key, nonce, &aad, &mut sealed[i]));
            assert_eq!(sealed[0], sealed[1], "ciphertext, {len} bytes");
            assert_eq!(tags[0], tags[1], "tag, {len} bytes");
            for engine in ENGINES {
                let mut text = sealed[0].clone();
                let mut bad_tag = tags[0];
                bad_tag[len % 16] ^= 1;
                assert!(!engine.decrypt(&key, nonce, &aad, &mut text, &bad_tag));
                assert_eq!(text, sealed[0], "left alone on failure");
                if len > 0 {
                    text[len / 2] ^= 0x80;
                    assert!(!engine.decrypt(&key, nonce, &aad, &mut text, &tags[0]));
                    text[len / 2] ^= 0x80;
                }
                assert!(engine.decrypt(&key, nonce, &aad, &mut text, &tags[0]));
                assert_eq!(text, plaintext);
            }
        }
    }
}
