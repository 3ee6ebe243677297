//! Listening sockets: bound here, or inherited from systemd socket activation. Opened before
//! the async runtime exists (privileged ports need privileges the proxy then gives up), so
//! these are std sockets, handed to tokio once it runs.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use anyhow::{Context, bail};

use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, sockopt};
use tracing::warn;

use super::config::DEFAULT_LISTEN;

/// Whether this proxy will serve inbound connections: `--inbound`, or an inbound socket from
/// systemd.
pub(crate) fn inbound_wanted(explicit: &[SocketAddr]) -> bool {
    let ours = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    !explicit.is_empty()
        || (ours
            && std::env::var("LISTEN_FDNAMES")
                .is_ok_and(|names| names.split(':').any(|n| n == INBOUND_FD_NAME)))
}

/// The `FileDescriptorName=` of inbound listening sockets in a socket unit.
const INBOUND_FD_NAME: &str = "inbound";
/// The `FileDescriptorName=` of SOCKS5 listening sockets (bip324-proxy-socks5.socket).
const SOCKS5_FD_NAME: &str = "socks5";

/// First file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// More than any socket unit of the package passes (each has a few), plus what the unit's
/// file descriptor store may hold (`$FDSTORE`): a larger `LISTEN_FDS` is not systemd's.
fn max_listen_fds() -> RawFd {
    64 + super::handover::store::capacity() as RawFd
}

/// Listen queue length: room for a burst of clients (a node opening its outbound slots, or a
/// test's thousand) while the accept loop catches up. The kernel caps it at
/// `net.core.somaxconn`, as systemd's default `Backlog=` does.
const BACKLOG: u32 = 4096;

/// The sockets the proxy accepts on.
pub(crate) struct Listeners {
    pub tcp: Vec<TcpListener>,
    /// For inbound mode: peers' connections to the local node.
    pub inbound: Vec<TcpListener>,
    /// The SOCKS5 front end.
    pub socks5: Vec<TcpListener>,
    /// A Unix socket from systemd, for the control endpoint.
    pub control: Option<UnixListener>,
    /// Live connections' parts a previous process left in systemd's store, by name.
    pub stored: Vec<(OwnedFd, String)>,
}

/// Opens every listener: systemd's sockets (those named `inbound` or `socks5` by
/// `FileDescriptorName=` are inbound or SOCKS5 ones), then `--listen`, `--inbound` and
/// `--socks5` addresses; the default outbound ones
/// only when none of these gave any. A default address that does not exist on this host (IPv6 disabled, say)
/// is skipped with a warning as long as another one works. An address that another program
/// holds is always fatal: the redirect would hand the group's connections to that program.
pub(crate) fn open(
    explicit: &[SocketAddr],
    inbound_addrs: &[SocketAddr],
    socks5_addrs: &[SocketAddr],
) -> anyhow::Result<Listeners> {
    let mut listeners = Vec::new();
    let mut inbound = Vec::new();
    let mut socks5 = Vec::new();
    let mut control = None;
    let mut stored = Vec::new();
    for (fd, name) in systemd_fds()? {
        if let Some(part) = name
            .as_ref()
            .filter(|n| super::handover::store::is_stored(n))
        {
            stored.push((fd, part.clone()));
        } else if is_unix(&fd) {
            let unix = UnixListener::from(fd);
            unix.set_nonblocking(true)?;
            control = Some(unix);
        } else {
            let listener = TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            match name.as_deref() {
                Some(INBOUND_FD_NAME) => inbound.push(listener),
                Some(SOCKS5_FD_NAME) => socks5.push(listener),
                _ => listeners.push(listener),
            }
        }
    }
    for addr in explicit {
        listeners.push(bind(*addr).map_err(|e| bind_error(*addr, &e))?);
        warn_if_unprivileged(*addr);
    }
    for addr in inbound_addrs {
        inbound.push(bind(*addr).map_err(|e| bind_error(*addr, &e))?);
    }
    for addr in socks5_addrs {
        socks5.push(bind(*addr).map_err(|e| bind_error(*addr, &e))?);
    }
    for addr in socks5.iter().filter_map(|l| l.local_addr().ok()) {
        if !addr.ip().is_loopback() {
            warn!(
                "the SOCKS5 front end on {addr} is reachable beyond this host: anyone who can \
                 connect may use the proxy to reach Bitcoin nodes under this host's address; \
                 prefer 127.0.0.1"
            );
        }
    }
    if listeners.is_empty() && inbound.is_empty() && socks5.is_empty() {
        for addr in DEFAULT_LISTEN {
            let addr: SocketAddr = addr.parse().expect("valid default address");
            match bind(addr) {
                Ok(listener) => listeners.push(listener),
                Err(e) if is_missing_address(&e) => {
                    warn!("cannot listen on {addr}: {e}; continuing without it");
                }
                Err(e) => return Err(bind_error(addr, &e)),
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
        inbound,
        socks5,
        control,
        stored,
    })
}

/// The address family or address is not there (IPv6 disabled): nobody else can hold it.
fn is_missing_address(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
    )
}

/// A sentence for a failed bind that says what to do, naming the holder of a taken address.
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            let holder = match bip324_sock_diag::listeners_for(addr) {
                Ok(found) if !found.is_empty() => found
                    .iter()
                    .map(bip324_sock_diag::Listener::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => format!(
                    "another program (`ss -ltnp 'sport = {}'` names it)",
                    addr.port()
                ),
            };
            anyhow::anyhow!(
                "cannot listen on {addr}: it is taken by {holder}. Refusing to start: the \
                 redirect would hand the group's connections to that program. Stop it, or move \
                 the proxy and the redirect together (--listen, and bip324-redirect enable \
                 --proxy-port)"
            )
        }
        Some(libc::EACCES) => anyhow::anyhow!(
            "cannot listen on {addr}: port {} is privileged. Start the proxy as root (it \
             switches to --user once its sockets are open), through bip324-proxy.socket, or \
             with CAP_NET_BIND_SERVICE",
            addr.port()
        ),
        _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
    }
}

/// Any user may bind ports from `net.ipv4.ip_unprivileged_port_start` (1024 by default) on:
/// while the proxy is down, one of them could take such a port and receive the plaintext.
fn warn_if_unprivileged(addr: SocketAddr) {
    let start = bip324_sock_diag::unprivileged_port_start();
    if u32::from(addr.port()) >= start {
        warn!(
            "listening on {addr}, a port any local user may bind \
             (net.ipv4.ip_unprivileged_port_start={start}): while the proxy is down, whoever \
             takes it receives the redirected plaintext; prefer the default port 324"
        );
    }
}

/// Binds a non-blocking listener with `SO_REUSEADDR` (a restart does not wait out TIME_WAIT)
/// and a listen queue of [`BACKLOG`].
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = nix::sys::socket::socket(family, SockType::Stream, flags, None)?;
    nix::sys::socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let backlog = Backlog::new(BACKLOG as i32).map_err(std::io::Error::from)?;
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    nix::sys::socket::listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

fn is_unix(fd: &OwnedFd) -> bool {
    use nix::sys::socket::{SockaddrLike, getsockname};
    use std::os::fd::AsRawFd;
    getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .is_ok_and(|addr| addr.family() == Some(AddressFamily::Unix))
}

/// The descriptors systemd passed to this very process, if any, with their names. Each is
/// checked before it is taken: a bogus environment must not make the proxy adopt (and later
/// close) descriptors it does not own. The `LISTEN_*` variables are removed once read, so
/// nothing started later mistakes them for its own.
fn systemd_fds() -> anyhow::Result<Vec<(OwnedFd, Option<String>)>> {
    let (Ok(pid), Ok(count)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(Vec::new());
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (inherited through exec): not ours to take.
        return Ok(Vec::new());
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    forget_listen_env();
    let count: RawFd = count
        .parse()
        .ok()
        .filter(|n| (0..=max_listen_fds()).contains(n))
        .with_context(|| {
            format!(
                "LISTEN_FDS={count:?} is not a count of sockets from systemd (0 to \
                 {}); unset it",
                max_listen_fds()
            )
        })?;
    let fds = LISTEN_FDS_START..LISTEN_FDS_START + count;
    let mut names = names.split(':').map(str::to_string);
    let named: Vec<(RawFd, Option<String>)> = fds.map(|fd| (fd, names.next())).collect();
    for (fd, name) in &named {
        // A stored connection's part is a connected socket or a memfd, not a listener.
        match name {
            Some(name) if super::handover::store::is_stored(name) => check_open(*fd)?,
            _ => check_listening(*fd)?,
        }
    }
    Ok(named
        .into_iter()
        // SAFETY: each descriptor is open (and a listening socket unless a stored part),
        // checked above, handed to this process by systemd (LISTEN_PID matched); each is
        // wrapped exactly once.
        .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
        .collect())
}

fn forget_listen_env() {
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called before the async runtime starts, when no other thread reads the
        // environment.
        unsafe { std::env::remove_var(var) };
    }
}

/// Checks, without taking it, that `fd` is open.
fn check_open(fd: RawFd) -> anyhow::Result<()> {
    // SAFETY: fstat fills `st` or fails (EBADF); zeroed is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        bail!("file descriptor {fd} named by LISTEN_FDS is not open: refusing the environment");
    }
    Ok(())
}

/// Checks, without taking it, that `fd` is an open listening stream socket. Raw calls: the
/// descriptor may be closed or anything else, so it cannot be borrowed as an open one.
fn check_listening(fd: RawFd) -> anyhow::Result<()> {
    let int_option = |name| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: writes at most `len` bytes into `value`; fails cleanly on a bad descriptor.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        } == 0;
        ok.then_some(value)
    };
    // SAFETY: fstat fills `st` or fails (EBADF); zeroed is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let is_socket =
        unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK;
    let listening = is_socket
        && int_option(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && int_option(libc::SO_ACCEPTCONN) == Some(1);
    if !listening {
        bail!(
            "file descriptor {fd} named by LISTEN_FDS is not a listening stream socket: the \
             environment is not systemd's (check ListenStream= in the socket unit, or unset \
             LISTEN_PID and LISTEN_FDS); refusing to take it"
        );
    }
    Ok(())
}
