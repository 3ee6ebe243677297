//! The successor's side (`--take-over`): asks the running proxy for its sockets, before the
//! runtime starts.

use std::io::{IoSliceMut, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bip324_control::{Failure, HandOver, Request, SocketRole};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

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
}

/// Asks the proxy answering on `control` for its sockets; it drains its own connections for
/// at most `drain`.
pub(crate) fn receive(control: &Path, drain: Duration) -> anyhow::Result<Received> {
    let mut stream = UnixStream::connect(control).with_context(|| {
        format!(
            "--take-over: no proxy answers on {} (give the running one's --control PATH, or \
             start without --take-over)",
            control.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = serde_json::to_vec(&Request::take_over(drain.as_secs()))?;
    request.push(b'\n');
    stream.write_all(&request)?;

    let mut text = vec![0u8; 16 * 1024];
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut text)];
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
        if message.flags.contains(MsgFlags::MSG_CTRUNC) {
            bail!("--take-over: the running proxy sent more than {MAX_SOCKETS} sockets");
        }
        (message.bytes, fds)
    };
    text.truncate(n);
    // The document may follow its first bytes.
    (&mut stream).take(1 << 20).read_to_end(&mut text)?;
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
    sort(hand_over, fds)
}

fn sort(hand_over: HandOver, fds: Vec<OwnedFd>) -> anyhow::Result<Received> {
    let mut received = Received {
        listeners: Listeners {
            tcp: Vec::new(),
            inbound: Vec::new(),
            socks5: Vec::new(),
            control: None,
        },
        web: None,
        control_path: hand_over.control_path,
        predecessor: hand_over.pid,
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
