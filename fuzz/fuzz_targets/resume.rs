//! Resuming a paused pipe (`bip324_protocol::resume`, what a successor reads in a
//! `--take-over` or from systemd's store): any snapshot is refused cleanly or gives a pipe
//! that takes any input without a panic; a resumed pipe pauses to a snapshot that resumes to
//! the same state (pausing again gives the same bytes).
#![no_main]

use bip324_protocol::{Pipe, Snapshot, resume};
use libfuzzer_sys::fuzz_target;

fn pause(pipe: &dyn Pipe) -> Vec<u8> {
    let mut snapshot = Snapshot::default();
    pipe.pause(&mut snapshot);
    snapshot.as_bytes().to_vec()
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (snapshot, more) = input;
    let Ok(mut pipe) = resume(&snapshot) else {
        return;
    };
    let again = pause(&*pipe);
    let resumed = resume(&again).expect("a resumed pipe's own snapshot resumes");
    assert_eq!(pause(&*resumed), again, "pausing a resumed pipe is stable");
    // It takes input like any pipe: errors, never a panic, output bounded.
    let _ = pipe.flush(&mut |_| {});
    let mut fed = 0;
    while fed < more.len() {
        let n = pipe.output().len();
        pipe.consume_output(n);
        if pipe.flush(&mut |_| {}).is_err() {
            return;
        }
        let space = pipe.input_space();
        if space.is_empty() {
            if pipe.output().is_empty() {
                return;
            }
            continue;
        }
        let n = space.len().min(more.len() - fed);
        space[..n].copy_from_slice(&more[fed..fed + n]);
        fed += n;
        if pipe.commit_input(n, &mut |_| {}).is_err() {
            return;
        }
    }
});
