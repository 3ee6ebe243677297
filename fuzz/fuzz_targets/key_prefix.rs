//! The key-prefix encoder (`--key-prefix`): any prefix is accepted or refused without a panic;
//! with an accepted one and a valid secret the encoder always succeeds, its encoding starts
//! with the prefix, never reads as a v1 `version` (a network's magic in bytes 0..4, the
//! command in 4..16), and decodes with libsecp256k1 to the key's x.
#![no_main]

use bip324_protocol::keys::EphemeralKey;
use bip324_protocol::{KeyPrefix, Network};
use libfuzzer_sys::fuzz_target;
use secp256k1::ellswift::ElligatorSwift;
use secp256k1::{PublicKey, SecretKey};

fuzz_target!(|input: (Vec<u8>, [u8; 32], [u8; 32])| {
    let (prefix, secret, aux_rand) = input;
    let Ok(prefix) = KeyPrefix::new(&prefix) else {
        return;
    };
    let magic = Network::Mainnet.magic();
    let key = match EphemeralKey::with_prefix(secret, aux_rand, &prefix, magic) {
        Ok(key) => key,
        Err(e) => {
            assert!(
                SecretKey::from_secret_bytes(secret).is_err(),
                "a valid secret and an accepted prefix failed: {e}"
            );
            return;
        }
    };
    let encoding = key.encoding();
    assert!(encoding.starts_with(prefix.as_bytes()));
    assert!(
        Network::ALL
            .iter()
            .all(|network| encoding[..4] != network.magic().0)
    );
    assert_ne!(&encoding[4..16], b"version\0\0\0\0\0");
    let decoded = PublicKey::from_ellswift(ElligatorSwift::from_array(encoding));
    assert_eq!(
        decoded.x_only_public_key().0.to_byte_array(),
        key.public_x()
    );
});
