//! One live connection as it passes to a successor: what the registry, logs and metrics
//! know of it (JSON), then each direction's paused pipe and the bytes read before the relay
//! that no pipe has taken yet. Its two sockets travel beside it (`SCM_RIGHTS`).
//!
//! Layout: four-byte little-endian lengths, each followed by its part: the JSON, the
//! upstream pipe, the downstream pipe, the accepted socket's unread bytes, the dialled
//! one's. The whole record lives in wiped buffers: the pipes hold keys.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use bip324_control::{Direction, Front, TransportKind};
use bip324_protocol::Snapshot;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The record format this proxy writes and reads; a successor asks for it, and a
/// predecessor that writes another keeps its connections (drain) instead of sending them.
pub(crate) const FORMAT: u32 = 1;
// The pipes' snapshots are part of a record: a new snapshot format is a new record format.
const _: () = assert!(bip324_protocol::resume::FORMAT == 1, "bump record::FORMAT");

/// Largest record a successor reads: two pipes holding a maximal message each, and room.
pub(crate) const MAX_LEN: usize = 24 << 20;

/// What is known of a connection, beside its pipes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) id: u64,
    pub(crate) front: Front,
    pub(crate) direction: Direction,
    pub(crate) client: SocketAddr,
    pub(crate) destination: SocketAddr,
    /// As asked: a SOCKS5 name stays a name.
    pub(crate) destination_shown: String,
    pub(crate) network: Option<String>,
    pub(crate) transport: TransportKind,
    pub(crate) session_id: Option<[u8; 32]>,
    /// Bytes so far: accepted in and out, dialled in and out.
    pub(crate) traffic: [u64; 4],
    /// Its age in milliseconds when it left.
    pub(crate) age_ms: u64,
}

/// The record's parts, borrowed from the bytes that hold them.
pub(crate) struct Parts<'a> {
    pub(crate) meta: Meta,
    pub(crate) up: &'a [u8],
    pub(crate) down: &'a [u8],
    pub(crate) unread: (&'a [u8], &'a [u8]),
}

/// Writes a record, in one buffer of its exact size (nothing reallocated, all wiped).
pub(crate) fn encode(
    meta: &Meta,
    (up, down): (&Snapshot, &Snapshot),
    unread: (&[u8], &[u8]),
) -> Zeroizing<Vec<u8>> {
    let meta = serde_json::to_vec(meta).expect("serialisable");
    let parts = [
        &meta[..],
        up.as_bytes(),
        down.as_bytes(),
        unread.0,
        unread.1,
    ];
    let len = parts.iter().map(|p| 4 + p.len()).sum();
    let mut record = Zeroizing::new(Vec::with_capacity(len));
    for part in parts {
        record.extend_from_slice(&(part.len() as u32).to_le_bytes());
        record.extend_from_slice(part);
    }
    record
}

/// A live connection from the predecessor, ready to carry on.
pub(crate) struct Arrived {
    pub(crate) meta: Meta,
    pub(crate) up: bip324_protocol::resume::Resumed,
    pub(crate) down: bip324_protocol::resume::Resumed,
    pub(crate) unread: (Vec<u8>, Vec<u8>),
    /// Accepted, dialled.
    pub(crate) sockets: [std::net::TcpStream; 2],
}

/// The connection `bytes` describe, on its two `sockets` (accepted, dialled).
pub(crate) fn arrive(bytes: &[u8], [accepted, dialled]: [OwnedFd; 2]) -> Result<Arrived, String> {
    let parts = decode(bytes)?;
    let resume = |s: &[u8]| bip324_protocol::resume(s).map_err(|e| e.to_string());
    Ok(Arrived {
        up: resume(parts.up)?,
        down: resume(parts.down)?,
        unread: (parts.unread.0.to_vec(), parts.unread.1.to_vec()),
        meta: parts.meta,
        sockets: [accepted.into(), dialled.into()],
    })
}

/// Reads a record's parts, or says why they do not add up.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Parts<'_>, String> {
    let mut next = || -> Result<&[u8], String> {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or("record cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err("record cut short".into());
        }
        let (part, rest) = rest.split_at(len);
        bytes = rest;
        Ok(part)
    };
    let meta = serde_json::from_slice(next()?).map_err(|e| format!("unreadable record: {e}"))?;
    let parts = Parts {
        meta,
        up: next()?,
        down: next()?,
        unread: (next()?, next()?),
    };
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the record", bytes.len()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_damaged_one_is_refused() {
        let meta = Meta {
            id: 7,
            front: Front::Socks5,
            direction: Direction::Outbound,
            client: "127.0.0.1:40000".parse().unwrap(),
            destination: "10.0.0.2:8333".parse().unwrap(),
            destination_shown: "node.example:8333".into(),
            network: Some("mainnet".into()),
            transport: TransportKind::V2,
            session_id: Some([3; 32]),
            traffic: [1, 2, 3, 4],
            age_ms: 1500,
        };
        let (mut up, down) = (Snapshot::default(), Snapshot::default());
        bip324_protocol::Pipe::pause(&bip324_protocol::Splice::default(), &mut up);
        let bytes = encode(&meta, (&up, &down), (b"early", b""));
        let parts = decode(&bytes).unwrap();
        assert_eq!(format!("{:?}", parts.meta), format!("{meta:?}"));
        assert_eq!(parts.up, up.as_bytes());
        assert_eq!(parts.down, b"");
        assert_eq!(parts.unread, (&b"early"[..], &b""[..]));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
