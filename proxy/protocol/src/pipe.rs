//! The sans-IO interface shared by both translation directions.
//!
//! A driver moves bytes between two sockets through a `Pipe`:
//! 1. write `output()` to the sink and report it with `consume_output`;
//! 2. read from the source into `input_space()` and report it with `commit_input`.
//!
//! The pipe decides where input lands: small messages are staged and batched, while the
//! payload of a large message is read straight to its final place in the output buffer, so it
//! is encrypted or decrypted in place and never copied.

use super::ProtocolError;
use super::message_type::UndecodableType;
use super::resume::{Snapshot, Tag};
use super::v1::Command;

/// What a pipe did with one message, reported for logs and statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message was translated and queued for the sink.
    Message {
        /// Its command.
        command: Command,
        /// Its payload length.
        payload_len: usize,
    },
    /// A v2 decoy packet was authenticated and skipped.
    /// A decoy packet and its contents length.
    Decoy {
        /// Its contents length.
        contents_len: usize,
    },
    /// The peer's v2 version packet was authenticated: the handshake is complete.
    /// The version packet and its contents length.
    VersionPacket {
        /// Its contents length.
        contents_len: usize,
    },
    /// A v2 message without a v1 equivalent was dropped, as Bitcoin Core does.
    Dropped {
        /// Why it has no v1 form.
        reason: UndecodableType,
        /// Its contents length.
        contents_len: usize,
    },
}

/// One direction of translation.
pub trait Pipe {
    /// Bytes ready for the sink.
    fn output(&self) -> &[u8];

    /// `n` bytes of `output()` were written.
    fn consume_output(&mut self, n: usize);

    /// Where the next read from the source should go. Empty while output must drain first.
    fn input_space(&mut self) -> &mut [u8];

    /// `n` bytes were read into `input_space()`: translate what is complete.
    fn commit_input(
        &mut self,
        n: usize,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError>;

    /// Bytes of an incomplete message held from the source.
    fn partial_input(&self) -> usize;

    /// Frees buffers that hold nothing, so an idle connection costs little memory.
    fn release_idle_buffers(&mut self);

    /// Moves output held inside the pipe to where `output()` shows it; a driver calls it
    /// whenever `output()` has drained. Only a [`Chain`] holds such output.
    fn flush(&mut self, _events: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        Ok(())
    }

    /// Appends a cover decoy when this pipe can send one now (a v2 encoder with nothing
    /// pending); `true` when output was added. Others never do.
    fn emit_cover(&mut self) -> bool {
        false
    }

    /// Writes this pipe's whole state, for [`crate::resume()`] to go on from in another
    /// process. Valid at any point where a driver awaits: between calls, whatever is held.
    fn pause(&self, snapshot: &mut Snapshot);

    /// Feeds bytes that were read elsewhere; returns how many were taken (fewer than given
    /// only when output must be drained first).
    fn push(
        &mut self,
        bytes: &[u8],
        events: &mut dyn FnMut(Event),
    ) -> Result<usize, ProtocolError> {
        let mut taken = 0;
        while taken < bytes.len() {
            let space = self.input_space();
            if space.is_empty() {
                break;
            }
            let n = space.len().min(bytes.len() - taken);
            space[..n].copy_from_slice(&bytes[taken..taken + n]);
            self.commit_input(n, events)?;
            taken += n;
        }
        Ok(taken)
    }
}

/// A borrowed pipe is a pipe: a session's encoder can stand in a [`Chain`].
impl<P: Pipe + ?Sized> Pipe for &mut P {
    fn output(&self) -> &[u8] {
        (**self).output()
    }

    fn consume_output(&mut self, n: usize) {
        (**self).consume_output(n);
    }

    fn input_space(&mut self) -> &mut [u8] {
        (**self).input_space()
    }

    fn commit_input(
        &mut self,
        n: usize,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError> {
        (**self).commit_input(n, events)
    }

    fn partial_input(&self) -> usize {
        (**self).partial_input()
    }

    fn release_idle_buffers(&mut self) {
        (**self).release_idle_buffers();
    }

    fn flush(&mut self, events: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        (**self).flush(events)
    }

    fn emit_cover(&mut self) -> bool {
        (**self).emit_cover()
    }

    fn pause(&self, snapshot: &mut Snapshot) {
        (**self).pause(snapshot);
    }
}

/// A boxed pipe is a pipe: a driver may choose each direction's stages at run time.
impl<P: Pipe + ?Sized> Pipe for Box<P> {
    fn output(&self) -> &[u8] {
        (**self).output()
    }

    fn consume_output(&mut self, n: usize) {
        (**self).consume_output(n);
    }

    fn input_space(&mut self) -> &mut [u8] {
        (**self).input_space()
    }

    fn commit_input(
        &mut self,
        n: usize,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError> {
        (**self).commit_input(n, events)
    }

    fn partial_input(&self) -> usize {
        (**self).partial_input()
    }

    fn release_idle_buffers(&mut self) {
        (**self).release_idle_buffers();
    }

    fn flush(&mut self, events: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        (**self).flush(events)
    }

    fn emit_cover(&mut self) -> bool {
        (**self).emit_cover()
    }

    fn pause(&self, snapshot: &mut Snapshot) {
        (**self).pause(snapshot);
    }
}

/// Two pipes in a row: `first`'s output is `second`'s input. Events come from both.
pub struct Chain<A, B> {
    /// The first stage.
    pub first: A,
    /// The second stage, whose output is the chain's.
    pub second: B,
}

impl<A: Pipe, B: Pipe> Pipe for Chain<A, B> {
    fn output(&self) -> &[u8] {
        self.second.output()
    }

    fn consume_output(&mut self, n: usize) {
        self.second.consume_output(n);
    }

    /// The first stage's space: it offers none while its own output waits for the second.
    fn input_space(&mut self) -> &mut [u8] {
        self.first.input_space()
    }

    fn commit_input(
        &mut self,
        n: usize,
        events: &mut dyn FnMut(Event),
    ) -> Result<(), ProtocolError> {
        self.first.commit_input(n, events)?;
        self.flush(events)
    }

    fn flush(&mut self, events: &mut dyn FnMut(Event)) -> Result<(), ProtocolError> {
        self.first.flush(events)?;
        while !self.first.output().is_empty() {
            let taken = self.second.push(self.first.output(), events)?;
            if taken == 0 {
                break;
            }
            self.first.consume_output(taken);
        }
        Ok(())
    }

    fn partial_input(&self) -> usize {
        self.first.partial_input() + self.first.output().len() + self.second.partial_input()
    }

    fn release_idle_buffers(&mut self) {
        self.first.release_idle_buffers();
        self.second.release_idle_buffers();
    }

    fn emit_cover(&mut self) -> bool {
        self.first.output().is_empty() && self.second.emit_cover()
    }

    fn pause(&self, snapshot: &mut Snapshot) {
        snapshot.tag(Tag::Chain);
        self.first.pause(snapshot);
        self.second.pause(snapshot);
    }
}
