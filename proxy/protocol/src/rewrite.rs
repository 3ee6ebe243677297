//! The only places the proxy edits v1 messages, each opt-in by its mode:
//!
//! * **Inbound mode, the node's messages** ([`Rewrite::advertise_v2`]): the node speaks v1
//!   only, but with the proxy in front it accepts v2, and peers such as Bitcoin Core open v2
//!   only to addresses whose services include `NODE_P2P_V2`. So the node's `version` gains that
//!   bit, and so do the entries of its `addr` and `addrv2` messages that advertise the node
//!   itself: the address and port the peer reached it on, and the public addresses the
//!   operator names (behind a port-forwarding router the node advertises one the proxy never
//!   sees).
//! * **`--user-agent-suffix`, the client's `version`** ([`Rewrite::user_agent_suffix`]): BIP-14
//!   style `/bip324-proxy:VERSION/` is appended to its user agent, within Bitcoin Core's
//!   256-byte limit.
//!
//! Every other byte passes untouched. A [`Rewrite`] is a v1 -> v1 [`Pipe`]: messages it does
//! not edit stream through as they arrive; those it edits are held whole (at most one v1
//! payload), then re-framed with a new length and checksum.

use core::net::{IpAddr, SocketAddr};

use super::ProtocolError;
use super::network::Magic;
use super::pipe::{Event, Pipe};
use super::v1::{self, Command, HEADER_LEN};

/// BIP-324's service bit: "this node accepts v2 connections".
pub const NODE_P2P_V2: u64 = 1 << 11;

/// `addrv2` network ids (BIP-155) of the two address families a proxy can be reached on.
const BIP155_IPV4: u8 = 1;
const BIP155_IPV6: u8 = 2;

/// Bitcoin Core's limit on a user agent (`MAX_SUBVERSION_LENGTH`).
pub const MAX_USER_AGENT_LEN: usize = 256;

/// Where a user agent starts in a `version` payload: after version, services, time, the two
/// addresses and the nonce.
const USER_AGENT_AT: usize = 4 + 8 + 8 + 26 + 26 + 8;

/// What a [`Rewrite`] does.
enum Edit {
    /// `NODE_P2P_V2` where the node advertises itself, at these addresses.
    AdvertiseV2 { own: Vec<SocketAddr> },
    /// This appended to the `version`'s user agent.
    UserAgentSuffix { suffix: String },
}

/// A v1 stream with one kind of edit applied.
pub struct Rewrite {
    magic: Magic,
    edit: Edit,
    read: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    state: State,
    /// Header bytes, or the payload of a message being held for editing.
    held: Vec<u8>,
}

enum State {
    Header,
    /// Passing `remaining` more payload bytes through, of a message of `len` bytes.
    Pass {
        remaining: usize,
        len: usize,
    },
    /// Holding a payload to edit.
    Hold(v1::Header),
}

impl Rewrite {
    const READ_CAPACITY: usize = 16 * 1024;

    /// The node's messages: `own` are its addresses and ports, as peers dial them (the one
    /// this peer reached, and any public ones).
    #[must_use]
    pub fn advertise_v2(magic: Magic, own: Vec<SocketAddr>) -> Self {
        Self::new(magic, Edit::AdvertiseV2 { own })
    }

    /// The client's messages: `/NAME:VERSION/` appended to its user agent.
    #[must_use]
    pub fn user_agent_suffix(magic: Magic, name: &str, version: &str) -> Self {
        let suffix = format!("{name}:{version}/");
        Self::new(magic, Edit::UserAgentSuffix { suffix })
    }

    fn new(magic: Magic, edit: Edit) -> Self {
        Rewrite {
            magic,
            edit,
            read: Vec::new(),
            out: Vec::new(),
            sent: 0,
            state: State::Header,
            held: Vec::new(),
        }
    }

    fn process(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        loop {
            match self.state {
                State::Pass { remaining: 0, .. } => self.state = State::Header,
                State::Hold(header) if self.held.len() == header.payload_len => {
                    self.finish(header)?;
                }
                _ if bytes.is_empty() => return Ok(()),
                State::Pass { remaining, len } => {
                    let n = remaining.min(bytes.len());
                    self.out.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.state = State::Pass {
                        remaining: remaining - n,
                        len,
                    };
                }
                State::Header => {
                    let n = (HEADER_LEN - self.held.len()).min(bytes.len());
                    self.held.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let Some(raw) = self.held.first_chunk::<HEADER_LEN>() else {
                        continue;
                    };
                    let header = v1::Header::parse(raw, self.magic)?;
                    if self.edits(&header.command) {
                        self.state = State::Hold(header);
                    } else {
                        self.out.extend_from_slice(&self.held);
                        self.state = State::Pass {
                            remaining: header.payload_len,
                            len: header.payload_len,
                        };
                    }
                    self.held.clear();
                }
                State::Hold(header) => {
                    let n = (header.payload_len - self.held.len()).min(bytes.len());
                    self.held.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                }
            }
        }
    }

    /// A held payload is whole: check it, edit it, frame it again.
    fn finish(&mut self, header: v1::Header) -> Result<(), ProtocolError> {
        if v1::checksum(&self.held) != header.checksum {
            return Err(ProtocolError::V1BadChecksum {
                command: header.command,
            });
        }
        let edited = match &self.edit {
            Edit::AdvertiseV2 { own } => advertise(&header.command, &self.held, own),
            Edit::UserAgentSuffix { suffix } => (header.command.name() == "version")
                .then(|| with_user_agent_suffix(&self.held, suffix))
                .flatten(),
        };
        let payload = edited.as_deref().unwrap_or(&self.held);
        let mut frame = [0u8; HEADER_LEN];
        v1::Header::write(&mut frame, self.magic, &header.command, payload);
        self.out.extend_from_slice(&frame);
        self.out.extend_from_slice(payload);
        self.held.clear();
        self.state = State::Header;
        Ok(())
    }

    fn edits(&self, command: &Command) -> bool {
        match self.edit {
            Edit::AdvertiseV2 { .. } => matches!(command.name(), "version" | "addr" | "addrv2"),
            Edit::UserAgentSuffix { .. } => command.name() == "version",
        }
    }
}

impl Pipe for Rewrite {
    fn output(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    fn consume_output(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    fn input_space(&mut self) -> &mut [u8] {
        if self.sent != self.out.len() {
            return &mut [];
        }
        if self.read.is_empty() {
            self.read = vec![0; Self::READ_CAPACITY];
        }
        &mut self.read[..]
    }

    fn commit_input(&mut self, n: usize, _: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        let read = std::mem::take(&mut self.read);
        let result = self.process(&read[..n]);
        self.read = read;
        result
    }

    /// The unfinished message's bytes received so far: its header and payload.
    fn partial_input(&self) -> usize {
        match self.state {
            State::Header => self.held.len(),
            State::Hold(_) => HEADER_LEN + self.held.len(),
            State::Pass { remaining, len } => HEADER_LEN + len - remaining,
        }
    }

    fn release_idle_buffers(&mut self) {
        if self.sent == self.out.len() {
            self.read = Vec::new();
            self.out = Vec::new();
            self.sent = 0;
        }
        if self.held.is_empty() {
            self.held = Vec::new();
        }
    }
}

/// `version` with `suffix` joined to its user agent; `None` (unchanged) when the payload
/// cannot be read or the result would pass Bitcoin Core's limit.
fn with_user_agent_suffix(payload: &[u8], suffix: &str) -> Option<Vec<u8>> {
    let mut reader = Reader(payload.get(USER_AGENT_AT..)?);
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
    edited.extend_from_slice(reader.0);
    Some(edited)
}

/// The node's payload with its self-advertisements marked, or `None` when it stays as it is
/// (nothing to edit, or a payload this code cannot read: the peer judges it as sent).
fn advertise(command: &Command, payload: &[u8], own: &[SocketAddr]) -> Option<Vec<u8>> {
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
    let mut reader = Reader(payload);
    let count = reader.compact_size()?;
    let entries = reader.0;
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
    let mut reader = Reader(payload);
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
    (reader.0.is_empty() && edited.len() <= v1::MAX_PAYLOAD_LEN).then_some(edited)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn compact_size(&mut self) -> Option<u64> {
        let first = self.take(1)?[0];
        let len = match first {
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
            small => return Some(u64::from(small)),
        };
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(self.take(len)?);
        Some(u64::from_le_bytes(bytes))
    }
}

fn write_compact_size(out: &mut Vec<u8>, n: u64) {
    match n {
        0..0xfd => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::*;
    use crate::Encoder;
    use crate::network::Network;
    use crate::pipe::Chain;
    use crate::test_util::{cipher_pair, feed, open_all, v1_frame};

    const MAGIC: Magic = Network::Regtest.magic();

    fn reached_v4() -> SocketAddr {
        "192.0.2.1:18444".parse().unwrap()
    }

    /// Runs `input` through a fresh rewriter, in reads of `chunk` bytes.
    fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, ProtocolError> {
        let mut pipe = Rewrite::advertise_v2(MAGIC, vec![reached_v4()]);
        let mut out = Vec::new();
        for mut piece in input.chunks(chunk) {
            while !piece.is_empty() {
                let taken = pipe.push(piece, &mut |_| {})?;
                piece = &piece[taken..];
                out.extend_from_slice(pipe.output());
                let n = pipe.output().len();
                pipe.consume_output(n);
            }
        }
        Ok(out)
    }

    fn version_payload(services: u64) -> Vec<u8> {
        let mut payload = 70016i32.to_le_bytes().to_vec();
        payload.extend_from_slice(&services.to_le_bytes());
        payload.extend_from_slice(&[0x42; 80]);
        payload
    }

    fn addr_entry(ip: [u8; 16], port: u16, services: u64) -> Vec<u8> {
        let mut entry = 1_700_000_000u32.to_le_bytes().to_vec();
        entry.extend_from_slice(&services.to_le_bytes());
        entry.extend_from_slice(&ip);
        entry.extend_from_slice(&port.to_be_bytes());
        entry
    }

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
    fn a_close_mid_message_counts_what_was_passed() {
        let mut pipe = Rewrite::advertise_v2(MAGIC, vec![reached_v4()]);
        let frame = v1_frame(MAGIC, "block", &[5; 1000]);
        let (_, _, result) = feed(&mut pipe, &frame[..500], 100);
        result.unwrap();
        assert_eq!(pipe.partial_input(), 500);
        let mut pipe = Rewrite::advertise_v2(MAGIC, vec![reached_v4()]);
        let frame = v1_frame(MAGIC, "version", &version_payload(1));
        let (_, _, result) = feed(&mut pipe, &frame[..30], 100);
        result.unwrap();
        assert_eq!(pipe.partial_input(), 30);
    }

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

    #[test]
    fn a_bad_checksum_or_foreign_magic_is_the_nodes_error() {
        let mut input = v1_frame(MAGIC, "version", &version_payload(1));
        input[HEADER_LEN + 20] ^= 1;
        assert!(matches!(
            rewrite(&input, 100),
            Err(ProtocolError::V1BadChecksum { .. })
        ));
        let foreign = v1_frame(Network::Mainnet.magic(), "ping", &[0; 8]);
        assert!(matches!(
            rewrite(&foreign, 100),
            Err(ProtocolError::V1WrongMagic { .. })
        ));
    }
}
