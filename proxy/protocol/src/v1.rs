//! v1 (plaintext) message framing:
//! `magic(4) | command(12) | length(4, LE) | checksum(4) | payload`; and the CompactSize
//! integers that payloads count and measure their fields with.

use sha2::{Digest, Sha256};

use super::ProtocolError;
use super::network::Magic;

/// A v1 header: magic, command, length, checksum.
pub const HEADER_LEN: usize = 24;
/// The command field of a v1 header.
pub const COMMAND_LEN: usize = 12;
/// Bitcoin Core's `MAX_PROTOCOL_MESSAGE_LENGTH`.
pub const MAX_PAYLOAD_LEN: usize = 4_000_000;

/// A command field: printable ASCII, then NUL padding (Bitcoin Core's `IsMessageTypeValid`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Command(pub [u8; COMMAND_LEN]);

impl Command {
    /// Builds a command from its name; `None` if the name cannot be a valid command.
    pub fn from_name(name: &str) -> Option<Command> {
        let bytes = name.as_bytes();
        if bytes.len() > COMMAND_LEN {
            return None;
        }
        let mut field = [0u8; COMMAND_LEN];
        field[..bytes.len()].copy_from_slice(bytes);
        let command = Command(field);
        command.is_valid().then_some(command)
    }

    /// Printable ASCII, then zeros only, as Bitcoin Core requires.
    pub fn is_valid(&self) -> bool {
        let name_len = self.0.iter().position(|&b| b == 0).unwrap_or(COMMAND_LEN);
        let (name, padding) = self.0.split_at(name_len);
        name.iter().all(|&b| (b' '..=0x7e).contains(&b)) && padding.iter().all(|&b| b == 0)
    }

    /// The name without padding, for logs. Only meaningful for valid commands.
    pub fn name(&self) -> &str {
        let name_len = self.0.iter().position(|&b| b == 0).unwrap_or(COMMAND_LEN);
        std::str::from_utf8(&self.0[..name_len]).unwrap_or("<invalid>")
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_valid() {
            write!(f, "Command({:?})", self.name())
        } else {
            write!(f, "Command({:02x?})", self.0)
        }
    }
}

/// A parsed and validated v1 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The command.
    pub command: Command,
    /// The payload length.
    pub payload_len: usize,
    /// The first 4 bytes of the payload's double SHA-256.
    pub checksum: [u8; 4],
}

impl Header {
    /// Parses a header and checks what can be checked before the payload arrives.
    pub fn parse(bytes: &[u8; HEADER_LEN], magic: Magic) -> Result<Header, ProtocolError> {
        let (got_magic, rest) = bytes.split_at(4);
        if got_magic != magic.0 {
            return Err(ProtocolError::V1WrongMagic {
                expected: magic,
                got: Magic([got_magic[0], got_magic[1], got_magic[2], got_magic[3]]),
            });
        }
        let mut command = [0u8; COMMAND_LEN];
        command.copy_from_slice(&rest[..COMMAND_LEN]);
        let command = Command(command);
        if !command.is_valid() {
            return Err(ProtocolError::V1InvalidCommand(command));
        }
        let len_bytes: [u8; 4] = [rest[12], rest[13], rest[14], rest[15]];
        let payload_len = u32::from_le_bytes(len_bytes) as usize;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(ProtocolError::V1PayloadTooLarge {
                command,
                len: payload_len,
            });
        }
        Ok(Header {
            command,
            payload_len,
            checksum: [rest[16], rest[17], rest[18], rest[19]],
        })
    }

    /// Writes a header for `payload` (the caller guarantees its length fits).
    pub fn write(out: &mut [u8; HEADER_LEN], magic: Magic, command: &Command, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
        out[..4].copy_from_slice(&magic.0);
        out[4..16].copy_from_slice(&command.0);
        out[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        out[20..24].copy_from_slice(&checksum(payload));
    }
}

/// The first 4 bytes of double SHA-256.
pub fn checksum(payload: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(Sha256::digest(payload));
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Reads a payload's fields front to back: `None` once a field runs past its end.
pub(crate) struct PayloadReader<'a>(pub(crate) &'a [u8]);

impl<'a> PayloadReader<'a> {
    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    /// A CompactSize integer: one byte below 0xfd, else a marker and 2, 4 or 8 bytes
    /// little-endian.
    pub(crate) fn compact_size(&mut self) -> Option<u64> {
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

    /// What is left.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// Appends `n` as a CompactSize integer, in its shortest form.
pub(crate) fn write_compact_size(out: &mut Vec<u8>, n: u64) {
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
    use super::*;
    use crate::network::Network;

    fn header_bytes(magic: Magic, command: &[u8], len: u32, sum: [u8; 4]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&magic.0);
        h[4..4 + command.len()].copy_from_slice(command);
        h[16..20].copy_from_slice(&len.to_le_bytes());
        h[20..].copy_from_slice(&sum);
        h
    }

    #[test]
    fn checksum_of_empty_payload_is_the_well_known_value() {
        // verack's checksum, as seen on the wire.
        assert_eq!(checksum(b""), [0x5d, 0xf6, 0xe0, 0xe2]);
    }

    #[test]
    fn header_round_trip() {
        let magic = Network::Regtest.magic();
        let command = Command::from_name("ping").unwrap();
        let mut out = [0u8; HEADER_LEN];
        Header::write(&mut out, magic, &command, &[7u8; 8]);
        let header = Header::parse(&out, magic).unwrap();
        assert_eq!(header.command, command);
        assert_eq!(header.payload_len, 8);
        assert_eq!(header.checksum, checksum(&[7u8; 8]));
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let h = header_bytes(Network::Mainnet.magic(), b"ping", 8, [0; 4]);
        assert!(matches!(
            Header::parse(&h, Network::Regtest.magic()),
            Err(ProtocolError::V1WrongMagic { .. })
        ));
    }

    #[test]
    fn length_limit_is_inclusive() {
        let magic = Network::Mainnet.magic();
        let ok = header_bytes(magic, b"block", MAX_PAYLOAD_LEN as u32, [0; 4]);
        assert!(Header::parse(&ok, magic).is_ok());
        let too_big = header_bytes(magic, b"block", MAX_PAYLOAD_LEN as u32 + 1, [0; 4]);
        assert!(matches!(
            Header::parse(&too_big, magic),
            Err(ProtocolError::V1PayloadTooLarge { .. })
        ));
        let huge = header_bytes(magic, b"block", u32::MAX, [0; 4]);
        assert!(Header::parse(&huge, magic).is_err());
    }

    #[test]
    fn command_validity_follows_bitcoin_core() {
        assert!(Command(*b"version\0\0\0\0\0").is_valid());
        assert!(Command(*b"abcdefghijkl").is_valid());
        assert!(Command([0; 12]).is_valid());
        assert!(
            !Command(*b"ver\0sion\0\0\0\0").is_valid(),
            "data after padding"
        );
        assert!(
            !Command(*b"ver\x01ion\0\0\0\0\0").is_valid(),
            "control byte"
        );
        assert!(!Command(*b"ver\x7fion\0\0\0\0\0").is_valid(), "DEL");
        assert!(Command::from_name("thirteen_char").is_none());
        let magic = Network::Mainnet.magic();
        let bad = header_bytes(magic, b"p\ting", 0, [0; 4]);
        assert!(matches!(
            Header::parse(&bad, magic),
            Err(ProtocolError::V1InvalidCommand(_))
        ));
    }

    #[test]
    fn compact_size_round_trips_at_every_width() {
        for (n, width) in [
            (0, 1),
            (0xfc, 1),
            (0xfd, 3),
            (0xffff, 3),
            (0x1_0000, 5),
            (0xffff_ffff, 5),
            (0x1_0000_0000, 9),
            (u64::MAX, 9),
        ] {
            let mut out = Vec::new();
            write_compact_size(&mut out, n);
            assert_eq!(out.len(), width, "{n:#x}");
            out.push(0xaa);
            let mut reader = PayloadReader(&out);
            assert_eq!(reader.compact_size(), Some(n));
            assert_eq!(reader.rest(), [0xaa]);
        }
    }

    #[test]
    fn a_field_past_the_end_reads_as_none() {
        assert_eq!(PayloadReader(&[0xfd, 1]).compact_size(), None);
        assert_eq!(PayloadReader(&[]).compact_size(), None);
        let mut reader = PayloadReader(&[1, 2, 3]);
        assert_eq!(reader.take(2), Some(&[1, 2][..]));
        assert_eq!(reader.take(2), None);
        assert_eq!(reader.rest(), [3]);
    }
}
