//! The two buffers each pipe uses: a small staging area for input and an outbox where
//! translated frames are assembled in place.

/// Staging for input that does not yet form a whole header, or a batch of small messages.
#[derive(Default)]
pub(crate) struct Staging {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Staging {
    /// Large enough to batch many small messages per read; large payloads bypass it.
    const CAPACITY: usize = 16 * 1024;

    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space after the held bytes, allocated on first use.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; Self::CAPACITY];
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    pub(crate) fn fill(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.buf.len());
        self.end += n;
    }

    pub(crate) fn release_if_empty(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
        }
    }
}

/// Output assembled frame by frame: `buf[sent..ready]` is ready for the sink, and
/// `buf[ready..]` is the frame under construction, if any.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) buf: Vec<u8>,
    sent: usize,
    ready: usize,
}

impl Outbox {
    /// Above this many unsent bytes, a pipe stops taking input (backpressure).
    pub(crate) const HIGH_WATER: usize = 64 * 1024;

    /// An outbox whose ready bytes are `pending` (a resumed pipe's unsent output).
    pub(crate) fn holding(pending: &[u8]) -> Outbox {
        Outbox {
            buf: pending.to_vec(),
            sent: 0,
            ready: pending.len(),
        }
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.sent..self.ready]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.ready - self.sent);
        self.sent += n;
        if self.sent == self.ready && self.ready == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            self.ready = 0;
        }
    }

    /// Appends a zeroed frame of `len` bytes; returns where it starts.
    pub(crate) fn begin_frame(&mut self, len: usize) -> usize {
        debug_assert_eq!(self.ready, self.buf.len(), "one frame at a time");
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        start
    }

    /// Drops the frame under construction.
    pub(crate) fn discard_frame(&mut self) {
        self.buf.truncate(self.ready);
    }

    /// Completes the frame started at `frame_start` whose bytes are `buf[from..to]`. The
    /// bytes before `from` are unused: skip them when nothing else is pending, or move the
    /// frame down to close the gap.
    pub(crate) fn finish_frame(&mut self, frame_start: usize, from: usize, to: usize) {
        debug_assert!(frame_start == self.ready && frame_start <= from && from <= to);
        if from == frame_start {
            self.buf.truncate(to);
        } else if self.sent == self.ready {
            self.sent = from;
            self.buf.truncate(to);
        } else {
            self.buf.copy_within(from..to, frame_start);
            self.buf.truncate(frame_start + (to - from));
        }
        self.ready = self.buf.len();
    }

    pub(crate) fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_compacts_and_releases() {
        let mut s = Staging::default();
        let space = s.space();
        space[..4].copy_from_slice(b"abcd");
        s.fill(4);
        s.consume(3);
        assert_eq!(s.data(), b"d");
        let space = s.space();
        space[0] = b'e';
        s.fill(1);
        assert_eq!(s.data(), b"de");
        s.release_if_empty();
        assert_eq!(s.data(), b"de", "non-empty staging keeps its bytes");
        s.consume(2);
        s.release_if_empty();
        assert_eq!(s.buf.capacity(), 0);
    }

    #[test]
    fn outbox_closes_gaps() {
        let mut o = Outbox::default();
        // First frame: nothing pending, so the gap is skipped.
        let f = o.begin_frame(6);
        o.buf[f..f + 6].copy_from_slice(b"xxabcd");
        o.finish_frame(f, f + 2, f + 6);
        assert_eq!(o.pending(), b"abcd");
        // Second frame while the first is pending: the frame moves down.
        let f = o.begin_frame(5);
        o.buf[f..f + 5].copy_from_slice(b"yyyef");
        o.finish_frame(f, f + 3, f + 5);
        assert_eq!(o.pending(), b"abcdef");
        o.consume(6);
        assert_eq!(o.pending(), b"");
        assert!(o.buf.is_empty());
    }

    #[test]
    fn outbox_discards_frames() {
        let mut o = Outbox::default();
        let f = o.begin_frame(3);
        o.finish_frame(f, f, f + 3);
        o.begin_frame(10);
        o.discard_frame();
        assert_eq!(o.pending().len(), 3);
    }
}
