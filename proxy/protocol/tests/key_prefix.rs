//! Property test of the prefix encoder: for random keys and prefixes of 0 to 32 bytes, the
//! encoding starts with the prefix and libsecp256k1 decodes it to the key's X coordinate.
//! The run's seed is printed; `KEY_PREFIX_SEED=<64 hex>` replays it.

use bip324_protocol::keys::EphemeralKey;
use bip324_protocol::{Handshake, HandshakeEntropy, KeyPrefix, Network, Role};
use secp256k1::ellswift::ElligatorSwift;
use secp256k1::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};

const CASES: u32 = 330;

fn seed() -> [u8; 32] {
    if let Ok(hex_seed) = std::env::var("KEY_PREFIX_SEED") {
        let bytes = hex::decode(hex_seed.trim()).expect("KEY_PREFIX_SEED is hex");
        return bytes.try_into().expect("KEY_PREFIX_SEED is 32 bytes");
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("OS randomness");
    seed
}

/// 32 bytes named by the seed, the case and a label.
fn draw(seed: &[u8; 32], case: u32, label: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(seed)
        .chain_update(case.to_le_bytes())
        .chain_update(label)
        .finalize()
        .into()
}

fn decode_x(encoding: [u8; 64]) -> [u8; 32] {
    PublicKey::from_ellswift(ElligatorSwift::from_array(encoding))
        .x_only_public_key()
        .0
        .to_byte_array()
}

#[test]
fn prefixed_encodings_decode_to_the_key() {
    let seed = seed();
    println!("KEY_PREFIX_SEED={}", hex::encode(seed));
    let magic = Network::Mainnet.magic();
    let mut derived_keys = 0;
    for case in 0..CASES {
        let secret = draw(&seed, case, "secret");
        let aux_rand = draw(&seed, case, "aux_rand");
        let len = (case % 33) as usize;
        let Ok(prefix) = KeyPrefix::new(&draw(&seed, case, "prefix")[..len]) else {
            continue; // a magic, or `version` in bytes 4..16: 2^-32 per case at most
        };
        let ctx = format!("case {case}, prefix {prefix:?}");
        let Ok(key) = EphemeralKey::with_prefix(secret, aux_rand, &prefix, magic) else {
            continue; // not a valid secret key: 2^-128
        };
        let encoding = key.encoding();
        assert!(encoding.starts_with(prefix.as_bytes()), "{ctx}");
        assert_ne!(encoding[..4], magic.0, "{ctx}");
        assert_ne!(&encoding[4..16], b"version\0\0\0\0\0", "{ctx}");
        assert_eq!(decode_x(encoding), key.public_x(), "{ctx}");
        // Only a prefix that fixes all of u may need another key than the caller's.
        let callers_x = PublicKey::from_secret_key(&SecretKey::from_secret_bytes(secret).unwrap())
            .x_only_public_key()
            .0
            .to_byte_array();
        if key.public_x() != callers_x {
            assert_eq!(len, 32, "{ctx}: the caller's key was replaced");
            derived_keys += 1;
        }
    }
    println!("{CASES} keys and prefixes: all decoded to their key; {derived_keys} derived keys");
}

/// The bytes a handshake sends first start with the prefix, in both roles.
#[test]
fn handshakes_send_the_prefix_first() {
    let prefix = KeyPrefix::new(b"GET / HTTP/1.1\r\n").unwrap();
    for (i, role) in [Role::Initiator, Role::Responder].into_iter().enumerate() {
        let entropy = HandshakeEntropy {
            secret_key: [i as u8 + 1; 32],
            aux_rand: [9; 32],
            garbage: vec![0xaa; 10],
        };
        let (_, first) =
            Handshake::new_with_prefix(role, Network::Regtest.magic(), &prefix, entropy).unwrap();
        assert!(first.starts_with(b"GET / HTTP/1.1\r\n"), "{role:?}");
        assert_eq!(first.len(), 64 + 10);
    }
}
