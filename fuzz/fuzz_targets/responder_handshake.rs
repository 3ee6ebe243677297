//! The responder's handshake, as inbound mode runs it for every stranger, fed arbitrary bytes
//! in arbitrary chunks: either raw bytes, or an honest initiator's bytes with one byte
//! possibly flipped and arbitrary bytes behind. No panic, the garbage search stays bounded,
//! and an untouched honest initiator always establishes.
#![no_main]

use bip324_protocol::{Handshake, HandshakeEntropy, Magic, Pipe, Progress, Role};
use libfuzzer_sys::fuzz_target;

const MAGIC: Magic = Magic([0xf9, 0xbe, 0xb4, 0xd9]);

fn entropy(key: u8, garbage: usize) -> HandshakeEntropy {
    HandshakeEntropy {
        secret_key: [key; 32],
        aux_rand: [key ^ 0x5a; 32],
        garbage: vec![key; garbage],
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, mode, flip_hi, flip_lo, bytes @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let (mut responder, first) = Handshake::new(Role::Responder, MAGIC, entropy(0x42, 10)).unwrap();
    assert_eq!(first.len(), 64 + 10);
    let honest = mode & 1 == 1;
    let flip = mode & 2 == 2;
    // How many bytes are an honest initiator's, untouched: those alone must establish.
    let mut untouched = 0;
    let input = if honest {
        // An honest initiator with up to 4095 bytes of garbage, answered with our key.
        let garbage = usize::from(mode >> 2) * 64;
        let (initiator, mut input) =
            Handshake::new(Role::Initiator, MAGIC, entropy(0x17, garbage)).unwrap();
        let mut then = Vec::new();
        match initiator.receive(&first, &mut then, &mut |_| {}) {
            Ok(Progress::NeedMore(_)) => {}
            _ => panic!("an initiator given only our key and garbage waits for more"),
        }
        input.extend_from_slice(&then);
        if flip {
            let at = usize::from(u16::from_be_bytes([*flip_hi, *flip_lo])) % input.len();
            input[at] ^= 0x01;
        }
        if !flip {
            untouched = input.len();
        }
        input.extend_from_slice(bytes);
        input
    } else {
        bytes.to_vec()
    };
    let mut sent = Vec::new();
    let mut fed = 0;
    while fed < input.len() {
        let piece = &input[fed..(fed + chunk).min(input.len())];
        let mut events = Vec::new();
        match responder.receive(piece, &mut sent, &mut |e| events.push(e)) {
            Ok(Progress::NeedMore(next)) => {
                fed += piece.len();
                responder = next;
                // Our terminator and version packet go out once the key is in, not before.
                assert_eq!(sent.is_empty(), fed < 64);
            }
            Ok(Progress::Established { consumed, session }) => {
                assert!(consumed <= piece.len());
                assert_eq!(sent.len(), 16 + 20);
                let mut decoder = session.decoder;
                assert!(decoder.version_received());
                let _ = decoder.push(&input[fed + consumed..], &mut |e| events.push(e));
                return;
            }
            Err(_) => {
                // Either a bad packet after the terminator, or no terminator within
                // 64 + 4095 + 16 bytes: never later than that without a terminator.
                assert!(fed + piece.len() >= 64 + 16);
                // Bytes behind the version packet may be refused in the same call (the decoder
                // takes them), never the honest ones alone.
                assert!(
                    fed + piece.len() > untouched,
                    "an untouched honest initiator is refused"
                );
                return;
            }
        }
    }
    // Everything fed and not established: an honest initiator always establishes.
    assert_eq!(
        untouched, 0,
        "an untouched honest initiator never established"
    );
});
