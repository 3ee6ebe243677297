//! Message type decoding: no panic, and what decodes re-encodes to the same command.
#![no_main]

use bip324_protocol::message_type;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|contents: &[u8]| {
    if let Ok((command, type_len)) = message_type::decode(contents) {
        assert!(type_len <= contents.len());
        assert!(command.is_valid());
        let mut encoded = vec![0u8; message_type::encoded_len(&command)];
        message_type::encode(&command, &mut encoded);
        assert_eq!(message_type::decode(&encoded), Ok((command, encoded.len())));
    }
});
