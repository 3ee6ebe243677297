//! The only places the proxy edits v1 messages, each opt-in by its mode:
//!
//! * **Inbound mode, the node's messages** ([`Rewrite::advertise_v2`], `advertise_v2.rs`):
//!   `NODE_P2P_V2` where the node advertises itself, so that v2 peers dial it in v2.
//! * **`--user-agent-suffix`, the client's `version`** ([`Rewrite::user_agent_suffix`],
//!   `user_agent.rs`): `/bip324-proxy:VERSION/` appended to its user agent.
//!
//! Every other byte passes untouched. A [`Rewrite`] is a v1 -> v1 [`Pipe`]: messages it does
//! not edit stream through as they arrive; those it edits are held whole (at most one v1
//! payload), then re-framed with a new length and checksum.

mod advertise_v2;
mod user_agent;

use core::net::SocketAddr;

use super::ProtocolError;
use super::network::Magic;
use super::pipe::{Event, Pipe};
use super::resume::{Reader, ResumeError, Snapshot, Tag};
use super::v1::{self, Command, HEADER_LEN};

pub use advertise_v2::NODE_P2P_V2;
pub use user_agent::MAX_USER_AGENT_LEN;

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
            Edit::AdvertiseV2 { own } => advertise_v2::apply(&header.command, &self.held, own),
            Edit::UserAgentSuffix { suffix } => user_agent::with_suffix(&self.held, suffix),
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
            Edit::AdvertiseV2 { .. } => advertise_v2::edits(command),
            Edit::UserAgentSuffix { .. } => user_agent::edits(command),
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

    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.tag(Tag::Rewrite);
        snapshot.magic(self.magic);
        match &self.edit {
            Edit::AdvertiseV2 { own } => {
                snapshot.flag(false);
                snapshot.u64(own.len() as u64);
                for address in own {
                    let ip = match address.ip() {
                        core::net::IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                        core::net::IpAddr::V6(ip) => ip,
                    };
                    snapshot.array(&ip.octets());
                    snapshot.u64(u64::from(address.port()));
                }
            }
            Edit::UserAgentSuffix { suffix } => {
                snapshot.flag(true);
                snapshot.bytes(&[suffix.as_bytes()]);
            }
        }
        match self.state {
            State::Header => snapshot.array(&[0]),
            State::Pass { remaining, len } => {
                snapshot.array(&[1]);
                snapshot.u64(remaining as u64);
                snapshot.u64(len as u64);
            }
            State::Hold(header) => {
                snapshot.array(&[2]);
                snapshot.array(&header.command.0);
                snapshot.u64(header.payload_len as u64);
                snapshot.array(&header.checksum);
            }
        }
        snapshot.bytes(&[&self.held]);
        snapshot.bytes(&[self.output()]);
    }
}

impl Rewrite {
    pub(crate) fn resume(reader: &mut Reader<'_>) -> Result<Rewrite, ResumeError> {
        let magic = reader.magic()?;
        let edit = if reader.flag()? {
            let suffix = std::str::from_utf8(reader.bytes()?)
                .map_err(|_| ResumeError::Invalid("user agent suffix"))?;
            Edit::UserAgentSuffix {
                suffix: suffix.to_string(),
            }
        } else {
            // Each address takes 24 bytes: more than what is left cannot be.
            let count = reader.usize_at_most(reader.remaining() / 24, "address count")?;
            let mut own = Vec::with_capacity(count);
            for _ in 0..count {
                let ip = core::net::Ipv6Addr::from(reader.array::<16>()?);
                let port =
                    u16::try_from(reader.u64()?).map_err(|_| ResumeError::Invalid("port"))?;
                let ip = ip
                    .to_ipv4_mapped()
                    .map_or(ip.into(), core::net::IpAddr::from);
                own.push(SocketAddr::new(ip, port));
            }
            Edit::AdvertiseV2 { own }
        };
        let max = v1::MAX_PAYLOAD_LEN;
        let state = match reader.u8()? {
            0 => State::Header,
            1 => {
                let remaining = reader.usize_at_most(max, "payload length")?;
                let len = reader.usize_at_most(max, "payload length")?;
                if remaining > len {
                    return Err(ResumeError::Invalid("payload length"));
                }
                State::Pass { remaining, len }
            }
            2 => State::Hold(v1::Header {
                command: Command(reader.array()?),
                payload_len: reader.usize_at_most(max, "payload length")?,
                checksum: reader.array()?,
            }),
            _ => return Err(ResumeError::Invalid("framing state")),
        };
        let held = reader.bytes()?.to_vec();
        let held_max = match state {
            State::Header => HEADER_LEN - 1,
            State::Pass { .. } => 0,
            State::Hold(header) => header.payload_len,
        };
        if held.len() > held_max {
            return Err(ResumeError::Invalid("held bytes"));
        }
        let mut rewrite = Rewrite::new(magic, edit);
        rewrite.state = state;
        rewrite.held = held;
        rewrite.out = reader.bytes()?.to_vec();
        Ok(rewrite)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::network::Network;
    use crate::test_util::{feed, v1_frame};

    pub(in crate::rewrite) const MAGIC: Magic = Network::Regtest.magic();

    pub(in crate::rewrite) fn reached_v4() -> SocketAddr {
        "192.0.2.1:18444".parse().unwrap()
    }

    /// Runs `input` through a fresh node-side rewriter, in reads of `chunk` bytes.
    pub(in crate::rewrite) fn rewrite(
        input: &[u8],
        chunk: usize,
    ) -> Result<Vec<u8>, ProtocolError> {
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

    pub(in crate::rewrite) fn version_payload(services: u64) -> Vec<u8> {
        let mut payload = 70016i32.to_le_bytes().to_vec();
        payload.extend_from_slice(&services.to_le_bytes());
        payload.extend_from_slice(&[0x42; 80]);
        payload
    }

    pub(in crate::rewrite) fn addr_entry(ip: [u8; 16], port: u16, services: u64) -> Vec<u8> {
        let mut entry = 1_700_000_000u32.to_le_bytes().to_vec();
        entry.extend_from_slice(&services.to_le_bytes());
        entry.extend_from_slice(&ip);
        entry.extend_from_slice(&port.to_be_bytes());
        entry
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
