//! Listening sockets: bound here, or inherited from systemd socket activation.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, bail};
use nix::sys::socket::{SockType, getsockopt, sockopt};
use tokio::net::{TcpListener, TcpSocket};
use tracing::warn;

use super::config::DEFAULT_LISTEN;

/// First file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Listen queue length: room for a burst of clients (a node opening its outbound slots, or a
/// test's thousand) while the accept loop catches up. The kernel caps it at
/// `net.core.somaxconn`, as systemd's default `Backlog=` does.
const BACKLOG: u32 = 4096;

/// The sockets the proxy accepts on.
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    /// A Unix socket from systemd, for the control endpoint.
    pub control: Option<std::os::unix::net::UnixListener>,
}

/// Opens every listener: systemd's sockets, then `--listen` addresses; the defaults only when
/// neither gave any. A default address that cannot be bound (IPv6 disabled, say) is skipped
/// with a warning as long as another one works; an explicit one is an error.
pub fn open(explicit: &[SocketAddr]) -> anyhow::Result<Listeners> {
    let mut listeners = Vec::new();
    let mut control = None;
    for fd in systemd_fds()? {
        check_listening(&fd)?;
        if is_unix(&fd) {
            let unix = std::os::unix::net::UnixListener::from(fd);
            unix.set_nonblocking(true)?;
            control = Some(unix);
        } else {
            let std_listener = StdListener::from(fd);
            std_listener.set_nonblocking(true)?;
            listeners.push(TcpListener::from_std(std_listener)?);
        }
    }
    for addr in explicit {
        let listener = bind(*addr).with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    if listeners.is_empty() {
        for addr in DEFAULT_LISTEN {
            let addr: SocketAddr = addr.parse().expect("valid default address");
            match bind(addr) {
                Ok(listener) => listeners.push(listener),
                Err(e) => warn!("cannot listen on {addr}: {e}; continuing without it"),
            }
        }
        if listeners.is_empty() {
            bail!(
                "could not listen on any default address ({}); pass --listen ADDR",
                DEFAULT_LISTEN.join(", ")
            );
        }
    }
    Ok(Listeners {
        tcp: listeners,
        control,
    })
}

/// Binds like `TcpListener::bind` (with `SO_REUSEADDR`, so a restart does not wait out
/// TIME_WAIT), but with a listen queue of [`BACKLOG`] instead of tokio's 1024.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn is_unix(fd: &OwnedFd) -> bool {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    use std::os::fd::AsRawFd;
    getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .is_ok_and(|addr| addr.family() == Some(AddressFamily::Unix))
}

/// The descriptors systemd passed to this very process, if any.
fn systemd_fds() -> anyhow::Result<Vec<OwnedFd>> {
    let (Ok(pid), Ok(count)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (inherited through exec): not ours to take.
        return Ok(Vec::new());
    }
    let count: RawFd = count
        .parse()
        .with_context(|| format!("LISTEN_FDS={count:?} is not a number"))?;
    Ok((LISTEN_FDS_START..LISTEN_FDS_START + count)
        // SAFETY: systemd hands these descriptors to this process (LISTEN_PID matched) and
        // nothing else in the process owns them; each is wrapped exactly once.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

fn check_listening(fd: &OwnedFd) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let is_stream = getsockopt(fd, sockopt::SockType).map(|t| t == SockType::Stream);
    let listening = getsockopt(fd, sockopt::AcceptConn);
    if !matches!((is_stream, listening), (Ok(true), Ok(true))) {
        bail!(
            "file descriptor {} from systemd is not a listening stream socket; \
             check ListenStream= in bip324-proxy.socket",
            fd.as_raw_fd()
        );
    }
    Ok(())
}
