//! The life of one redirected connection: check it, tell v1 from v2, reach the destination,
//! relay, and log one line when it opens and one when it ends. `inbound` does the same for a
//! peer's connection to the local node.

mod accounting;
mod failure;
pub mod inbound;
mod open;
pub mod socks5;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::Config;
use super::config::Shaping;
use super::cover::{Budget, Cover};
use super::log_budget::LogBudget;
// Errors and names may quote a peer's or client's bytes.
use super::logging::LogSafe;
use super::loop_guard::{LoopGuard, Refusal};
use super::metrics::Metrics;
use super::original_dst::original_destination;
use super::pending::PendingPerSource;
use super::registry::{Entry, Registry};
use super::relay::{CloseReason, RelayContext, Side, Traffic};
use super::transparent::Binder;
use accounting::account;
use bip324_protocol::{Event, ProtocolError};
use failure::Failure;
use open::{Opened, Transport, open};

/// What all connections share.
pub struct Context {
    pub config: Config,
    /// Addresses the proxy accepts on: a connection "to" one of them was not redirected.
    pub listening: Vec<SocketAddr>,
    pub loop_guard: Arc<LoopGuard>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Refused connections log at most this many lines a second; the metrics count them all.
    pub refusal_log: LogBudget,
    /// Inbound mode: binds sockets to peers' addresses.
    pub binder: Option<Binder>,
    /// Inbound connections not yet relayed, per source network.
    pub inbound_pending: Arc<PendingPerSource>,
    /// Strangers cause inbound failures: at most this many lines a second.
    pub inbound_log: LogBudget,
    /// The proxy's budget of cover traffic (`--shaping cover`).
    pub cover_budget: Arc<Budget>,
}

impl Context {
    /// A connection's cover schedule, with `--shaping cover`.
    pub fn cover(&self) -> Option<Cover> {
        (self.config.shaping == Shaping::Cover).then(|| {
            Cover::new(
                self.config.cover_interval,
                self.config.cover_budget,
                Arc::clone(&self.cover_budget),
            )
        })
    }
}

impl Context {
    pub fn new(config: Config, listening: Vec<SocketAddr>) -> Self {
        let cover_budget = Arc::new(Budget::per_second(config.cover_budget_total));
        Context {
            config,
            listening,
            loop_guard: Arc::default(),
            registry: Arc::default(),
            metrics: Arc::default(),
            refusal_log: LogBudget::per_second(10),
            binder: None,
            inbound_pending: Arc::default(),
            inbound_log: LogBudget::per_second(10),
            cover_budget,
        }
    }
}

/// Handles one accepted connection to its end. Never panics on peer input; every outcome is
/// logged: one line when the connection opens and one when it ends, or one if it fails first.
pub async fn handle(
    mut client: TcpStream,
    client_addr: SocketAddr,
    id: u64,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    // A LAN host reaching a `[::]` listener over IPv4 is logged and listed by its IPv4 address.
    let client_addr = super::original_dst::canonical(client_addr);
    let destination = match accept_check(&client, client_addr, &ctx) {
        Ok(destination) => destination,
        // A loop is a configuration problem; a direct connection (a probe, a curious local
        // user) is not.
        Err(refusal) => {
            ctx.metrics.refused(refusal.kind());
            let Some(more) = ctx.refusal_log.take(Instant::now()) else {
                return;
            };
            if matches!(refusal, Refusal::OwnUpstream) {
                warn!(client = %client_addr, refusal = %refusal.kind(), "refused connection: {refusal}{more}");
            } else {
                info!(client = %client_addr, refusal = %refusal.kind(), "refused connection: {refusal}{more}");
            }
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let started = Instant::now();
    let registration = ctx.registry.register(
        id,
        bip324_control::Direction::Outbound,
        client_addr,
        destination,
    );
    let entry = &registration.entry;
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, side, event);
    let result = tokio::select! {
        result = open(&mut client, destination, &ctx, entry, &events) => result,
        _ = shutdown.cancelled() => Err(Failure::Shutdown),
    };
    finish(
        client,
        client_addr,
        &destination.to_string(),
        started,
        entry,
        result,
        &ctx,
        &shutdown,
    )
    .await;
}

/// Logs how opening ended; an opened connection is relayed to its end and logged again.
#[allow(clippy::too_many_arguments)]
async fn finish(
    mut client: TcpStream,
    client_addr: SocketAddr,
    destination: &str,
    started: Instant,
    entry: &Entry,
    result: Result<Opened, Failure>,
    ctx: &Context,
    shutdown: &CancellationToken,
) {
    // A SOCKS5 client's name: hostname syntax, but escaped all the same.
    let destination = LogSafe(destination);
    let traffic = &entry.traffic;
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, side, event);
    let network = entry.network().unwrap_or_else(|| "unknown".to_string());
    let t = |c| Traffic::get(c);
    let mut opened = match result {
        Ok(opened) => opened,
        Err(failure) => {
            ctx.metrics.failed(failure.reason());
            entry.set_failed(failure.reason());
            let hint = match &failure {
                Failure::Handshake(h) if h.allows_v1_fallback() && !ctx.config.v1_fallback => {
                    "; it may be a v1-only node: --v1-fallback would retry it in plaintext"
                }
                _ => "",
            };
            warn!(
                client = %client_addr,
                failure = %failure.reason(),
                protocol_error = failure.protocol_error().map(ProtocolError::label),
                destination = %destination,
                network = %network,
                duration = %Seconds(started),
                client_in = t(&traffic.client_in),
                remote_in = t(&traffic.remote_in),
                remote_out = t(&traffic.remote_out),
                "connection failed: {}{hint}",
                LogSafe(&failure)
            );
            // What a direct connection would have shown: an error, not a clean end.
            if failure.is_an_error_to_the_client() {
                reset_on_close(&client);
            }
            return;
        }
    };
    let label = opened.transport.kind();
    entry.set_opened(label, opened.transport.session_id());
    ctx.metrics.opened(label);
    match &opened.transport {
        Transport::V2 { session, .. } => info!(
            client = %client_addr,
            destination = %destination,
            network = %network,
            transport = %label,
            session_id = %hex::encode(session.session_id),
            via = ctx.config.upstream_socks5.map(tracing::field::display),
            "connection opened"
        ),
        Transport::V1Fallback { why } => warn!(
            client = %client_addr,
            destination = %destination,
            network = %network,
            transport = %label,
            "connection opened in PLAINTEXT v1 (--v1-fallback): {}",
            LogSafe(why)
        ),
        Transport::Passthrough => info!(
            client = %client_addr,
            destination = %destination,
            network = %network,
            transport = %label,
            "connection opened: the client does not speak v1, its bytes pass unchanged"
        ),
    }
    // Cover goes the way the client's bytes go, in v2 only.
    let cover = ctx
        .cover()
        .filter(|_| matches!(opened.transport, Transport::V2 { .. }));
    let cx = RelayContext {
        traffic,
        events: &events,
        shutdown,
        cover: cover.as_ref().map(|c| (Side::Client, c)),
    };
    let reason = opened.relay(&mut client, &cx, &ctx.config).await;
    entry.set_closed(reason.kind());
    info!(
        client = %client_addr,
        destination = %destination,
        duration = %Seconds(started),
        client_in = t(&traffic.client_in),
        client_out = t(&traffic.client_out),
        remote_in = t(&traffic.remote_in),
        remote_out = t(&traffic.remote_out),
        close = %reason.kind(),
        protocol_error = reason.protocol_error().map(ProtocolError::label),
        reason = %LogSafe(&reason),
        "connection closed"
    );
    // A reset or a broken protocol on one side is a reset on the other, as a direct
    // connection would have shown it; a clean close was passed on as a FIN by the relay.
    match &reason {
        CloseReason::Io {
            side: Side::Remote, ..
        }
        | CloseReason::Protocol {
            side: Side::Remote, ..
        } => {
            reset_on_close(&client);
        }
        CloseReason::Io {
            side: Side::Client, ..
        }
        | CloseReason::Protocol {
            side: Side::Client, ..
        } => {
            opened.reset_remote_on_close();
        }
        _ => {}
    }
}

/// Makes dropping `stream` send a reset (SO_LINGER 0) instead of a FIN. A zero linger never
/// blocks.
pub(super) fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}

/// Time since a start, as seconds with millisecond precision.
struct Seconds(Instant);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}s", self.0.elapsed().as_secs_f64())
    }
}

fn accept_check(
    client: &TcpStream,
    client_addr: SocketAddr,
    ctx: &Context,
) -> Result<SocketAddr, Refusal> {
    let local = client.local_addr().map_err(Refusal::Unreadable)?;
    let destination = original_destination(client).map_err(Refusal::Unreadable)?;
    let destination = ctx
        .loop_guard
        .check(client_addr, destination, local, &ctx.listening)?;
    super::destination::check(destination.ip()).map_err(Refusal::Forbidden)?;
    Ok(destination)
}
