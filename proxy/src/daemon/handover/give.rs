//! The running proxy's side: what it offers a successor, and the hand-over itself.

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bip324_control::{HandOver, SocketRole, VERSION};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio_util::sync::CancellationToken;

/// The sockets this proxy would hand over (copies of its listeners' descriptors), and whether
/// it has.
pub(crate) struct Offer {
    sockets: Mutex<Vec<(SocketRole, OwnedFd)>>,
    control_path: Option<PathBuf>,
    /// Cancelled once handed over: the proxy stops accepting and drains.
    taken: CancellationToken,
    drain: Mutex<Duration>,
}

impl Offer {
    /// `sockets`: each listener's role and descriptor, copied here (`dup`) so that handing
    /// them over does not depend on the listeners' own lifetimes. `control_path`: the control
    /// socket's path when this proxy made it.
    pub(crate) fn new(
        sockets: &[(SocketRole, BorrowedFd<'_>)],
        control_path: Option<PathBuf>,
    ) -> std::io::Result<Offer> {
        let sockets = sockets
            .iter()
            .map(|(role, fd)| Ok((*role, fd.try_clone_to_owned()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Offer {
            sockets: Mutex::new(sockets),
            control_path,
            taken: CancellationToken::new(),
            drain: Mutex::new(Duration::ZERO),
        })
    }

    /// Cancelled once a successor holds the sockets.
    pub(crate) fn taken(&self) -> CancellationToken {
        self.taken.clone()
    }

    /// How long the successor lets this proxy finish its connections.
    pub(crate) fn drain(&self) -> Duration {
        *self.drain.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers a `take-over` request on `stream`: checks who asks, sends the document and the
    /// sockets in one message, and marks the proxy taken over. Blocking, but brief: a few
    /// hundred bytes into a Unix socket.
    pub(crate) fn hand_over(
        &self,
        stream: &std::os::unix::net::UnixStream,
        drain_seconds: u64,
    ) -> Result<u32, String> {
        let successor = super::peer_of_own_user(stream)?;
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if sockets.is_empty() {
            return Err("refused: this proxy was taken over already".into());
        }
        let document = HandOver {
            version: VERSION,
            pid: std::process::id(),
            sockets: sockets.iter().map(|(role, _)| *role).collect(),
            control_path: self.control_path.clone(),
        };
        let mut text = serde_json::to_vec(&document).map_err(|e| e.to_string())?;
        text.push(b'\n');
        let fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
            .map_err(|e| e.to_string())?;
        let rights = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&text)],
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| format!("cannot send the sockets: {e}"))?;
        // The descriptors went with the first byte; the rest of the document follows.
        let mut writer = stream;
        writer
            .write_all(&text[sent..])
            .map_err(|e| format!("cannot send the hand-over: {e}"))?;
        *self.drain.lock().unwrap_or_else(PoisonError::into_inner) =
            Duration::from_secs(drain_seconds);
        // The successor holds them now; this proxy keeps no copy beyond its listeners, which
        // close as its accept loops end.
        sockets.clear();
        self.taken.cancel();
        Ok(successor)
    }
}
