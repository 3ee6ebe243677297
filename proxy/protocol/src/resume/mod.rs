//! Pausing a translation mid-stream and resuming it in another process: how
//! `bip324-proxy --take-over` moves live connections without a new handshake.
//!
//! Every [`Pipe`] can be paused at any point where its driver awaits (the relay cancels there):
//! [`Pipe::pause`] writes its state into a [`Snapshot`], and [`resume`] rebuilds an equal
//! pipe from it. A snapshot holds, per stage:
//! * the cipher states: keys and the length and packet counters (so rekeying happens where
//!   the peer expects it), and the peer's garbage while its first packet is still to come;
//! * the framing state a stage cannot recompute, such as how much of a passed-through
//!   payload is still to come;
//! * bytes translated but not yet written (they are written first);
//! * bytes read but not yet translated. No cipher has moved for them, so they are fed again
//!   on resume and reach the same state.
//!
//! The format is this crate's own and carries no version of its own: the caller sends
//! [`FORMAT`] ahead and resumes only snapshots of the same format, so state is never read
//! by a successor that would misread it. Its input is trusted no more than any other:
//! [`resume`] bounds every length and fails with a [`ResumeError`], never a panic.
//!
//! Key material: a snapshot lives in one buffer that is wiped when dropped and grows by
//! copying into a fresh wiped buffer, never by reallocating in place, so no stale copy of a
//! key stays behind in freed memory.

mod codec;

use super::decoder::Decoder;
use super::encoder::Encoder;
use super::pipe::{Chain, Pipe};
use super::rewrite::Rewrite;
use super::splice::Splice;

pub(crate) use codec::Reader;
pub use codec::Snapshot;

/// The snapshot format written by [`Pipe::pause`] and read by [`resume`].
pub const FORMAT: u32 = 1;

/// Which stage a snapshot holds (its first byte).
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Tag {
    Encoder = 1,
    Decoder = 2,
    Rewrite = 3,
    Splice = 4,
    Chain = 5,
}

/// A snapshot that cannot be resumed: cut short, from another format, or inconsistent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// It ends before the state it describes.
    #[error("snapshot cut short")]
    Truncated,
    /// Bytes follow the last stage.
    #[error("{0} bytes after the end of the snapshot")]
    Trailing(usize),
    /// A field holds a value no paused stage could have.
    #[error("snapshot holds an impossible {0}")]
    Invalid(&'static str),
}

/// A paused pipe, whole.
pub type Resumed = Box<dyn Pipe + Send>;

/// Rebuilds the pipe `snapshot` was paused from; it goes on exactly where that one stood.
pub fn resume(snapshot: &[u8]) -> Result<Resumed, ResumeError> {
    let mut reader = Reader::new(snapshot);
    let pipe = stage(&mut reader, 0)?;
    match reader.remaining() {
        0 => Ok(pipe),
        n => Err(ResumeError::Trailing(n)),
    }
}

/// Chains nest once in the proxy (an edit and a cipher stage); a little more is allowed,
/// not unbounded recursion.
const MAX_DEPTH: usize = 4;

fn stage(reader: &mut Reader<'_>, depth: usize) -> Result<Resumed, ResumeError> {
    Ok(match reader.u8()? {
        t if t == Tag::Encoder as u8 => Box::new(Encoder::resume(reader)?),
        t if t == Tag::Decoder as u8 => Box::new(Decoder::resume(reader)?),
        t if t == Tag::Rewrite as u8 => Box::new(Rewrite::resume(reader)?),
        t if t == Tag::Splice as u8 => Box::new(Splice::resume(reader)?),
        t if t == Tag::Chain as u8 && depth < MAX_DEPTH => Box::new(Chain {
            first: stage(reader, depth + 1)?,
            second: stage(reader, depth + 1)?,
        }),
        _ => return Err(ResumeError::Invalid("stage")),
    })
}

/// A stage that holds input it has not translated yet: on resume it is fed again.
pub(crate) trait Refeed: Pipe {
    /// Where input goes, whatever output waits: a paused stage held these bytes already.
    fn free_space(&mut self) -> &mut [u8];
}

/// Feeds `raw` again to a stage just rebuilt; it held these bytes when paused, without a
/// cipher having moved for them, so no message completes.
pub(crate) fn refeed(stage: &mut impl Refeed, mut raw: &[u8]) -> Result<(), ResumeError> {
    while !raw.is_empty() {
        let space = stage.free_space();
        let n = space.len().min(raw.len());
        if n == 0 {
            return Err(ResumeError::Invalid("unread input"));
        }
        space[..n].copy_from_slice(&raw[..n]);
        raw = &raw[n..];
        let mut completed = false;
        stage
            .commit_input(n, &mut |_| completed = true)
            .map_err(|_| ResumeError::Invalid("unread input"))?;
        if completed {
            return Err(ResumeError::Invalid("unread input"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
