//! Bytes from a v1 client. Arbitrary ones must be refused cleanly; whatever the encoder emits
//! must decrypt, packet by packet, to the messages it reported.
#![no_main]

use bip324_protocol::cipher::{LENGTH_LEN, TAG_LEN};
use bip324_protocol::message_type;
use bip324_protocol::test_util::{cipher_pair, feed, v1_frame};
use bip324_protocol::{Encoder, Event, Magic};
use libfuzzer_sys::fuzz_target;

const MAGIC: Magic = Magic([0xfa, 0xbf, 0xb5, 0xda]);

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // Half the inputs are made of valid frames built from the bytes, so that the encoder's
    // translation is exercised, not only its refusals.
    let input = if selector & 1 == 0 {
        rest.to_vec()
    } else {
        let mut frames = Vec::new();
        for (i, piece) in rest.chunks(37).enumerate() {
            let name = ["ping", "version", "block", "e2e", "addrv2"][i % 5];
            frames.extend(v1_frame(MAGIC, name, piece));
        }
        frames
    };
    let (sealer, mut opener) = cipher_pair();
    let mut encoder = Encoder::new(MAGIC, sealer);
    let (wire, events, result) = feed(&mut encoder, &input, usize::from(selector >> 1));
    if selector & 1 == 1 {
        result.expect("valid frames translate");
    }
    let mut at = 0;
    for event in events {
        let Event::Message { command, payload_len } = event else { panic!("encoder events are messages") };
        let len = opener.open_length(wire[at..at + LENGTH_LEN].try_into().unwrap());
        let end = at + LENGTH_LEN + 1 + len + TAG_LEN;
        let mut body = wire[at + LENGTH_LEN..end].to_vec();
        assert!(!opener.open(&[], &mut body).unwrap(), "never a decoy");
        let (decoded, type_len) = message_type::decode(&body[1..1 + len]).unwrap();
        assert_eq!(decoded, command);
        assert_eq!(len - type_len, payload_len);
        at = end;
    }
    assert_eq!(at, wire.len());
});
