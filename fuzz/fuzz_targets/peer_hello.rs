//! Inbound mode's first-bytes rule (`classify_peer_hello`), fed arbitrary bytes for an
//! arbitrary magic in arbitrary chunks: no panic; it decides by 16 bytes at the latest; once
//! decided, more bytes never change the answer; V1 exactly when the bytes are the magic and
//! `version`.
#![no_main]

use bip324_protocol::{CLIENT_HELLO_LEN, Magic, PeerHello, classify_peer_hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [m0, m1, m2, m3, chunk, bytes @ ..] = data else {
        return;
    };
    let magic = Magic([*m0, *m1, *m2, *m3]);
    let chunk = usize::from(*chunk).max(1);
    let mut v1 = magic.0.to_vec();
    v1.extend_from_slice(b"version\0\0\0\0\0");
    assert_eq!(v1.len(), CLIENT_HELLO_LEN);
    let mut decided = None;
    let mut seen = 0;
    while seen < bytes.len() {
        seen = (seen + chunk).min(bytes.len());
        let hello = classify_peer_hello(&bytes[..seen], magic);
        match (decided, hello) {
            (None, PeerHello::NeedMore) => {
                assert!(seen < CLIENT_HELLO_LEN, "undecided after {seen} bytes");
                assert_eq!(bytes[..seen], v1[..seen], "undecided on a mismatch");
            }
            (None, hello) => decided = Some(hello),
            (Some(before), now) => assert_eq!(before, now, "changed its mind"),
        }
    }
    let n = bytes.len().min(CLIENT_HELLO_LEN);
    let expected = if bytes[..n] != v1[..n] {
        PeerHello::V2
    } else if n == CLIENT_HELLO_LEN {
        PeerHello::V1
    } else {
        PeerHello::NeedMore
    };
    assert_eq!(classify_peer_hello(bytes, magic), expected);
    if let Some(decided) = decided {
        assert_eq!(decided, expected);
    }
});
