//! The `bip324-proxy` daemon: listeners, the accept loop, and shutdown.

mod config;
mod connection;
mod context;
mod control;
mod cover;
mod destination;
pub(crate) mod fault;
mod front;
mod handover;
mod labels;
pub(crate) mod listeners;
mod log_budget;
pub(crate) mod logging;
mod loop_guard;
mod metrics;
mod original_dst;
mod pending;
mod privileges;
mod registry;
mod relay;
mod socks5;
pub(crate) mod startup;
mod status;
mod traffic;
pub(crate) mod transparent;
mod upstream;
mod v2_connect;
mod web;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bip324_control::SocketRole;
use std::os::fd::AsFd;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

pub(crate) use config::Config;
use context::Context;
use front::{Arrival, Front};

/// Each proxied connection holds two sockets; this many more are kept for listeners,
/// logging and the runtime.
const SPARE_FDS: u64 = 64;

/// Raises the soft limit on open files to the hard one (the default soft limit, often 1024,
/// caps a proxy at a few hundred connections) and warns when `max_connections` (over all
/// fronts) cannot fit.
fn raise_fd_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = limit.saturating_sub(SPARE_FDS) / 2;
    if (max_connections as u64) > room {
        warn!(
            "{max_connections} connections (--max-connections per front) need about {} file \
             descriptors, but the limit is {limit}: beyond {room} connections, accepting slows \
             down (raise LimitNOFILE)",
            max_connections as u64 * 2 + SPARE_FDS
        );
    }
}

/// Runs the proxy until SIGTERM or SIGINT, on the sockets `startup::prepare` opened.
pub(crate) async fn run(config: Config, prepared: startup::Prepared) -> anyhow::Result<()> {
    if config.v1_fallback_ttl.is_some() {
        warn!(
            "--v1-fallback-ttl is ignored: v1-only destinations are no longer remembered (one \
             injected reset would downgrade later connections); with --v1-fallback each \
             connection tries v2 first, as Bitcoin Core does"
        );
    }
    let startup::Prepared {
        listeners: opened,
        metrics,
        control,
        mut own_control,
        no_control,
        binder,
        arrived,
    } = prepared;
    let to_tokio = |listeners: Vec<std::net::TcpListener>| {
        listeners
            .into_iter()
            .map(TcpListener::from_std)
            .collect::<io::Result<Vec<_>>>()
    };
    let listeners = to_tokio(opened.tcp)?;
    let inbound_listeners = to_tokio(opened.inbound)?;
    let socks5_listeners = to_tokio(opened.socks5)?;
    let local_addrs = |listeners: &[TcpListener]| {
        listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<SocketAddr>>>()
    };
    let listening = local_addrs(&listeners)?;
    let inbound = local_addrs(&inbound_listeners)?;
    let fronts_in_use = [&listeners, &inbound_listeners, &socks5_listeners]
        .iter()
        .filter(|l| !l.is_empty())
        .count();
    raise_fd_limit(config.max_connections * fronts_in_use);
    let metrics_listener = metrics.map(TcpListener::from_std).transpose()?;
    let control_listener = control
        .map(tokio::net::UnixListener::from_std)
        .transpose()?;
    // Every place this proxy answers, so that a user knows where to point clients and
    // `status`: the control socket's path, or why there is none.
    let socks5 = local_addrs(&socks5_listeners)?;
    let control_shown = match (&control_listener, no_control) {
        (Some(listener), _) => listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "unnamed".to_string()),
        (None, why) => format!("none ({})", why.unwrap_or("not made")),
    };
    let metrics_shown = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or("none".to_string(), |a| a.to_string());
    info!(
        listen = ?listening,
        socks5 = ?socks5,
        inbound = ?inbound,
        control = %control_shown,
        metrics = %metrics_shown,
        v1_fallback = config.v1_fallback,
        key_prefix = %config.key_prefix.map_or_else(|| "none".to_string(), |p| p.to_string()),
        handshake_timeout = ?config.handshake_timeout,
        max_connections = config.max_connections,
        "bip324-proxy {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let ctx = Arc::new(Context::new(config, listening, binder));
    // What a successor (`--take-over`) would receive: every socket this proxy listens on,
    // and its live connections.
    let offer = {
        let fronts = [
            (SocketRole::Redirect, &listeners),
            (SocketRole::Inbound, &inbound_listeners),
            (SocketRole::Socks5, &socks5_listeners),
        ];
        let mut sockets: Vec<_> = fronts
            .iter()
            .flat_map(|(role, group)| group.iter().map(|l| (*role, l.as_fd())))
            .collect();
        let (web, control) = (metrics_listener.as_ref(), control_listener.as_ref());
        sockets.extend(web.map(|l| (SocketRole::Web, l.as_fd())));
        sockets.extend(control.map(|l| (SocketRole::Control, l.as_fd())));
        let control_path = own_control.as_ref().map(|made| made.path().to_path_buf());
        Arc::new(handover::Offer::new(
            &sockets,
            control_path,
            Arc::clone(&ctx.departure),
        )?)
    };
    // Accepting stops on SIGTERM or once taken over; the connections close on SIGTERM, or
    // once drained after a take-over.
    let stop = Stop {
        accepting: CancellationToken::new(),
        connections: CancellationToken::new(),
    };
    let shutdown = stop.accepting.clone();
    let mut services = Vec::new();
    let status = Arc::new(status::StatusSource::new(&ctx, inbound, socks5));
    services.push(tokio::spawn(traffic::sample(
        Arc::clone(&status.traffic),
        Arc::clone(&ctx.registry),
        shutdown.clone(),
    )));
    if let Some(listener) = control_listener {
        services.push(tokio::spawn(control::serve(
            listener,
            Arc::clone(&status),
            Arc::clone(&offer),
            shutdown.clone(),
        )));
    }
    if let Some(listener) = metrics_listener {
        info!(
            address = %listener.local_addr()?,
            "serving the dashboard at / and Prometheus metrics at /metrics"
        );
        services.push(tokio::spawn(web::serve(
            listener,
            Arc::clone(&status),
            shutdown.clone(),
        )));
    }
    let connections = TaskTracker::new();
    // Ids go on from the predecessor's, so that one id names one connection in the logs.
    let first_id = arrived.iter().map(|a| a.meta.id + 1).max().unwrap_or(1);
    let next_id = Arc::new(AtomicU64::new(first_id));
    for arrived in arrived {
        let (ctx, shutdown) = (Arc::clone(&ctx), stop.connections.clone());
        let span = info_span!("conn", id = arrived.meta.id);
        let metrics = Arc::clone(&ctx.metrics);
        let connection = async move { connection::resume(arrived, &ctx, &shutdown).await };
        connections.spawn(fault::contained(connection, metrics).instrument(span));
    }
    let mut accept_loops = Vec::new();
    let fronts = (listeners.into_iter().map(|l| (l, Front::Redirect)))
        .chain(inbound_listeners.into_iter().map(|l| (l, Front::Inbound)))
        .chain(socks5_listeners.into_iter().map(|l| (l, Front::Socks5)));
    // Each front has a pool of its own: whoever reaches the SOCKS5 port, or an inbound
    // stranger, can never hold the redirected clients' slots (nor the reverse).
    let pool = || Arc::new(Semaphore::new(ctx.config.max_connections));
    let (redirect_pool, inbound_pool, socks5_pool) = (pool(), pool(), pool());
    for (listener, front) in fronts {
        let pool = match front {
            Front::Redirect | Front::Unknown => &redirect_pool,
            Front::Inbound => &inbound_pool,
            Front::Socks5 => &socks5_pool,
        };
        accept_loops.push(tokio::spawn(accept_loop(
            listener,
            front,
            Arc::clone(&ctx),
            Arc::clone(pool),
            connections.clone(),
            Arc::clone(&next_id),
            stop.clone(),
        )));
    }

    let taken = offer.taken();
    let taken_over = tokio::select! {
        signal = wait_for_stop_signal() => {
            signal?;
            false
        }
        () = taken.cancelled() => true,
    };
    stop.accepting.cancel();
    for task in accept_loops.into_iter().chain(services) {
        let _ = task.await;
    }
    connections.close();
    if taken_over {
        // Live connections leave first; then the rest finish here.
        offer.delivered().cancelled().await;
        drain(&connections, offer.drain()).await?;
        // The successor answers on the control socket now, and removes it when it stops.
        if let Some(made) = own_control.take() {
            made.hand_over();
        }
    } else if handover::store::enabled() {
        // A restart finds them in the store; a stop closes them.
        let stored = handover::store::store(&ctx.departure).await;
        info!(
            stored,
            open_connections = connections.len(),
            "shutting down: {stored} live connections kept in systemd's file descriptor store \
             for the next proxy (closed if the service stops); closing the others"
        );
    } else {
        info!(
            open_connections = connections.len(),
            "shutting down: no new connections; closing the open ones"
        );
    }
    stop.connections.cancel();
    connections.wait().await;
    drop(own_control);
    info!("stopped");
    Ok(())
}

/// When a proxy stops accepting, and when its connections close.
#[derive(Clone)]
struct Stop {
    accepting: CancellationToken,
    connections: CancellationToken,
}

/// Taken over: lets the open connections end by themselves, for at most `deadline` (or until
/// SIGTERM), while the successor serves every new one.
async fn drain(connections: &TaskTracker, deadline: Duration) -> anyhow::Result<()> {
    info!(
        open_connections = connections.len(),
        "taken over: no new connections here; finishing the open ones (at most {}), then \
         stopping",
        humantime::format_duration(deadline)
    );
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(deadline) => info!(
            open_connections = connections.len(),
            "drain deadline reached: closing the connections still open"
        ),
        signal = wait_for_stop_signal() => signal?,
    }
    Ok(())
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    front: Front,
    ctx: Arc<Context>,
    limit: Arc<Semaphore>,
    connections: TaskTracker,
    next_id: Arc<AtomicU64>,
    stop: Stop,
) {
    let (shutdown, closing) = (stop.accepting, stop.connections);
    let mut last_exhaustion_warning: Option<Instant> = None;
    loop {
        // At the connection limit, stop accepting: clients wait in the listen backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("semaphore never closed"),
            _ = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, client)) => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let span = info_span!("conn", id);
                let (ctx, shutdown) = (Arc::clone(&ctx), closing.clone());
                let metrics = Arc::clone(&ctx.metrics);
                // A task holds its future for the connection's whole life: each phase that
                // ends (the front, then the opening) is boxed so that its state goes with it,
                // and an idle connection keeps only what relaying needs.
                let connection = async move {
                    match Box::pin(front::arrive(front, stream, client, &ctx)).await {
                        Arrival::Connection(accepted) => {
                            connection::run(accepted, id, &ctx, &shutdown).await;
                        }
                        Arrival::Refused { client, refusal } => {
                            connection::refused(&ctx, front, client, &refusal);
                        }
                        Arrival::Served => {}
                    }
                    drop(permit);
                };
                connections.spawn(fault::contained(connection, metrics).instrument(span));
            }
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of file descriptors or memory: keep the loop alive, retry shortly.
                if last_exhaustion_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!(
                        "cannot accept connections: {e}; retrying (raise LimitNOFILE or --max-connections lower)"
                    );
                    last_exhaustion_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => debug!("accept failed: {e}"),
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
