//! Arbitrary bytes from a v2 peer: the decoder must refuse them cleanly, never panic, and
//! never produce output (nothing random authenticates).
#![no_main]

use bip324_protocol::test_util::{cipher_pair, feed};
use bip324_protocol::{Decoder, Magic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let (_, opener) = cipher_pair();
    let mut decoder = Decoder::new(Magic([0xfa, 0xbf, 0xb5, 0xda]), opener, b"garbage".to_vec());
    let (output, _, _) = feed(&mut decoder, bytes, usize::from(chunk));
    assert!(output.is_empty());
});
