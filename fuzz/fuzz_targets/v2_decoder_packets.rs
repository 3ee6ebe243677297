//! Authentic packets with arbitrary contents, decoys anywhere, read in arbitrary chunks, maybe
//! tampered with: the decoder outputs exactly the genuine messages that have a v1 command,
//! as v1 frames, and refuses tampering.
#![no_main]

use arbitrary::Arbitrary;
use bip324_protocol::message_type;
use bip324_protocol::test_util::{cipher_pair, feed, seal};
use bip324_protocol::v1;
use bip324_protocol::{Decoder, Magic};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    packets: Vec<(bool, Vec<u8>)>,
    chunk: u16,
    tamper: Option<(u16, u8)>,
}

const MAGIC: Magic = Magic([0xfa, 0xbf, 0xb5, 0xda]);

fuzz_target!(|input: Input| {
    let (mut sealer, opener) = cipher_pair();
    // The version packet, carrying the garbage as AAD.
    let mut wire = seal(&mut sealer, b"", b"garbage", false);
    let mut expected = Vec::new();
    for (decoy, contents) in &input.packets {
        wire.extend(seal(&mut sealer, contents, b"", *decoy));
        if !decoy {
            if let Ok((command, type_len)) = message_type::decode(contents) {
                let payload = &contents[type_len..];
                let mut header = [0u8; v1::HEADER_LEN];
                v1::Header::write(&mut header, MAGIC, &command, payload);
                expected.extend_from_slice(&header);
                expected.extend_from_slice(payload);
            }
        }
    }
    let tampered = match input.tamper {
        Some((at, bit)) if !wire.is_empty() && bit != 0 => {
            let at = usize::from(at) % wire.len();
            wire[at] ^= bit;
            true
        }
        _ => false,
    };
    let mut decoder = Decoder::new(MAGIC, opener, b"garbage".to_vec());
    let (output, _, result) = feed(&mut decoder, &wire, usize::from(input.chunk));
    use bip324_protocol::Pipe;
    if tampered {
        // Only authentic messages pass: what came out is a prefix of the truth, and all of it
        // unless the damage was refused or left the decoder waiting for a longer packet.
        assert!(expected.starts_with(&output));
        assert!(result.is_err() || decoder.partial_input() > 0 || output == expected);
    } else {
        result.expect("authentic packets decode");
        assert!(output == expected);
        assert!(decoder.version_received());
    }
});
