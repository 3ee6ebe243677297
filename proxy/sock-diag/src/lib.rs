//! Who listens on a local TCP address.
//!
//! The kernel's sock_diag netlink interface (what `ss` uses) reports each listening socket's
//! owner (the uid that created it) and inode; the processes holding that inode are found
//! through `/proc/*/fd`, which only shows other users' processes to root. Both are read in the
//! caller's network namespace.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// The first port any local user may bind (`net.ipv4.ip_unprivileged_port_start`, per
/// network namespace; 1024 by default): whoever holds such a port while the proxy is down
/// receives what is redirected to it.
pub fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// A listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The address it is bound to (`0.0.0.0` / `::` for every address).
    pub local: SocketAddr,
    /// The uid that created the socket (for systemd's socket units: root).
    pub uid: u32,
    pub inode: u64,
    /// The processes holding it, as far as this process may see.
    pub holders: Vec<Process>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
}

impl Listener {
    /// "uid 65534, bip324-proxy (pid 42)": who it is, for sentences.
    pub fn describe(&self) -> String {
        let mut text = format!("a socket of uid {}", self.uid);
        if !self.holders.is_empty() {
            let holders: Vec<String> = self
                .holders
                .iter()
                .map(|p| format!("{} (pid {})", p.name, p.pid))
                .collect();
            text.push_str(&format!(" held by {}", holders.join(", ")));
        }
        text
    }
}

/// The listening sockets that accept connections to `addr`: bound to it exactly, or to the
/// wildcard address of its family (`[::]` also takes IPv4 unless it is IPv6-only, which
/// sock_diag does not say; it is reported for IPv4 addresses too).
pub fn listeners_for(addr: SocketAddr) -> io::Result<Vec<Listener>> {
    let mut found = Vec::new();
    let families: &[u8] = match addr {
        SocketAddr::V4(_) => &[AF_INET, AF_INET6],
        SocketAddr::V6(_) => &[AF_INET6],
    };
    for &family in families {
        for (local, uid, inode) in dump_listeners(family)? {
            if local.port() != addr.port() {
                continue;
            }
            if accepts(local.ip(), addr.ip()) {
                found.push(Listener {
                    local,
                    uid,
                    inode,
                    holders: holders_of(inode),
                });
            }
        }
    }
    Ok(found)
}

fn accepts(listening: IpAddr, destination: IpAddr) -> bool {
    listening == destination
        || listening.is_unspecified()
        || matches!((listening, destination), (IpAddr::V6(l), IpAddr::V4(d)) if l.to_ipv4_mapped() == Some(d))
}

/// Every listening TCP socket of `family`: address, owner uid, inode.
fn dump_listeners(family: u8) -> io::Result<Vec<(SocketAddr, u32, u64)>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut found = Vec::new();
    let mut receive = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&receive[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let h = &response.header;
                    found.push((
                        SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
                        h.uid,
                        u64::from(h.inode),
                    ));
                }
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// The processes with `socket:[inode]` among their open files.
fn holders_of(inode: u64) -> Vec<Process> {
    let target = format!("socket:[{inode}]");
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for entry in processes.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue; // gone, or not ours to see
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|n| n.trim().to_string())
                .unwrap_or_default();
            holders.push(Process { pid, name });
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener_with_our_uid_and_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let found = listeners_for(addr).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        // SAFETY: getuid has no preconditions and cannot fail.
        assert_eq!(found[0].uid, unsafe { libc::getuid() });
        assert!(
            found[0].holders.iter().any(|p| p.pid == std::process::id()),
            "{found:?}"
        );
        drop(listener);
        assert!(listeners_for(addr).unwrap().is_empty());
    }

    #[test]
    fn a_wildcard_listener_accepts_for_loopback() {
        let listener = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let v4 = listeners_for(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        let v6 = listeners_for(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).unwrap();
        assert_eq!(v4.len(), 1, "{v4:?}");
        assert_eq!(v6.len(), 1, "{v6:?}");
    }
}
