//! Inbound mode connects to the node as each peer: a socket bound to the peer's address
//! (IP_TRANSPARENT), which takes CAP_NET_RAW. That capability lives in a separate small
//! process, the binding helper, forked by `main` while the proxy still has one thread and no
//! runtime. Threads share memory, so a capability kept on a thread of the proxy would be
//! within reach of any bug in the code that reads peers' bytes; a process is a boundary.
//!
//! The helper keeps CAP_NET_RAW alone, is not dumpable (no other process of its uid may open
//! its memory or trace it), dies with the proxy, and answers one kind of request over a
//! `SOCK_SEQPACKET` socketpair: "connect from the peer's address to the node", on loopback at
//! one of `--inbound-ports` only (wire.rs). It sends back the socket with its connect under
//! way (`SCM_RIGHTS`); the proxy waits for the connect. The proxy itself then holds no
//! capability.

mod helper;
pub(crate) mod wire;

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};
use caps::{CapSet, Capability};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use nix::unistd::{ForkResult, Pid, fork};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// Hands out TCP sockets connected (or connecting) to the node from any address.
#[derive(Clone)]
pub(crate) struct Binder {
    inner: Arc<Inner>,
}

struct Inner {
    /// One request at a time; replies carry the request's id, so that one left behind by a
    /// caller that gave up is told apart and dropped.
    channel: tokio::sync::Mutex<Channel>,
    next_id: AtomicU32,
}

enum Channel {
    /// Not yet registered with the runtime (the binder is made before it exists).
    Idle(OwnedFd),
    Ready(AsyncFd<OwnedFd>),
}

/// The helper, forked; `arm` once the proxy gave up its privileges.
pub(crate) struct Unarmed {
    channel: OwnedFd,
    helper: Pid,
}

impl Binder {
    /// Forks the binding helper, which may connect only to loopback at `ports`. Call it while
    /// the process has one thread (before the runtime); fails otherwise. The proxy drops
    /// CAP_NET_RAW at once; its other privileges go once its sockets are open.
    pub(crate) fn start(ports: &[u16]) -> anyhow::Result<Unarmed> {
        let threads = std::fs::read_dir("/proc/self/task").map(Iterator::count);
        if threads.as_ref().is_ok_and(|n| *n != 1) {
            bail!("the inbound binding helper must be forked while the proxy has one thread");
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("cannot make the inbound binding helper's socketpair")?;
        let parent = nix::unistd::getpid();
        // SAFETY: the process has one thread (checked above), so the child may run any code.
        match unsafe { fork() }.context("cannot fork the inbound binding helper")? {
            ForkResult::Child => {
                drop(ours);
                helper::run(theirs, parent, ports)
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                for set in [
                    CapSet::Ambient,
                    CapSet::Inheritable,
                    CapSet::Effective,
                    CapSet::Permitted,
                ] {
                    caps::drop(None, set, Capability::CAP_NET_RAW)
                        .context("cannot drop CAP_NET_RAW")?;
                }
                Ok(Unarmed {
                    channel: ours,
                    helper: child,
                })
            }
        }
    }

    /// A TCP stream to `node` from `peer` (or from the peer's address with another port when
    /// its port is taken here).
    pub(crate) async fn connect(
        &self,
        peer: SocketAddr,
        node: SocketAddr,
    ) -> io::Result<TcpStream> {
        let fd = self.request(peer, node).await?;
        let stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        Ok(stream)
    }

    async fn request(&self, peer: SocketAddr, node: SocketAddr) -> io::Result<OwnedFd> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let request = wire::encode_request(&wire::Request { id, peer, node });
        let mut channel = self.inner.channel.lock().await;
        if let Channel::Idle(fd) = &*channel {
            let fd = fd.try_clone()?;
            // SAFETY: `fd` is a descriptor of our own, neither replaced nor closed while the
            // AsyncFd owns it.
            *channel = Channel::Ready(unsafe { AsyncFd::register(fd)? });
        }
        let Channel::Ready(channel) = &*channel else {
            unreachable!("made ready above")
        };
        loop {
            let mut ready = channel.writable().await?;
            let sent = ready.try_io(|fd| {
                sendmsg::<()>(
                    fd.as_raw_fd(),
                    &[IoSlice::new(&request)],
                    &[],
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(result) => {
                    result.map_err(gone)?;
                    break;
                }
                Err(_would_block) => continue,
            }
        }
        loop {
            let mut ready = channel.readable().await?;
            let Ok(received) = ready.try_io(|fd| receive(fd.as_raw_fd())) else {
                continue;
            };
            let (bytes, message, fd) = received.map_err(gone)?;
            if bytes == 0 {
                return Err(gone(io::ErrorKind::UnexpectedEof.into()));
            }
            let Some((reply_id, reply)) = wire::decode_reply(&message[..bytes]) else {
                return Err(io::Error::other(
                    "the inbound binding helper sent a malformed reply",
                ));
            };
            if reply_id != id {
                // The answer to a request whose caller gave up: its socket closes here.
                continue;
            }
            return match (reply, fd) {
                (wire::Reply::Connecting, Some(fd)) => Ok(fd),
                (wire::Reply::Connecting, None) => Err(io::Error::other(
                    "the inbound binding helper sent no socket",
                )),
                (wire::Reply::Refused(refusal), _) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the inbound binding helper refused: {refusal}"),
                )),
                (wire::Reply::Failed(errno), _) => Err(io::Error::from_raw_os_error(errno)),
            };
        }
    }
}

fn gone(e: io::Error) -> io::Error {
    io::Error::other(format!("the inbound binding helper is gone: {e}"))
}

/// One reply: its length (0 when the helper closed its end), its bytes, and the socket it
/// carries, if any (any more than one are closed).
fn receive(fd: RawFd) -> io::Result<(usize, [u8; wire::REPLY_LEN + 1], Option<OwnedFd>)> {
    let mut message = [0u8; wire::REPLY_LEN + 1];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut message)];
    let received = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    let bytes = received.bytes;
    let mut socket = None;
    for cmsg in received.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if socket.is_none() {
                    socket = Some(owned);
                }
            }
        }
    }
    Ok((bytes, message, socket))
}

impl Unarmed {
    /// The proxy gave up its privileges (or had none): the helper becomes the proxy's user
    /// if it was root, and keeps CAP_NET_RAW alone. Fails when the capability is not there.
    pub(crate) fn arm(self) -> anyhow::Result<Binder> {
        let fd = self.channel.as_raw_fd();
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let arm = wire::encode_arm(uid.as_raw(), gid.as_raw());
        nix::sys::socket::send(fd, &arm, MsgFlags::MSG_NOSIGNAL)
            .context("the inbound binding helper is gone")?;
        nix::sys::socket::setsockopt(
            &self.channel,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::from(libc::timeval {
                tv_sec: 10,
                tv_usec: 0,
            }),
        )
        .context("cannot wait for the inbound binding helper")?;
        let mut status = [0u8; 6];
        let n = loop {
            match nix::sys::socket::recv(fd, &mut status, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                result => break result.context("the inbound binding helper did not answer")?,
            }
        };
        match (n, status[0]) {
            (5, helper::ARMED) => {}
            (5, helper::NO_CAPABILITY) => bail!(
                "inbound mode needs CAP_NET_RAW to connect to the node as the peer: the \
                 capability is not permitted to this process (start the proxy as root, or give \
                 it AmbientCapabilities=CAP_NET_RAW)"
            ),
            (5, helper::ARM_FAILED) => {
                let errno = u32::from_le_bytes([status[1], status[2], status[3], status[4]]);
                let errno = nix::errno::Errno::from_raw(errno as i32);
                bail!("the inbound binding helper cannot keep CAP_NET_RAW alone: {errno}")
            }
            _ => bail!("the inbound binding helper failed to start"),
        }
        tracing::debug!(
            helper = self.helper.as_raw(),
            "inbound binding helper ready"
        );
        nix::fcntl::fcntl(
            &self.channel,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .context("cannot set up the inbound binding helper's socket")?;
        Ok(Binder {
            inner: Arc::new(Inner {
                channel: tokio::sync::Mutex::new(Channel::Idle(self.channel)),
                next_id: AtomicU32::new(1),
            }),
        })
    }
}
