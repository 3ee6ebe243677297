//! `--user-agent-suffix`, the client's `version`: BIP-14 style `/bip324-proxy:VERSION/` is
//! appended to its user agent, within Bitcoin Core's 256-byte limit.

use crate::v1::{Command, PayloadReader, write_compact_size};

/// Bitcoin Core's limit on a user agent (`MAX_SUBVERSION_LENGTH`).
pub const MAX_USER_AGENT_LEN: usize = 256;

/// Where a user agent starts in a `version` payload: after version, services, time, the two
/// addresses and the nonce.
pub(super) const USER_AGENT_AT: usize = 4 + 8 + 8 + 26 + 26 + 8;

/// The message this edit reads: the client's `version`.
pub(super) fn edits(command: &Command) -> bool {
    command.name() == "version"
}

/// `version` with `suffix` joined to its user agent; `None` (unchanged) when the payload
/// cannot be read or the result would pass Bitcoin Core's limit.
pub(super) fn with_suffix(payload: &[u8], suffix: &str) -> Option<Vec<u8>> {
    let mut reader = PayloadReader(payload.get(USER_AGENT_AT..)?);
    let len = usize::try_from(reader.compact_size()?).ok()?;
    let agent = reader.take(len)?;
    // One slash between segments: `/Satoshi:27.0/` + `bip324-proxy:0.2.0/`.
    let joiner = if agent.ends_with(b"/") { "" } else { "/" };
    let new_len = agent.len() + joiner.len() + suffix.len();
    if new_len > MAX_USER_AGENT_LEN {
        return None;
    }
    let mut edited = payload[..USER_AGENT_AT].to_vec();
    write_compact_size(&mut edited, new_len as u64);
    edited.extend_from_slice(agent);
    edited.extend_from_slice(joiner.as_bytes());
    edited.extend_from_slice(suffix.as_bytes());
    edited.extend_from_slice(reader.rest());
    Some(edited)
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::*;
    use crate::rewrite::Rewrite;
    use crate::rewrite::tests::{MAGIC, addr_entry, version_payload};
    use crate::test_util::{feed, v1_frame};
    use crate::v1::HEADER_LEN;

    /// A `version` as a client sends it, with `agent` as its user agent.
    fn client_version(agent: &[u8]) -> Vec<u8> {
        let mut payload = version_payload(0)[..USER_AGENT_AT].to_vec();
        write_compact_size(&mut payload, agent.len() as u64);
        payload.extend_from_slice(agent);
        payload.extend_from_slice(&850_000i32.to_le_bytes());
        payload.push(1);
        payload
    }

    fn suffixed(agent: &[u8]) -> Vec<u8> {
        let mut pipe = Rewrite::user_agent_suffix(MAGIC, "bip324-proxy", "0.2.0");
        let (out, _, result) = feed(
            &mut pipe,
            &v1_frame(MAGIC, "version", &client_version(agent)),
            11,
        );
        result.unwrap();
        out[HEADER_LEN..].to_vec()
    }

    #[test]
    fn the_user_agent_gains_the_suffix_and_nothing_else_changes() {
        for (agent, expected) in [
            (
                &b"/Satoshi:25.1.0/"[..],
                &b"/Satoshi:25.1.0/bip324-proxy:0.2.0/"[..],
            ),
            (
                b"/btcwire:0.5.0/btcd:0.24.2/",
                b"/btcwire:0.5.0/btcd:0.24.2/bip324-proxy:0.2.0/",
            ),
            (b"/bcoin:2.2.0/", b"/bcoin:2.2.0/bip324-proxy:0.2.0/"),
            (b"", b"/bip324-proxy:0.2.0/"),
            (b"no-slashes", b"no-slashes/bip324-proxy:0.2.0/"),
        ] {
            let out = suffixed(agent);
            assert_eq!(
                out,
                client_version(expected),
                "{}",
                String::from_utf8_lossy(agent)
            );
        }
    }

    #[test]
    fn the_suffix_stays_within_the_256_byte_limit() {
        let suffix_len = "bip324-proxy:0.2.0/".len();
        // Exactly at the limit, with a 3-byte length prefix (253 and more).
        let at_limit = [
            vec![b'/'],
            vec![b'a'; MAX_USER_AGENT_LEN - suffix_len - 2],
            vec![b'/'],
        ]
        .concat();
        let out = suffixed(&at_limit);
        assert_eq!(out[USER_AGENT_AT], 0xfd, "a 3-byte length");
        assert_eq!(
            u16::from_le_bytes([out[USER_AGENT_AT + 1], out[USER_AGENT_AT + 2]]),
            256
        );
        // One byte more: left as it was.
        let over = [at_limit.clone(), vec![b'b']].concat();
        assert_eq!(suffixed(&over), client_version(&over));
    }

    #[test]
    fn only_the_version_is_touched_in_the_clients_direction() {
        let mut pipe = Rewrite::user_agent_suffix(MAGIC, "bip324-proxy", "0.2.0");
        let ip = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        let mut addr = vec![1];
        addr.extend(addr_entry(ip, 18444, 1));
        let input = v1_frame(MAGIC, "addr", &addr);
        let (out, _, result) = feed(&mut pipe, &input, 5);
        result.unwrap();
        assert_eq!(out, input);
    }
}
