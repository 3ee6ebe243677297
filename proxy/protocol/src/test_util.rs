//! Helpers for the protocol's unit tests, and (feature `test-util`) for the fuzz targets and
//! the end-to-end tests.

use super::ProtocolError;
use super::cipher::{LENGTH_LEN, PacketOpener, PacketSealer, TAG_LEN, packet_len};
use super::network::Magic;
use super::pipe::{Event, Pipe};
use super::v1::{self, Command};

/// A length key for tests.
pub const L_KEY: [u8; 32] = [0x11; 32];
/// A contents key for tests.
pub const P_KEY: [u8; 32] = [0x22; 32];

/// A sealer and the opener that reads what it seals.
pub fn cipher_pair() -> (PacketSealer, PacketOpener) {
    (
        PacketSealer::new(L_KEY, P_KEY),
        PacketOpener::new(L_KEY, P_KEY),
    )
}

/// One v1 message, framed.
pub fn v1_frame(magic: Magic, command: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; v1::HEADER_LEN];
    let command = Command::from_name(command).expect("valid command");
    let header: &mut [u8; v1::HEADER_LEN] = (&mut frame[..]).try_into().unwrap();
    v1::Header::write(header, magic, &command, payload);
    frame.extend_from_slice(payload);
    frame
}

/// One v2 packet carrying `contents`.
pub fn seal(sealer: &mut PacketSealer, contents: &[u8], aad: &[u8], decoy: bool) -> Vec<u8> {
    let mut packet = vec![0u8; packet_len(contents.len())];
    packet[LENGTH_LEN + 1..][..contents.len()].copy_from_slice(contents);
    sealer.seal(&mut packet, aad, decoy);
    packet
}

/// Feeds `input` at most `chunk` bytes per read, draining all output after each read (and
/// flushing, as drivers do).
pub fn feed(
    pipe: &mut impl Pipe,
    input: &[u8],
    chunk: usize,
) -> (Vec<u8>, Vec<Event>, Result<(), ProtocolError>) {
    let chunk = chunk.max(1);
    let mut output = Vec::new();
    let mut events = Vec::new();
    let mut fed = 0;
    while fed < input.len() {
        let space = pipe.input_space();
        assert!(!space.is_empty(), "drained pipes always offer space");
        let n = space.len().min(chunk).min(input.len() - fed);
        space[..n].copy_from_slice(&input[fed..fed + n]);
        fed += n;
        let mut result = pipe.commit_input(n, &mut |e| events.push(e));
        // Drain, and flush what a chain holds between its stages, as the relay does.
        loop {
            output.extend_from_slice(pipe.output());
            let pending = pipe.output().len();
            pipe.consume_output(pending);
            if result.is_err() {
                return (output, events, result);
            }
            result = pipe.flush(&mut |e| events.push(e));
            if result.is_ok() && pipe.output().is_empty() {
                break;
            }
        }
    }
    (output, events, Ok(()))
}

/// Opens every packet in `wire`; returns (decoy, contents) for each.
pub fn open_all(opener: &mut PacketOpener, mut wire: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut packets = Vec::new();
    while !wire.is_empty() {
        let len = opener.open_length(wire[..LENGTH_LEN].try_into().unwrap());
        let (packet, rest) = wire.split_at(LENGTH_LEN + 1 + len + TAG_LEN);
        let mut body = packet[LENGTH_LEN..].to_vec();
        let decoy = opener.open(&[], &mut body).unwrap();
        packets.push((decoy, body[1..1 + len].to_vec()));
        wire = rest;
    }
    packets
}
