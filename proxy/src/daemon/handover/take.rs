//! The successor's side (`--take-over`): asks the running proxy for its sockets and live
//! connections, before the runtime starts.

use std::io::{IoSliceMut, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bip324_control::{Failure, HandOver, Request, SocketRole};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tracing::warn;
use zeroize::Zeroizing;

use super::record::{self, Arrived};
use crate::daemon::listeners::Listeners;

/// Most sockets a proxy hands over: every listener it may have, with room to spare.
const MAX_SOCKETS: usize = 64;

/// What the running proxy handed over.
pub(crate) struct Received {
    pub(crate) listeners: Listeners,
    pub(crate) web: Option<TcpListener>,
    /// The control socket's path when the predecessor made it: the successor removes it when
    /// it stops.
    pub(crate) control_path: Option<PathBuf>,
    pub(crate) predecessor: u32,
    /// Its live connections; `None` when it sent none (another format: it drains them).
    pub(crate) connections: Option<Vec<Arrived>>,
    /// Bytes of their records (state and unsent bytes), and how long the hand-over took.
    pub(crate) state_bytes: usize,
    pub(crate) took: Duration,
}

/// Asks the proxy answering on `control` for its sockets and live connections; it drains
/// those that cannot leave for at most `drain`.
pub(crate) fn receive(control: &Path, drain: Duration) -> anyhow::Result<Received> {
    let started = std::time::Instant::now();
    let mut stream = UnixStream::connect(control).with_context(|| {
        format!(
            "--take-over: no proxy answers on {} (give the running one's --control PATH, or \
             start without --take-over)",
            control.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = Request::take_over(drain.as_secs(), Some(record::FORMAT));
    let mut request = serde_json::to_vec(&request)?;
    request.push(b'\n');
    stream.write_all(&request)?;

    let mut text = vec![0u8; 16 * 1024];
    let (n, fds) = receive_with(&stream, &mut text, MAX_SOCKETS)?;
    text.truncate(n);
    // The document may follow its first bytes, up to its end of line.
    while !text.ends_with(b"\n") {
        let mut byte = [0u8];
        if text.len() > 1 << 20 || (&stream).read(&mut byte)? == 0 {
            break;
        }
        text.push(byte[0]);
    }
    let hand_over: HandOver = match serde_json::from_slice(&text) {
        Ok(hand_over) => hand_over,
        Err(_) => {
            let failure: Failure = serde_json::from_slice(&text).map_err(|e| {
                anyhow!("--take-over: the running proxy answered nonsense ({e}): is it older than --take-over?")
            })?;
            bail!("--take-over: the running proxy said: {}", failure.error);
        }
    };
    if hand_over.sockets.len() != fds.len() {
        bail!(
            "--take-over: the running proxy listed {} sockets but sent {}",
            hand_over.sockets.len(),
            fds.len()
        );
    }
    let live = hand_over.connections == Some(record::FORMAT);
    let mut received = sort(hand_over, fds)?;
    if live {
        let (connections, bytes) = connections(&stream);
        received.connections = Some(connections);
        received.state_bytes = bytes;
    }
    received.took = started.elapsed();
    Ok(received)
}

/// Reads into `buf` with the descriptors (at most `max`) that come with its first byte.
fn receive_with(
    stream: &UnixStream,
    buf: &mut [u8],
    max: usize,
) -> anyhow::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("--take-over: no answer from the running proxy")?;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > max {
        bail!("--take-over: the running proxy sent more than {max} sockets at once");
    }
    Ok((message.bytes, fds))
}

/// Reads live connections until the predecessor's empty record, and the bytes they took. One
/// that cannot be read is closed; a broken stream ends the reading, and those read so far
/// are carried on.
fn connections(stream: &UnixStream) -> (Vec<Arrived>, usize) {
    let (mut arrived, mut bytes) = (Vec::new(), 0);
    loop {
        match connection(stream, &mut bytes) {
            Ok(Some(Ok(connection))) => arrived.push(connection),
            Ok(Some(Err(why))) => warn!("a live connection handed over is closed: {why}"),
            Ok(None) => break,
            Err(e) => {
                warn!(
                    "the predecessor stopped sending live connections ({e:#}); carrying on the \
                     {} received",
                    arrived.len()
                );
                break;
            }
        }
    }
    (arrived, bytes)
}

/// One connection: `None` at the end; the inner error when this one cannot be carried on.
fn connection(
    stream: &UnixStream,
    bytes_read: &mut usize,
) -> anyhow::Result<Option<Result<Arrived, String>>> {
    let mut len = [0u8; 4];
    let (n, fds) = receive_with(stream, &mut len, 2)?;
    if n == 0 {
        bail!("end of stream");
    }
    (&mut &*stream).read_exact(&mut len[n..])?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 {
        return Ok(None);
    }
    if len > record::MAX_LEN {
        bail!("a record of {len} bytes");
    }
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    (&mut &*stream).read_exact(&mut bytes)?;
    *bytes_read += len;
    let Ok(sockets) = <[OwnedFd; 2]>::try_from(fds) else {
        return Ok(Some(Err("it came without its two sockets".into())));
    };
    Ok(Some(record::arrive(&bytes, sockets)))
}

fn sort(hand_over: HandOver, fds: Vec<OwnedFd>) -> anyhow::Result<Received> {
    let mut received = Received {
        listeners: Listeners {
            tcp: Vec::new(),
            inbound: Vec::new(),
            socks5: Vec::new(),
            control: None,
            stored: Vec::new(),
        },
        web: None,
        control_path: hand_over.control_path,
        predecessor: hand_over.pid,
        connections: None,
        state_bytes: 0,
        took: Duration::ZERO,
    };
    let tcp = |fd: OwnedFd| -> std::io::Result<TcpListener> {
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    for (role, fd) in hand_over.sockets.into_iter().zip(fds) {
        match role {
            SocketRole::Redirect => received.listeners.tcp.push(tcp(fd)?),
            SocketRole::Inbound => received.listeners.inbound.push(tcp(fd)?),
            SocketRole::Socks5 => received.listeners.socks5.push(tcp(fd)?),
            SocketRole::Web => received.web = Some(tcp(fd)?),
            SocketRole::Control => {
                let listener = UnixListener::from(fd);
                listener.set_nonblocking(true)?;
                received.listeners.control = Some(listener);
            }
        }
    }
    Ok(received)
}
