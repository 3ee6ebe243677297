//! Everything the proxy does with privileges, before the async runtime and its threads exist:
//! open the listening sockets and the control socket, then give up every privilege for good
//! (privileges.rs). Capabilities belong to threads, so only a drop made while the process has
//! one thread leaves every later thread with none.

use anyhow::{Context as _, bail};
use tracing::{info, warn};

use super::config::Config;
use super::listeners::{self, Listeners};
use super::{control, handover, privileges, transparent};

/// The sockets opened with privileges, ready for the runtime.
pub(crate) struct Prepared {
    pub listeners: Listeners,
    pub metrics: Option<std::net::TcpListener>,
    pub control: Option<std::os::unix::net::UnixListener>,
    /// The control socket this proxy made (removed when dropped); none for systemd's.
    pub own_control: Option<control::Made>,
    /// Why there is no control socket, for the ready line (`control=none (...)`).
    pub no_control: Option<&'static str>,
    pub binder: Option<transparent::Binder>,
    /// Live connections handed over by the proxy taken over.
    pub arrived: Vec<handover::Arrived>,
}

/// Opens every socket, then gives up privileges. `binder`: started by `main` before this when
/// inbound mode is wanted.
pub(crate) fn prepare(
    config: &Config,
    binder: Option<transparent::Unarmed>,
) -> anyhow::Result<Prepared> {
    if config.take_over {
        return take_over(config, binder);
    }
    let mut listeners = listeners::open(&config.listen, &config.inbound, &config.socks5)?;
    let arrived = handover::store::restore(std::mem::take(&mut listeners.stored));
    if !listeners.inbound.is_empty() && binder.is_none() {
        bail!("inbound listeners without the inbound binder");
    }
    if let Some(addr) = config.metrics.filter(|a| !a.ip().is_loopback()) {
        warn!(
            "--metrics {addr} is reachable beyond this host: its dashboard shows every \
             client's address and destination, and the metrics traffic volumes, to anyone who \
             can connect; prefer 127.0.0.1 (from elsewhere: ssh -L)"
        );
    }
    let metrics = config
        .metrics
        .map(|addr| {
            listeners::bind(addr)
                .with_context(|| format!("cannot serve the dashboard and metrics on {addr}"))
        })
        .transpose()?;
    let account = privileges::account(config.user.as_deref())?;
    let (control, own_control) = match (listeners.control.take(), config.no_control) {
        (Some(from_systemd), _) => (Some(from_systemd), None),
        (None, true) => (None, None),
        (None, false) => own_control_socket(config, account.as_ref())?,
    };
    let no_control = match (&control, config.no_control) {
        (Some(_), _) => None,
        (None, true) => Some("--no-control"),
        (None, false) => Some("it could not be made: see the warning above"),
    };
    privileges::give_up(account.as_ref())?;
    let binder = match binder.filter(|_| !listeners.inbound.is_empty()) {
        Some(unarmed) => Some(unarmed.arm()?),
        None => None,
    };
    Ok(Prepared {
        listeners,
        metrics,
        control,
        own_control,
        no_control,
        binder,
        arrived,
    })
}

/// `--take-over`: gives up privileges first, so that the running proxy sees a process of its
/// own user ask (the only one it accepts), then takes its sockets.
fn take_over(config: &Config, binder: Option<transparent::Unarmed>) -> anyhow::Result<Prepared> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        bail!(
            "--take-over is for a proxy run by hand: under systemd the socket unit holds the \
             sockets (systemctl restart bip324-proxy keeps them open)"
        );
    }
    let account = privileges::account(config.user.as_deref())?;
    privileges::give_up(account.as_ref())?;
    let path = super::config::control_path(config);
    let received = handover::receive(&path, config.drain_timeout)?;
    let predecessor = received.predecessor;
    match &received.connections {
        Some(live) => info!(
            predecessor,
            connections = live.len(),
            state_bytes = received.state_bytes,
            took_ms = received.took.as_millis() as u64,
            "took over the sockets and {} live connections of pid {predecessor}: this proxy \
             carries them on and serves every new connection; pid {predecessor} finishes those \
             that could not leave",
            live.len()
        ),
        None => info!(
            predecessor,
            "took over the sockets of pid {predecessor}, which sent no live connections (another \
             version): it finishes its open connections, this proxy serves every new one"
        ),
    }
    let binder = match binder.filter(|_| !received.listeners.inbound.is_empty()) {
        Some(unarmed) => Some(unarmed.arm()?),
        None => None,
    };
    let no_control = received
        .listeners
        .control
        .is_none()
        .then_some("the proxy taken over had none");
    let mut listeners = received.listeners;
    Ok(Prepared {
        arrived: received.connections.unwrap_or_default(),
        control: listeners.control.take(),
        listeners,
        metrics: received.web,
        own_control: received.control_path.map(control::Made::adopt),
        no_control,
        binder,
    })
}

/// The proxy's own control socket. Where it cannot be made, the proxy runs without one and
/// says so; where another proxy answers, or anyone else could take the path, it stops.
fn own_control_socket(
    config: &Config,
    account: Option<&nix::unistd::User>,
) -> anyhow::Result<(
    Option<std::os::unix::net::UnixListener>,
    Option<control::Made>,
)> {
    // Run by hand as a user without a runtime directory, there is no default of its own: the
    // system's path belongs to the system's proxy, whose place `status` would see it take.
    if config.control.is_none()
        && !nix::unistd::geteuid().is_root()
        && bip324_control::user_socket().is_none()
    {
        warn!(
            "no control socket: XDG_RUNTIME_DIR is not set, so this proxy (not root) has no \
             default one of its own under $XDG_RUNTIME_DIR/bip324-proxy/; `bip324-redirect \
             status` and `check` cannot ask it. Give --control PATH in a directory only you may \
             write (e.g. --control ~/.bip324-proxy/control.sock, then the same --control to \
             status), or --no-control to run without"
        );
        return Ok((None, None));
    }
    let path = super::config::control_path(config);
    if let Some(account) = account {
        if let Err(e) = control::prepare_dir(&path, account) {
            warn!("cannot prepare the control socket's directory: {e}");
        }
    }
    match control::bind(&path, account) {
        Ok((listener, made)) => Ok((Some(listener), Some(made))),
        Err(e @ control::BindError::Io { .. }) => {
            warn!(
                "{e}; `bip324-redirect status` will not list connections (give --control \
                 PATH in a directory this user may write, or --no-control)"
            );
            Ok((None, None))
        }
        Err(e) => Err(e.into()),
    }
}
