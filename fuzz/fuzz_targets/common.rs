//! Shared by the fuzz targets: fixed keys and a driver that feeds a pipe in chunks.
#![allow(dead_code)] // each target uses a part of it

use bip324_proxy::protocol::cipher::{LENGTH_LEN, PacketOpener, PacketSealer, packet_len};
use bip324_proxy::protocol::{Event, Pipe, ProtocolError};

pub const L_KEY: [u8; 32] = [7; 32];
pub const P_KEY: [u8; 32] = [9; 32];

pub fn sealer() -> PacketSealer {
    PacketSealer::new(L_KEY, P_KEY)
}

pub fn opener() -> PacketOpener {
    PacketOpener::new(L_KEY, P_KEY)
}

pub fn seal(sealer: &mut PacketSealer, contents: &[u8], aad: &[u8], decoy: bool) -> Vec<u8> {
    let mut packet = vec![0u8; packet_len(contents.len())];
    packet[LENGTH_LEN + 1..][..contents.len()].copy_from_slice(contents);
    sealer.seal(&mut packet, aad, decoy);
    packet
}

/// Feeds `input` in reads of at most `chunk` bytes, draining all output after each; returns
/// the output, the events and how it ended.
pub fn feed(pipe: &mut impl Pipe, input: &[u8], chunk: usize) -> (Vec<u8>, Vec<Event>, Result<(), ProtocolError>) {
    let chunk = chunk.max(1);
    let (mut output, mut events, mut fed) = (Vec::new(), Vec::new(), 0);
    while fed < input.len() {
        let space = pipe.input_space();
        assert!(!space.is_empty(), "a drained pipe always offers space");
        let n = space.len().min(chunk).min(input.len() - fed);
        space[..n].copy_from_slice(&input[fed..fed + n]);
        fed += n;
        let result = pipe.commit_input(n, &mut |e| events.push(e));
        output.extend_from_slice(pipe.output());
        let len = pipe.output().len();
        pipe.consume_output(len);
        if result.is_err() {
            return (output, events, result);
        }
    }
    (output, events, Ok(()))
}
