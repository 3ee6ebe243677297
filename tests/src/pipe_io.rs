//! Drivers of one protocol `Pipe` over a socket, for endpoints (the interoperability test's
//! initiator, the benchmark's v2 node): one blocking, one tokio. The proxy's own driver, which
//! relays two pipes between two sockets, is the daemon's relay.

use std::io;

use bip324_protocol::{Pipe, ProtocolError};

fn protocol(e: ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Pushes all of `bytes` through `pipe`, moving its output to `out` whenever it must drain.
pub fn push_all(pipe: &mut impl Pipe, mut bytes: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let taken = pipe.push(bytes, &mut |_| {}).map_err(protocol)?;
        bytes = &bytes[taken..];
        out.extend_from_slice(pipe.output());
        let len = pipe.output().len();
        pipe.consume_output(len);
        if bytes.is_empty() {
            return Ok(());
        }
    }
}

pub mod blocking {
    use std::io::{self, Read, Write};

    use bip324_protocol::Pipe;

    use super::protocol;

    /// Feeds `bytes` through `pipe`, at most `chunk` at a time, writing its output to `sink`.
    pub fn send(
        pipe: &mut impl Pipe,
        bytes: &[u8],
        chunk: usize,
        sink: &mut impl Write,
    ) -> io::Result<()> {
        let mut fed = 0;
        while fed < bytes.len() {
            let space = pipe.input_space();
            let n = space.len().min(chunk.max(1)).min(bytes.len() - fed);
            space[..n].copy_from_slice(&bytes[fed..fed + n]);
            fed += n;
            pipe.commit_input(n, &mut |_| {}).map_err(protocol)?;
            sink.write_all(pipe.output())?;
            let len = pipe.output().len();
            pipe.consume_output(len);
        }
        Ok(())
    }

    /// Reads once from `source` (at most `chunk` bytes) into `pipe` and appends its output to
    /// `out`; `Ok(false)` at the end of the stream.
    pub fn receive(
        pipe: &mut impl Pipe,
        source: &mut impl Read,
        chunk: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let space = pipe.input_space();
        let n = space.len().min(chunk.max(1));
        let n = source.read(&mut space[..n])?;
        if n == 0 {
            return Ok(false);
        }
        pipe.commit_input(n, &mut |_| {}).map_err(protocol)?;
        out.extend_from_slice(pipe.output());
        let len = pipe.output().len();
        pipe.consume_output(len);
        Ok(true)
    }
}

pub mod tokio {
    use std::io;

    use bip324_protocol::Pipe;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::protocol;

    /// Feeds `bytes` through `pipe`, writing its output to `sink` as it comes.
    pub async fn send(
        pipe: &mut impl Pipe,
        bytes: &[u8],
        sink: &mut (impl AsyncWrite + Unpin),
    ) -> io::Result<()> {
        let mut fed = 0;
        while fed < bytes.len() {
            fed += pipe.push(&bytes[fed..], &mut |_| {}).map_err(protocol)?;
            sink.write_all(pipe.output()).await?;
            let len = pipe.output().len();
            pipe.consume_output(len);
        }
        Ok(())
    }

    /// Reads once from `source` into `pipe` and appends its output to `out`; `Ok(false)` at
    /// the end of the stream.
    pub async fn receive(
        pipe: &mut impl Pipe,
        source: &mut (impl AsyncRead + Unpin),
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let n = source.read(pipe.input_space()).await?;
        if n == 0 {
            return Ok(false);
        }
        pipe.commit_input(n, &mut |_| {}).map_err(protocol)?;
        out.extend_from_slice(pipe.output());
        let len = pipe.output().len();
        pipe.consume_output(len);
        Ok(true)
    }
}
