//! The binding helper: the child process that alone holds CAP_NET_RAW. It runs a loop of
//! its own and never returns into the proxy's code. It reads nothing from peers; the proxy's
//! requests are checked as hostile all the same (wire.rs).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrStorage, bind, connect,
    recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use nix::unistd::{Gid, Pid, Uid, getppid, setgid, setgroups, setuid};

use super::wire::{self, Reply};

/// Status bytes of the answer to the arm message.
pub(super) const ARMED: u8 = 0;
pub(super) const NO_CAPABILITY: u8 = 1;
pub(super) const ARM_FAILED: u8 = 2;

/// The child's whole life, from just after `fork`: exits when the proxy goes.
pub(super) fn run(channel: OwnedFd, parent: Pid, ports: &[u16]) -> ! {
    // Killed with the proxy's main thread, also when it died before this line.
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err()
        || getppid() != parent
    {
        std::process::exit(1);
    }
    // Another process of this uid may not read or write this one's memory (/proc/PID/mem,
    // ptrace), nor may a core dump show it.
    if nix::sys::prctl::set_dumpable(false).is_err() {
        std::process::exit(1);
    }
    let _ = nix::sys::prctl::set_name(c"bip324-bind");
    close_other_descriptors(channel.as_raw_fd());
    let Some((uid, gid)) = receive_arm(&channel) else {
        std::process::exit(0);
    };
    let status = match keep_only_net_raw(Uid::from_raw(uid), Gid::from_raw(gid)) {
        Ok(()) => [ARMED, 0, 0, 0, 0],
        Err(Armed::NoCapability) => [NO_CAPABILITY, 0, 0, 0, 0],
        Err(Armed::Failed(errno)) => {
            let [a, b, c, d] = (errno as u32).to_le_bytes();
            [ARM_FAILED, a, b, c, d]
        }
    };
    let fd = channel.as_raw_fd();
    if nix::sys::socket::send(fd, &status, MsgFlags::empty()).is_err() || status[0] != ARMED {
        std::process::exit(1);
    }
    serve(fd, ports)
}

/// Systemd's listening sockets and anything else inherited stay with the proxy.
fn close_other_descriptors(keep: RawFd) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range only closes descriptors; none of them is used in this process
    // again (the helper owns only `keep` and the standard streams).
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, keep - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
    }
}

fn receive_arm(channel: &OwnedFd) -> Option<(u32, u32)> {
    let mut buf = [0u8; wire::ARM_LEN + 1];
    loop {
        match nix::sys::socket::recv(channel.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
            Err(Errno::EINTR) => continue,
            Ok(n) if n == wire::ARM_LEN => return wire::decode_arm(&buf[..n]),
            _ => return None,
        }
    }
}

enum Armed {
    NoCapability,
    Failed(Errno),
}

/// Becomes the proxy's own user when started as root, then holds CAP_NET_RAW alone: in the
/// permitted and effective sets, none inheritable or ambient, none in the bounding set where
/// it may be shrunk, and no new privileges through exec.
fn keep_only_net_raw(uid: Uid, gid: Gid) -> Result<(), Armed> {
    let only: CapsHashSet = [Capability::CAP_NET_RAW].into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted).map_err(|_| Armed::Failed(Errno::EPERM))?;
    if !permitted.contains(&Capability::CAP_NET_RAW) {
        return Err(Armed::NoCapability);
    }
    let failed = |_| Armed::Failed(Errno::last());
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if cap != Capability::CAP_NET_RAW {
                caps::drop(None, CapSet::Bounding, cap).map_err(failed)?;
            }
        }
    }
    if Uid::effective().is_root() && !uid.is_root() {
        nix::sys::prctl::set_keepcaps(true).map_err(Armed::Failed)?;
        setgroups(&[]).map_err(Armed::Failed)?;
        setgid(gid).map_err(Armed::Failed)?;
        setuid(uid).map_err(Armed::Failed)?;
        nix::sys::prctl::set_keepcaps(false).map_err(Armed::Failed)?;
        if setuid(Uid::from_raw(0)).is_ok() {
            return Err(Armed::Failed(Errno::EPERM));
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(failed)?;
    caps::clear(None, CapSet::Inheritable).map_err(failed)?;
    caps::set(None, CapSet::Permitted, &only).map_err(failed)?;
    caps::set(None, CapSet::Effective, &only).map_err(failed)?;
    nix::sys::prctl::set_no_new_privs().map_err(Armed::Failed)?;
    // A change of user resets it: set again.
    nix::sys::prctl::set_dumpable(false).map_err(Armed::Failed)?;
    Ok(())
}

/// Answers requests until the proxy closes its end.
fn serve(fd: RawFd, ports: &[u16]) -> ! {
    loop {
        // One byte more than a request, so that a longer message shows as one.
        let mut buf = [0u8; wire::REQUEST_LEN + 1];
        let received = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            recvmsg::<()>(fd, &mut iov, None, MsgFlags::MSG_TRUNC).map(|m| m.bytes)
        };
        let n = match received {
            Err(Errno::EINTR) => continue,
            // The proxy is gone.
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(n) => n,
        };
        let (id, reply) = match wire::decode_request(&buf[..n.min(buf.len())]) {
            Ok(request) => match wire::check(&request, ports) {
                Ok(()) => match connect_as(request.peer, request.node) {
                    Ok(socket) => (request.id, Ok(socket)),
                    Err(errno) => (request.id, Err(Reply::Failed(errno as i32))),
                },
                Err(refusal) => (request.id, Err(Reply::Refused(refusal))),
            },
            Err(id) => (
                id.unwrap_or(0),
                Err(Reply::Refused(wire::Refusal::Malformed)),
            ),
        };
        let sent = match reply {
            Ok(socket) => {
                let message = wire::encode_reply(id, Reply::Connecting);
                let fds = [socket.as_raw_fd()];
                sendmsg::<()>(
                    fd,
                    &[IoSlice::new(&message)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
            }
            Err(reply) => {
                let message = wire::encode_reply(id, reply);
                nix::sys::socket::send(fd, &message, MsgFlags::MSG_NOSIGNAL)
            }
        };
        if sent.is_err() {
            std::process::exit(0);
        }
    }
}

/// A TCP socket bound to `peer` (IP_TRANSPARENT), its non-blocking connect to `node` under
/// way. When the port is taken here (a local listener on the same port, or a TIME_WAIT of the
/// peer's previous connection), bound to the peer's address alone: the node then sees the
/// peer's address with another port.
fn connect_as(peer: SocketAddr, node: SocketAddr) -> Result<OwnedFd, Errno> {
    let socket = match bound(peer) {
        Err(Errno::EADDRINUSE) => {
            let mut any_port = peer;
            any_port.set_port(0);
            bound(any_port)?
        }
        result => result?,
    };
    match connect(socket.as_raw_fd(), &SockaddrStorage::from(node)) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(socket),
        Err(e) => Err(e),
    }
}

fn bound(addr: SocketAddr) -> Result<OwnedFd, Errno> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::IpTransparent, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}
