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

/// Reads one message; `Ok(None)` on a clean end of stream between messages.
pub fn read_message(r: &mut impl Read, magic: [u8; 4]) -> io::Result<Option<Message>> {
    let mut header = [0u8; 24];
    if !read_exact_or_eof(r, &mut header)? {
        return Ok(None);
    }
    if header[..4] != magic {
        return Err(invalid(format!("wrong magic {:02x?}", &header[..4])));
    }
    let name_len = header[4..16].iter().position(|&b| b == 0).unwrap_or(12);
    let command = String::from_utf8(header[4..4 + name_len].to_vec())
        .map_err(|_| invalid("command is not UTF-8".into()))?;
    let len = u32::from_le_bytes(header[16..20].try_into().unwrap()) as usize;
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
