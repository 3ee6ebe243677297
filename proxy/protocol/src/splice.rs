//! The identity pipe: bytes out as they came in. Used for clients that already speak v2 and
//! for v1 fallback, so every transport is relayed, counted and bounded the same way.

use super::ProtocolError;
use super::pipe::{Event, Pipe};
use super::resume::{Reader, ResumeError, Snapshot, Tag};

/// Bytes passed through untouched: a client that already speaks v2.
#[derive(Default)]
pub struct Splice {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Splice {
    const CAPACITY: usize = 16 * 1024;

    pub(crate) fn resume(reader: &mut Reader<'_>) -> Result<Splice, ResumeError> {
        let pending = reader.bytes()?;
        let mut buf = vec![0; pending.len().max(Self::CAPACITY)];
        buf[..pending.len()].copy_from_slice(pending);
        Ok(Splice {
            buf,
            start: 0,
            end: pending.len(),
        })
    }
}

impl Pipe for Splice {
    fn output(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume_output(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn input_space(&mut self) -> &mut [u8] {
        if self.start != self.end {
            return &mut [];
        }
        if self.buf.is_empty() {
            self.buf = vec![0; Self::CAPACITY];
        }
        &mut self.buf[..]
    }

    fn commit_input(&mut self, n: usize, _: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        self.end += n;
        Ok(())
    }

    fn partial_input(&self) -> usize {
        0
    }

    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.tag(Tag::Splice);
        snapshot.bytes(&[self.output()]);
    }

    fn release_idle_buffers(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_through() {
        let mut splice = Splice::default();
        let taken = splice.push(b"hello", &mut |_| {}).unwrap();
        assert_eq!(taken, 5);
        assert_eq!(splice.output(), b"hello");
        assert!(splice.input_space().is_empty(), "drain before reading more");
        splice.consume_output(5);
        assert!(!splice.input_space().is_empty());
        splice.release_idle_buffers();
        assert_eq!(splice.buf.capacity(), 0);
    }
}
