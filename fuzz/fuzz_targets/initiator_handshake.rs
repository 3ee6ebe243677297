//! The initiator's handshake fed arbitrary responder bytes (in arbitrary chunks), then the
//! decoder it hands over: no panic, consistent progress, bounded garbage search.
#![no_main]

use bip324_protocol::{Handshake, HandshakeEntropy, Magic, Pipe, Progress, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let entropy = HandshakeEntropy { secret_key: [0x42; 32], aux_rand: [1; 32], garbage: vec![3; 10] };
    let (mut handshake, first) =
        Handshake::new(Role::Initiator, Magic([0xf9, 0xbe, 0xb4, 0xd9]), entropy).unwrap();
    assert_eq!(first.len(), 64 + 10);
    let mut sent = Vec::new();
    let mut fed = 0;
    while fed < bytes.len() {
        let piece = &bytes[fed..(fed + chunk).min(bytes.len())];
        let mut events = Vec::new();
        match handshake.receive(piece, &mut sent, &mut |e| events.push(e)) {
            Ok(Progress::NeedMore(next)) => {
                fed += piece.len();
                handshake = next;
            }
            Ok(Progress::Established { consumed, session }) => {
                assert!(consumed <= piece.len());
                // Our terminator and version packet went out once the key arrived, and
                // "established" means the peer's version packet authenticated.
                assert_eq!(sent.len(), 16 + 20);
                let mut decoder = session.decoder;
                assert!(decoder.version_received());
                let rest = &bytes[fed + consumed..];
                let _ = decoder.push(rest, &mut |e| events.push(e));
                return;
            }
            Err(_) => {
                // The garbage search is bounded: 64 key bytes, then at most 4095 + 16.
                assert!(fed + piece.len() >= 64 + 16);
                return;
            }
        }
    }
});
