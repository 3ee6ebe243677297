//! The snapshot's bytes: fixed-width little-endian integers and length-prefixed byte strings.

use zeroize::Zeroizing;

use super::{ResumeError, Tag};
use crate::network::Magic;

/// A paused pipe's state, wiped when dropped.
#[derive(Default)]
pub struct Snapshot {
    buf: Zeroizing<Vec<u8>>,
}

impl Snapshot {
    /// An empty snapshot, with room for `capacity` bytes before it first grows.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Snapshot {
        Snapshot {
            buf: Zeroizing::new(Vec::with_capacity(capacity)),
        }
    }

    /// The bytes to hand over.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Grows by copying into a fresh buffer; the old one is wiped as it drops.
    fn reserve(&mut self, additional: usize) {
        let needed = self.buf.len() + additional;
        if needed > self.buf.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(2 * self.buf.capacity())));
            grown.extend_from_slice(&self.buf);
            self.buf = grown;
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn tag(&mut self, tag: Tag) {
        self.put(&[tag as u8]);
    }

    pub(crate) fn flag(&mut self, value: bool) {
        self.put(&[u8::from(value)]);
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    pub(crate) fn magic(&mut self, magic: Magic) {
        self.put(&magic.0);
    }

    pub(crate) fn array<const N: usize>(&mut self, bytes: &[u8; N]) {
        self.put(bytes);
    }

    /// A byte string made of `parts`, read back as one.
    pub(crate) fn bytes(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.reserve(8 + len);
        self.u64(len as u64);
        for part in parts {
            self.put(part);
        }
    }
}

/// Reads a snapshot; every read checks what is left.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ResumeError> {
        if n > self.bytes.len() {
            return Err(ResumeError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ResumeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A key, in a buffer wiped when dropped.
    pub(crate) fn key(&mut self) -> Result<Zeroizing<[u8; 32]>, ResumeError> {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(self.take(32)?);
        Ok(key)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ResumeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn flag(&mut self) -> Result<bool, ResumeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ResumeError::Invalid("flag")),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ResumeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count or offset that must not exceed `max`.
    pub(crate) fn usize_at_most(
        &mut self,
        max: usize,
        what: &'static str,
    ) -> Result<usize, ResumeError> {
        match usize::try_from(self.u64()?) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(ResumeError::Invalid(what)),
        }
    }

    pub(crate) fn magic(&mut self) -> Result<Magic, ResumeError> {
        Ok(Magic(self.array()?))
    }

    /// A byte string; its length is checked against what is left before anything is
    /// allocated.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ResumeError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| ResumeError::Truncated)?;
        self.take(len)
    }
}
