//! The one thread allowed to bind sockets to addresses that are not this host's
//! (IP_TRANSPARENT, which needs CAP_NET_RAW): inbound mode connects to the node as the peer.
//!
//! Capabilities belong to threads. When a proxy started as root switches user, every thread
//! loses them; this thread alone keeps CAP_NET_RAW (and nothing else), and hands out bound
//! sockets. The threads that read peers' bytes never hold a capability.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::mpsc;

use anyhow::Context as _;
use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};
use tokio::net::TcpSocket;

type Reply = tokio::sync::oneshot::Sender<io::Result<OwnedFd>>;

/// Hands out TCP sockets bound to any address.
#[derive(Clone)]
pub struct Binder {
    requests: mpsc::Sender<(SocketAddr, Reply)>,
}

/// Started before the switch of user; `arm` once it happened.
pub struct Unarmed {
    binder: Binder,
    go: mpsc::Sender<()>,
    ready: mpsc::Receiver<Result<(), String>>,
}

impl Binder {
    /// Starts the thread; it serves nothing until armed. Call it before any other thread
    /// exists: a process that is not root (systemd's `AmbientCapabilities=CAP_NET_RAW`) then
    /// drops every capability from the calling thread, so threads made later have none.
    pub fn start() -> anyhow::Result<Unarmed> {
        let (requests, incoming) = mpsc::channel::<(SocketAddr, Reply)>();
        let (go, armed) = mpsc::channel();
        let (report, ready) = mpsc::channel();
        std::thread::Builder::new()
            .name("transparent-bind".into())
            .spawn(move || {
                // Survive the switch of user with the permitted set intact.
                let kept = caps::securebits::set_keepcaps(true).map_err(|e| e.to_string());
                if armed.recv().is_err() {
                    return;
                }
                let _ = report.send(kept.and_then(|()| keep_only_net_raw()));
                for (addr, reply) in incoming {
                    let _ = reply.send(bound(addr));
                }
            })
            .context("cannot start the inbound binding thread")?;
        if !nix::unistd::Uid::effective().is_root() {
            for set in [
                CapSet::Ambient,
                CapSet::Effective,
                CapSet::Inheritable,
                CapSet::Permitted,
            ] {
                caps::clear(None, set).context("cannot drop capabilities")?;
            }
        }
        Ok(Unarmed {
            binder: Binder { requests },
            go,
            ready,
        })
    }

    /// A TCP socket bound to `addr`, ready to connect.
    pub async fn bound(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || io::Error::other("the inbound binding thread is gone");
        self.requests.send((addr, reply)).map_err(|_| gone())?;
        let fd = answer.await.map_err(|_| gone())??;
        // SAFETY: a TCP socket just made by `bound`, owned by nothing else.
        Ok(unsafe { TcpSocket::from_raw_fd(fd.into_raw_fd()) })
    }
}

impl Unarmed {
    /// The user switch is done (or there was none): keep CAP_NET_RAW on the thread, drop
    /// everything else from it. Fails when the capability is not there to keep.
    pub fn arm(self) -> anyhow::Result<Binder> {
        self.go
            .send(())
            .ok()
            .context("the inbound binding thread is gone")?;
        self.ready
            .recv()
            .context("the inbound binding thread is gone")?
            .map_err(|e| {
                anyhow::anyhow!(
                    "inbound mode needs CAP_NET_RAW to connect to the node as the peer: {e} \
                     (start the proxy as root, or give it AmbientCapabilities=CAP_NET_RAW)"
                )
            })?;
        Ok(self.binder)
    }
}

fn keep_only_net_raw() -> Result<(), String> {
    let only: CapsHashSet = [Capability::CAP_NET_RAW].into_iter().collect();
    let held = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    if !held.contains(&Capability::CAP_NET_RAW) {
        return Err("the capability is not permitted to this process".into());
    }
    caps::set(None, CapSet::Permitted, &only)
        .and_then(|()| caps::set(None, CapSet::Effective, &only))
        .map_err(|e| e.to_string())
}

/// A socket bound to `addr`; to its address alone when the port is taken here (a local
/// listener on the same port, or a TIME_WAIT of the peer's previous connection): the node then
/// sees the peer's address with another port.
fn bound(addr: SocketAddr) -> io::Result<OwnedFd> {
    match bind_to(addr) {
        Err(nix::errno::Errno::EADDRINUSE) => {
            let mut any_port = addr;
            any_port.set_port(0);
            Ok(bind_to(any_port)?)
        }
        result => Ok(result?),
    }
}

fn bind_to(addr: SocketAddr) -> nix::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::IpTransparent, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    Ok(fd)
}
