//! v1 framing for test peers, written independently of the proxy's code.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use sha2::{Digest, Sha256};

pub const REGTEST_MAGIC: [u8; 4] = [0xfa, 0xbf, 0xb5, 0xda];
pub const MAX_PAYLOAD: usize = 4_000_000;
/// The test client puts this in every payload: it must never appear on the wire between the
/// proxy and the remote node.
pub const PLAINTEXT_MARKER: &[u8] = b"E2E-PLAINTEXT-MARKER";

#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub command: String,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({} bytes)", self.command, self.payload.len())
    }
}

impl Message {
    pub fn new(command: &str, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            command: command.to_string(),
            payload: payload.into(),
        }
    }

    /// The message as it travels on a v1 connection.
    pub fn to_wire(&self, magic: [u8; 4]) -> Vec<u8> {
        assert!(self.command.len() <= 12);
        let mut out = Vec::with_capacity(24 + self.payload.len());
        out.extend_from_slice(&magic);
        let mut command = [0u8; 12];
        command[..self.command.len()].copy_from_slice(self.command.as_bytes());
        out.extend_from_slice(&command);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&sha256d(&self.payload)[..4]);
        out.extend_from_slice(&self.payload);
        out
    }
}

pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// Fills `buf`; `Ok(false)` if the stream ended before its first byte, an error if it ended
/// after.
pub fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 if filled == 0 => return Ok(false),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Ok(true)
}

pub const HEADER_LEN: usize = 24;

/// A v1 header's command and payload length; the magic and the checksum are the caller's
/// to check.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> (String, usize) {
    let name_len = header[4..16].iter().position(|&b| b == 0).unwrap_or(12);
    let command = String::from_utf8_lossy(&header[4..4 + name_len]).into_owned();
    let len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    (command, len)
}

/// Reads one message; `Ok(None)` on a clean end of stream between messages.
pub fn read_message(r: &mut impl Read, magic: [u8; 4]) -> io::Result<Option<Message>> {
    let mut header = [0u8; HEADER_LEN];
    if !read_exact_or_eof(r, &mut header)? {
        return Ok(None);
    }
    if header[..4] != magic {
        return Err(invalid(format!("wrong magic {:02x?}", &header[..4])));
    }
    let (command, len) = parse_header(&header);
    if len > MAX_PAYLOAD {
        return Err(invalid(format!("payload of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if sha256d(&payload)[..4] != header[20..24] {
        return Err(invalid(format!("bad checksum on {command}")));
    }
    Ok(Some(Message { command, payload }))
}

/// Splits a stream of v1 bytes, fed in any pieces, into messages. Payloads of `skip` are not
/// kept (a benchmark's blocks): their messages come out empty.
pub struct Splitter {
    skip: &'static str,
    header: Vec<u8>,
    /// The message being read and the payload bytes it still needs.
    current: Option<(Message, usize)>,
    pub messages: Vec<Message>,
}

impl Splitter {
    pub fn new(skip: &'static str) -> Splitter {
        Splitter {
            skip,
            header: Vec::with_capacity(HEADER_LEN),
            current: None,
            messages: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        loop {
            match &mut self.current {
                None if bytes.is_empty() => return,
                None => {
                    let n = (HEADER_LEN - self.header.len()).min(bytes.len());
                    self.header.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let Ok(header) = <&[u8; HEADER_LEN]>::try_from(&self.header[..]) else {
                        return;
                    };
                    let (command, len) = parse_header(header);
                    self.header.clear();
                    self.current = Some((Message::new(&command, []), len));
                }
                Some((message, left)) => {
                    let n = (*left).min(bytes.len());
                    if message.command != self.skip {
                        message.payload.extend_from_slice(&bytes[..n]);
                    }
                    bytes = &bytes[n..];
                    *left -= n;
                    if *left > 0 {
                        return;
                    }
                    let (message, _) = self.current.take().expect("matched above");
                    self.messages.push(message);
                }
            }
        }
    }
}

pub fn write_message(w: &mut impl Write, magic: [u8; 4], message: &Message) -> io::Result<()> {
    w.write_all(&message.to_wire(magic))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A plausible `version` payload (protocol 70016, no services).
pub fn version_payload(addr_recv: SocketAddr, nonce: u64, user_agent: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&70016i32.to_le_bytes());
    p.extend_from_slice(&0u64.to_le_bytes()); // services
    p.extend_from_slice(&1_700_000_000i64.to_le_bytes());
    p.extend_from_slice(&net_addr(addr_recv));
    p.extend_from_slice(&net_addr(SocketAddr::from(([0, 0, 0, 0], 0))));
    p.extend_from_slice(&nonce.to_le_bytes());
    p.push(user_agent.len() as u8);
    p.extend_from_slice(user_agent.as_bytes());
    p.extend_from_slice(&0i32.to_le_bytes()); // start height
    p.push(1); // relay
    p
}

fn net_addr(addr: SocketAddr) -> [u8; 26] {
    let mut out = [0u8; 26];
    let ip = match addr {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(a) => a.ip().octets(),
    };
    out[8..24].copy_from_slice(&ip);
    out[24..].copy_from_slice(&addr.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_splitter_reassembles_messages_from_any_pieces() {
        let wire = [
            Message::new("ping", [7u8; 8]).to_wire(REGTEST_MAGIC),
            Message::new("block", [1u8; 100]).to_wire(REGTEST_MAGIC),
            Message::new("verack", []).to_wire(REGTEST_MAGIC),
        ]
        .concat();
        for piece in [1, 5, 24, 1000] {
            let mut splitter = Splitter::new("block");
            wire.chunks(piece).for_each(|c| splitter.feed(c));
            let commands: Vec<&str> = splitter
                .messages
                .iter()
                .map(|m| m.command.as_str())
                .collect();
            assert_eq!(commands, ["ping", "block", "verack"], "pieces of {piece}");
            assert_eq!(splitter.messages[0].payload, [7u8; 8]);
            assert!(splitter.messages[1].payload.is_empty(), "skipped payload");
        }
    }
}
