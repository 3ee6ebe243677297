//! A pipe paused at any point and resumed from its snapshot writes exactly what it would
//! have written without the pause, for every stage the proxy uses.

use super::*;
use crate::network::{Magic, Network};
use crate::pipe::Event;
use crate::test_util::{cipher_pair, seal, v1_frame};

const MAGIC: Magic = Network::Regtest.magic();
const GARBAGE: &[u8] = b"the peer's garbage";

type Factory = fn() -> Resumed;

/// Feeds `input` in reads of `chunk` bytes, writing out only half of what is ready after
/// each read (so output is often pending, as with a slow socket); after read number
/// `pause_after` the pipe is paused and replaced by its resumed copy.
fn drive(
    make: Factory,
    input: &[u8],
    chunk: usize,
    pause_after: Option<usize>,
) -> (Vec<u8>, Vec<Event>) {
    let mut pipe = make();
    let (mut output, mut events) = (Vec::new(), Vec::new());
    let (mut fed, mut reads) = (0, 0);
    let drain = |pipe: &mut Resumed, output: &mut Vec<u8>, events: &mut Vec<Event>, all: bool| loop {
        let n = if all {
            pipe.output().len()
        } else {
            pipe.output().len().div_ceil(2)
        };
        output.extend_from_slice(&pipe.output()[..n]);
        pipe.consume_output(n);
        if !pipe.output().is_empty() {
            if all { continue } else { return }
        }
        pipe.flush(&mut |e| events.push(e)).unwrap();
        if pipe.output().is_empty() || !all {
            return;
        }
    };
    while fed < input.len() {
        let space = pipe.input_space();
        if space.is_empty() {
            drain(&mut pipe, &mut output, &mut events, true);
            continue;
        }
        let n = space.len().min(chunk).min(input.len() - fed);
        space[..n].copy_from_slice(&input[fed..fed + n]);
        fed += n;
        pipe.commit_input(n, &mut |e| events.push(e)).unwrap();
        drain(&mut pipe, &mut output, &mut events, false);
        reads += 1;
        if Some(reads) == pause_after {
            let mut snapshot = Snapshot::default();
            pipe.pause(&mut snapshot);
            pipe = resume(snapshot.as_bytes()).expect("a snapshot resumes");
        }
    }
    drain(&mut pipe, &mut output, &mut events, true);
    (output, events)
}

/// Pauses at reads spread over the whole input, `chunk` bytes a read, and compares each run
/// with the one never paused.
fn check_every_pause(make: Factory, input: &[u8]) {
    for chunk in [1, 7, 24, 1000, 70_000] {
        let whole = drive(make, input, chunk, None);
        assert!(!whole.0.is_empty());
        let reads = input.len().div_ceil(chunk);
        let step = (reads / 60).max(1);
        for pause_after in (1..=reads).step_by(step).chain([reads]) {
            let paused = drive(make, input, chunk, Some(pause_after));
            assert!(
                paused.0 == whole.0 && paused.1 == whole.1,
                "chunk {chunk}, paused after read {pause_after}: not the same"
            );
        }
    }
}

fn v1_messages() -> Vec<u8> {
    let mut input = v1_frame(MAGIC, "version", &version_payload());
    input.extend(v1_frame(MAGIC, "verack", b""));
    input.extend(v1_frame(MAGIC, "block", &vec![0xab; 100_000]));
    // Past a rekey (every 224 packets) of both ciphers.
    for i in 0..300u32 {
        input.extend(v1_frame(MAGIC, "ping", &u64::from(i).to_le_bytes()));
    }
    input.extend(v1_frame(MAGIC, "tx", &[9; 300]));
    input
}

fn version_payload() -> Vec<u8> {
    let mut payload = 70016i32.to_le_bytes().to_vec();
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.extend_from_slice(&[0; 8 + 26 + 26 + 8]);
    payload.push(4);
    payload.extend_from_slice(b"/me/");
    payload.extend_from_slice(&[0; 5]);
    payload
}

#[test]
fn an_encoder_goes_on_where_it_was_paused() {
    check_every_pause(
        || Box::new(Encoder::new(MAGIC, cipher_pair().0)),
        &v1_messages(),
    );
    check_every_pause(
        || {
            let mut encoder = Encoder::new(MAGIC, cipher_pair().0);
            encoder.pad_flights_to_buckets();
            Box::new(encoder)
        },
        &v1_messages(),
    );
}

#[test]
fn a_decoder_goes_on_where_it_was_paused() {
    let (mut sealer, _) = cipher_pair();
    let mut wire = seal(&mut sealer, b"decoy before version", GARBAGE, true);
    wire.extend(seal(&mut sealer, b"", b"", false));
    let mut block = vec![2u8];
    block.extend_from_slice(&[0xcd; 100_000]);
    wire.extend(seal(&mut sealer, &block, b"", false));
    for i in 0..300u64 {
        let mut ping = vec![18u8];
        ping.extend_from_slice(&i.to_le_bytes());
        wire.extend(seal(&mut sealer, &ping, b"", i % 50 == 0));
    }
    check_every_pause(
        || Box::new(Decoder::new(MAGIC, cipher_pair().1, GARBAGE.to_vec())),
        &wire,
    );
}

#[test]
fn rewrites_and_splices_go_on_where_they_were_paused() {
    let input = v1_messages();
    check_every_pause(
        || Box::new(Rewrite::user_agent_suffix(MAGIC, "bip324-proxy", "0.2.0")),
        &input,
    );
    check_every_pause(
        || {
            let own = vec![
                "192.0.2.1:18444".parse().unwrap(),
                "[2001:db8::1]:8333".parse().unwrap(),
            ];
            Box::new(Rewrite::advertise_v2(MAGIC, own))
        },
        &input,
    );
    check_every_pause(|| Box::new(Splice::default()), &input);
    check_every_pause(
        || {
            Box::new(Chain {
                first: Rewrite::user_agent_suffix(MAGIC, "bip324-proxy", "0.2.0"),
                second: Encoder::new(MAGIC, cipher_pair().0),
            })
        },
        &input,
    );
}

/// A snapshot cut anywhere, or with bytes after its end, is refused without a panic.
#[test]
fn a_damaged_snapshot_is_refused() {
    let mut encoder = Chain {
        first: Rewrite::user_agent_suffix(MAGIC, "bip324-proxy", "0.2.0"),
        second: Encoder::new(MAGIC, cipher_pair().0),
    };
    let input = v1_messages();
    encoder.push(&input[..5000], &mut |_| {}).unwrap();
    let mut snapshot = Snapshot::default();
    encoder.pause(&mut snapshot);
    let bytes = snapshot.as_bytes();
    assert!(resume(bytes).is_ok());
    for cut in 0..bytes.len() {
        assert!(resume(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(resume(&longer).err(), Some(ResumeError::Trailing(1)));
    let mut unknown = bytes.to_vec();
    unknown[0] = 99;
    assert_eq!(resume(&unknown).err(), Some(ResumeError::Invalid("stage")));
}
