//! The physical limits the figures are read against, measured in the same run.

use std::time::Instant;

use crate::*;

/// Bytes per second of: ChaCha20, Poly1305 and one SHA-256 pass, one after the other over
/// the same 4 MB: the work each direction must do per byte of payload.
pub(crate) fn crypto_bound() -> f64 {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    use poly1305::universal_hash::{KeyInit, UniversalHash};
    use sha2::Digest;
    let mut data = vec![7u8; BLOCK];
    let rounds = 30;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut stream = chacha20::ChaCha20::new(&[1u8; 32].into(), &[0u8; 12].into());
        stream.apply_keystream(&mut data);
        let mut mac = poly1305::Poly1305::new(&[2u8; 32].into());
        mac.update_padded(&data);
        std::hint::black_box(mac.finalize());
        std::hint::black_box(sha2::Sha256::digest(&data));
    }
    (rounds * BLOCK) as f64 / started.elapsed().as_secs_f64()
}

pub(crate) fn secp256k1_handshakes_per_second() -> f64 {
    use secp256k1::ellswift::{ElligatorSwift, Party};
    let theirs = ElligatorSwift::from_seckey(
        secp256k1::SecretKey::from_secret_bytes([9; 32]).unwrap(),
        None,
    );
    let rounds = 2000;
    let started = Instant::now();
    for i in 0..rounds {
        let mut bytes = [0x42u8; 32];
        bytes[0] = i as u8;
        let secret = secp256k1::SecretKey::from_secret_bytes(bytes).unwrap();
        let ours = ElligatorSwift::from_seckey(secret, Some([i as u8; 32]));
        std::hint::black_box(ElligatorSwift::shared_secret(
            ours,
            theirs,
            secret,
            Party::Initiator,
        ));
    }
    rounds as f64 / started.elapsed().as_secs_f64()
}
