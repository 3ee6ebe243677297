//! Bytes from a node (inbound mode) or a client (`--user-agent-suffix`) through the one pipe
//! that edits v1 messages. Arbitrary bytes must be refused cleanly; valid frames must come out
//! as valid frames of the same commands, in order, each checksum right, and every message the
//! rewriter does not edit byte for byte as it went in.
#![no_main]

use bip324_protocol::test_util::{feed, v1_frame};
use bip324_protocol::v1::{self, HEADER_LEN};
use bip324_protocol::{Magic, Rewrite};
use libfuzzer_sys::fuzz_target;

const MAGIC: Magic = Magic([0xfa, 0xbf, 0xb5, 0xda]);
const COMMANDS: [&str; 5] = ["version", "addr", "addrv2", "ping", "block"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut pipe = if selector & 2 == 0 {
        let own = vec!["192.0.2.1:18444".parse().unwrap(), "[2001:db8::1]:8333".parse().unwrap()];
        Rewrite::advertise_v2(MAGIC, own)
    } else {
        Rewrite::user_agent_suffix(MAGIC, "bip324-proxy", "0.2.0")
    };
    let valid = selector & 1 == 1;
    let mut commands = Vec::new();
    let input = if valid {
        let mut frames = Vec::new();
        for (i, piece) in rest.chunks(61).enumerate() {
            let name = COMMANDS[(i + usize::from(selector >> 2)) % COMMANDS.len()];
            commands.push((name, piece.to_vec()));
            frames.extend(v1_frame(MAGIC, name, piece));
        }
        frames
    } else {
        rest.to_vec()
    };
    let (out, _, result) = feed(&mut pipe, &input, usize::from(selector >> 2).max(1));
    if !valid {
        return;
    }
    result.expect("valid frames pass");
    let mut at = 0;
    for (name, payload) in commands {
        let header: &[u8; HEADER_LEN] = out[at..at + HEADER_LEN].try_into().unwrap();
        let header = v1::Header::parse(header, MAGIC).expect("a valid header");
        assert_eq!(header.command.name(), name);
        let body = &out[at + HEADER_LEN..at + HEADER_LEN + header.payload_len];
        assert_eq!(v1::checksum(body), header.checksum, "{name}: checksum");
        if !matches!(name, "version" | "addr" | "addrv2") {
            assert_eq!(body, &payload[..], "{name}: untouched");
        }
        at += HEADER_LEN + header.payload_len;
    }
    assert_eq!(at, out.len());
});
