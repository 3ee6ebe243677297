//! Inbound mode, the node's messages: the node speaks v1 only, but with the proxy in front it
//! accepts v2, and peers such as Bitcoin Core open v2 only to addresses whose services include
//! `NODE_P2P_V2`. So the node's `version` gains that bit, and so do the entries of its `addr`
//! and `addrv2` messages that advertise the node itself: the address and port the peer
//! reached it on, and the public addresses the operator names (behind a port-forwarding
//! router the node advertises one the proxy never sees).

use core::net::{IpAddr, SocketAddr};

use crate::v1::{self, Command, PayloadReader, write_compact_size};

/// BIP-324's service bit: "this node accepts v2 connections".
pub const NODE_P2P_V2: u64 = 1 << 11;

/// `addrv2` network ids (BIP-155) of the two address families a proxy can be reached on.
const BIP155_IPV4: u8 = 1;
const BIP155_IPV6: u8 = 2;

/// The messages this edit reads.
pub(super) fn edits(command: &Command) -> bool {
    matches!(command.name(), "version" | "addr" | "addrv2")
}

/// The node's payload with its self-advertisements marked, or `None` when it stays as it is
/// (nothing to edit, or a payload this code cannot read: the peer judges it as sent).
pub(super) fn apply(command: &Command, payload: &[u8], own: &[SocketAddr]) -> Option<Vec<u8>> {
    match command.name() {
        "version" => {
            let services = payload.get(4..12)?;
            let services = u64::from_le_bytes(services.try_into().ok()?) | NODE_P2P_V2;
            let mut edited = payload.to_vec();
            edited[4..12].copy_from_slice(&services.to_le_bytes());
            Some(edited)
        }
        "addr" => edit_addr(payload, own),
        "addrv2" => edit_addrv2(payload, own),
        _ => None,
    }
}

/// `addr`: count, then entries of time(4) services(8) ip(16, v4-mapped) port(2, big endian).
fn edit_addr(payload: &[u8], own: &[SocketAddr]) -> Option<Vec<u8>> {
    const ENTRY: usize = 30;
    let mut reader = PayloadReader(payload);
    let count = reader.compact_size()?;
    let entries = reader.rest();
    if entries.len() != usize::try_from(count).ok()?.checked_mul(ENTRY)? {
        return None;
    }
    let names: Vec<([u8; 16], [u8; 2])> = own
        .iter()
        .map(|addr| {
            let ip = match addr.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            (ip, addr.port().to_be_bytes())
        })
        .collect();
    let start = payload.len() - entries.len();
    let mut edited = payload.to_vec();
    for entry in edited[start..].chunks_exact_mut(ENTRY) {
        if names
            .iter()
            .any(|(ip, port)| entry[12..28] == ip[..] && entry[28..30] == port[..])
        {
            let services = u64::from_le_bytes(entry[4..12].try_into().ok()?) | NODE_P2P_V2;
            entry[4..12].copy_from_slice(&services.to_le_bytes());
        }
    }
    Some(edited)
}

/// `addrv2` (BIP-155): count, then entries of time(4) services(compact size) network(1)
/// address(compact size length, bytes) port(2, big endian). Services may grow by a few bytes.
fn edit_addrv2(payload: &[u8], own: &[SocketAddr]) -> Option<Vec<u8>> {
    let names: Vec<(u8, Vec<u8>, [u8; 2])> = own
        .iter()
        .map(|addr| match addr.ip() {
            IpAddr::V4(v4) => (BIP155_IPV4, v4.octets().to_vec(), addr.port().to_be_bytes()),
            IpAddr::V6(v6) => (BIP155_IPV6, v6.octets().to_vec(), addr.port().to_be_bytes()),
        })
        .collect();
    let mut reader = PayloadReader(payload);
    let count = reader.compact_size()?;
    let mut edited = Vec::with_capacity(payload.len() + 16);
    write_compact_size(&mut edited, count);
    for _ in 0..count {
        let time = reader.take(4)?;
        let services = reader.compact_size()?;
        let entry_network = reader.take(1)?[0];
        let len = reader.compact_size()?;
        let address = reader.take(usize::try_from(len).ok()?)?;
        let port = reader.take(2)?;
        let ours = names
            .iter()
            .any(|(n, ip, p)| *n == entry_network && ip == address && p == port);
        edited.extend_from_slice(time);
        write_compact_size(
            &mut edited,
            if ours {
                services | NODE_P2P_V2
            } else {
                services
            },
        );
        edited.push(entry_network);
        write_compact_size(&mut edited, len);
        edited.extend_from_slice(address);
        edited.extend_from_slice(port);
    }
    (reader.rest().is_empty() && edited.len() <= v1::MAX_PAYLOAD_LEN).then_some(edited)
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::*;
    use crate::Encoder;
    use crate::pipe::Chain;
    use crate::rewrite::Rewrite;
    use crate::rewrite::tests::{MAGIC, addr_entry, reached_v4, rewrite, version_payload};
    use crate::test_util::{cipher_pair, feed, open_all, v1_frame};

    #[test]
    fn version_gains_the_bit_and_nothing_else_changes() {
        let mut input = v1_frame(MAGIC, "version", &version_payload(0x409));
        input.extend(v1_frame(MAGIC, "verack", b""));
        input.extend(v1_frame(MAGIC, "block", &vec![7; 100_000]));
        let mut expected = v1_frame(MAGIC, "version", &version_payload(0x409 | NODE_P2P_V2));
        expected.extend(v1_frame(MAGIC, "verack", b""));
        expected.extend(v1_frame(MAGIC, "block", &vec![7; 100_000]));
        for chunk in [1, 7, 24, 1000, 1 << 20] {
            assert_eq!(
                rewrite(&input, chunk).unwrap(),
                expected,
                "reads of {chunk}"
            );
        }
    }

    #[test]
    fn addr_entries_for_the_reached_address_gain_the_bit() {
        let ours = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        let other = Ipv4Addr::new(198, 51, 100, 9).to_ipv6_mapped().octets();
        let payload = |bit: u64| {
            let mut p = vec![3];
            p.extend(addr_entry(ours, 18444, 1 | bit));
            p.extend(addr_entry(ours, 8333, 1));
            p.extend(addr_entry(other, 18444, 1));
            p
        };
        let input = v1_frame(MAGIC, "addr", &payload(0));
        assert_eq!(
            rewrite(&input, 5).unwrap(),
            v1_frame(MAGIC, "addr", &payload(NODE_P2P_V2))
        );
    }

    #[test]
    fn addrv2_services_may_grow() {
        let entry = |ip: &[u8], port: u16, services: u64| {
            let mut e = 1_700_000_000u32.to_le_bytes().to_vec();
            write_compact_size(&mut e, services);
            e.push(BIP155_IPV4);
            write_compact_size(&mut e, ip.len() as u64);
            e.extend_from_slice(ip);
            e.extend_from_slice(&port.to_be_bytes());
            e
        };
        let payload = |services: u64| {
            let mut p = vec![2];
            p.extend(entry(&[192, 0, 2, 1], 18444, services));
            p.extend(entry(&[192, 0, 2, 2], 18444, 9));
            p
        };
        let input = v1_frame(MAGIC, "addrv2", &payload(9));
        let out = rewrite(&input, 3).unwrap();
        assert_eq!(out, v1_frame(MAGIC, "addrv2", &payload(9 | NODE_P2P_V2)));
        assert!(out.len() > input.len(), "1 byte of services became 3");
    }

    #[test]
    fn chained_before_an_encoder_the_peer_reads_the_edited_messages() {
        let mut input = v1_frame(MAGIC, "version", &version_payload(1));
        input.extend(v1_frame(MAGIC, "block", &vec![3; 300_000]));
        input.extend(v1_frame(MAGIC, "ping", &[9; 8]));
        for chunk in [13, 4096, 1 << 20] {
            let (sealer, mut opener) = cipher_pair();
            let mut chain = Chain {
                first: Rewrite::advertise_v2(MAGIC, vec![reached_v4()]),
                second: Encoder::new(MAGIC, sealer),
            };
            let (wire, events, result) = feed(&mut chain, &input, chunk);
            result.unwrap();
            assert_eq!(events.len(), 3, "the encoder's events, once each");
            let contents: Vec<Vec<u8>> = open_all(&mut opener, &wire)
                .into_iter()
                .map(|(_, contents)| contents)
                .collect();
            // `version` has no short id: a zero, its 12-byte command, then the payload.
            assert_eq!(
                contents[0][13..],
                version_payload(1 | NODE_P2P_V2),
                "reads of {chunk}"
            );
            assert!(contents[1][1..] == vec![3; 300_000]);
            assert_eq!(contents[2][1..], [9; 8]);
        }
    }

    #[test]
    fn a_public_address_named_by_the_operator_counts_as_the_nodes_own() {
        let public: SocketAddr = "203.0.113.5:8333".parse().unwrap();
        let mut pipe = Rewrite::advertise_v2(MAGIC, vec![reached_v4(), public]);
        let ip = Ipv4Addr::new(203, 0, 113, 5).to_ipv6_mapped().octets();
        let payload = |bit: u64| {
            let mut p = vec![1];
            p.extend(addr_entry(ip, 8333, 1 | bit));
            p
        };
        let (out, _, result) = feed(&mut pipe, &v1_frame(MAGIC, "addr", &payload(0)), 7);
        result.unwrap();
        assert_eq!(out, v1_frame(MAGIC, "addr", &payload(NODE_P2P_V2)));
    }

    #[test]
    fn unreadable_payloads_pass_as_they_are() {
        for (command, payload) in [
            ("version", vec![1, 2, 3]),
            ("addr", vec![2, 0, 0]),
            ("addrv2", vec![1, 0, 0, 0, 0, 0xff]),
        ] {
            let input = v1_frame(MAGIC, command, &payload);
            assert_eq!(rewrite(&input, 2).unwrap(), input, "{command}");
        }
    }
}
