//! Resuming a paused pipe (`bip324_protocol::resume`, what a successor reads in a
//! `--take-over` or from systemd's store). A real stage of each kind the proxy uses is fed
//! arbitrary input, paused, and its snapshot optionally damaged (a byte flipped, cut short):
//! an intact snapshot always resumes to a pipe that pauses to the same bytes and then
//! produces exactly what the original produces from the same further input; a damaged one
//! is refused cleanly or gives a pipe that takes any input without a panic.
#![no_main]

use bip324_protocol::test_util::cipher_pair;
use bip324_protocol::{Chain, Decoder, Encoder, Network, Pipe, Rewrite, Snapshot, Splice, resume};
use libfuzzer_sys::fuzz_target;

type Stage = Box<dyn Pipe + Send>;

fn stage(kind: u8) -> Stage {
    let magic = Network::Regtest.magic();
    match kind % 5 {
        0 => Box::new(Encoder::new(magic, cipher_pair().0)),
        1 => Box::new(Decoder::new(magic, cipher_pair().1, b"garbage".to_vec())),
        2 => Box::new(Rewrite::advertise_v2(magic, vec!["192.0.2.1:18444".parse().unwrap()])),
        3 => Box::new(Splice::default()),
        _ => Box::new(Chain {
            first: Rewrite::user_agent_suffix(magic, "bip324-proxy", "0.2.0"),
            second: Encoder::new(magic, cipher_pair().0),
        }),
    }
}

fn pause(pipe: &dyn Pipe) -> Vec<u8> {
    let mut snapshot = Snapshot::default();
    pipe.pause(&mut snapshot);
    snapshot.as_bytes().to_vec()
}

/// Feeds `input`, writing out half of what is ready after each read; what was written, or
/// `None` once the pipe refuses the input.
fn feed(pipe: &mut dyn Pipe, input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut fed = 0;
    while fed < input.len() {
        let space = pipe.input_space();
        if space.is_empty() {
            out.extend_from_slice(pipe.output());
            let n = pipe.output().len();
            pipe.consume_output(n);
            pipe.flush(&mut |_| {}).ok()?;
            continue;
        }
        let n = space.len().min(input.len() - fed).min(4096);
        space[..n].copy_from_slice(&input[fed..fed + n]);
        fed += n;
        pipe.commit_input(n, &mut |_| {}).ok()?;
        let half = pipe.output().len().div_ceil(2);
        out.extend_from_slice(&pipe.output()[..half]);
        pipe.consume_output(half);
    }
    Some(out)
}

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>, Option<(u16, u8)>)| {
    let (kind, before, after, damage) = input;
    let mut original = stage(kind);
    if feed(&mut *original, &before).is_none() {
        return;
    }
    let mut snapshot = pause(&*original);
    match damage {
        None => {
            let mut resumed = resume(&snapshot).expect("an intact snapshot resumes");
            assert_eq!(pause(&*resumed), snapshot, "it resumes to the same state");
            let expected = feed(&mut *original, &after);
            assert_eq!(feed(&mut *resumed, &after), expected, "and goes on the same");
        }
        Some((at, flip)) => {
            let at = usize::from(at) % (snapshot.len() + 1);
            if flip == 0 {
                snapshot.truncate(at);
            } else if let Some(byte) = snapshot.get_mut(at) {
                *byte ^= flip;
            }
            if let Ok(mut pipe) = resume(&snapshot) {
                let _ = feed(&mut *pipe, &after);
            }
        }
    }
});
