//! The log lines of a connection, for every front: one when it opens and one when it ends, or
//! one if it is refused or fails first. Parties are named as its direction names them
//! (`client`/`destination` out, `peer`/`reached` in); what strangers cause (refusals, an
//! inbound peer's failures) is logged within its front's budget, and counted always.

use std::net::SocketAddr;
use std::time::Instant;

use bip324_control::Direction;
use tracing::{info, warn};

use super::close::{self, Described};
use super::failure::Failure;
use super::open::{Opened, Transport};
use crate::daemon::context::Context;
use crate::daemon::front::{Front, Refusal};
use crate::daemon::log_budget::Suppressed;
// Errors and names may quote a peer's or client's bytes.
use crate::daemon::logging::LogSafe;
use crate::daemon::relay::{CloseReason, Traffic};
use bip324_protocol::ProtocolError;

/// What every line of one connection says about it.
pub(super) struct Line<'a> {
    pub(super) front: Front,
    pub(super) direction: Direction,
    pub(super) client: SocketAddr,
    /// As asked: a SOCKS5 name stays a name (hostname syntax, escaped all the same).
    pub(super) destination: String,
    pub(super) started: Instant,
    pub(super) traffic: &'a Traffic,
}

/// Logs at `$level` with the connection's parties, and its duration and bytes when asked,
/// named for its direction; the rest of the arguments follow.
macro_rules! log_line {
    ($level:ident, $line:expr, bytes, $($rest:tt)+) => {{
        let line = $line;
        let (t, get) = (line.traffic, Traffic::get);
        let duration = Seconds(line.started);
        let destination = LogSafe(&line.destination);
        match line.direction {
            Direction::Outbound => $level!(
                front = %line.front, client = %line.client, destination = %destination,
                duration = %duration, client_in = get(&t.accepted_in),
                client_out = get(&t.accepted_out), remote_in = get(&t.dialled_in),
                remote_out = get(&t.dialled_out), $($rest)+
            ),
            Direction::Inbound => $level!(
                front = %line.front, peer = %line.client, reached = %destination,
                duration = %duration, peer_in = get(&t.accepted_in),
                peer_out = get(&t.accepted_out), node_in = get(&t.dialled_in),
                node_out = get(&t.dialled_out), $($rest)+
            ),
        }
    }};
    ($level:ident, $line:expr, $($rest:tt)+) => {{
        let line = $line;
        let destination = LogSafe(&line.destination);
        match line.direction {
            Direction::Outbound => $level!(
                front = %line.front, client = %line.client, destination = %destination, $($rest)+
            ),
            Direction::Inbound => $level!(
                front = %line.front, peer = %line.client, reached = %destination, $($rest)+
            ),
        }
    }};
}

/// "inbound " for an inbound connection's lines, which a node operator greps for.
fn prefix(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "",
        Direction::Inbound => "inbound ",
    }
}

/// A refused connection: counted, and logged within its front's budget. A loop or a missing
/// network is a configuration problem (a warning); a direct connection (a probe, a curious
/// local user) is not.
pub(crate) fn refused(ctx: &Context, front: Front, client: SocketAddr, refusal: &Refusal) {
    ctx.metrics.refused(refusal.kind());
    let Some(more) = ctx.stranger_log(front).take(Instant::now()) else {
        return;
    };
    let (refusal_kind, why) = (refusal.kind(), LogSafe(refusal));
    if refusal.is_misconfiguration() {
        warn!(front = %front, client = %client, refusal = %refusal_kind, "refused connection: {why}{more}");
    } else {
        info!(front = %front, client = %client, refusal = %refusal_kind, "refused connection: {why}{more}");
    }
}

pub(super) fn failed(ctx: &Context, line: &Line<'_>, failure: &Failure, network: &str) {
    let direction = line.direction;
    // An inbound peer is a stranger: its failures are logged within a budget.
    let more = match direction {
        Direction::Outbound => Suppressed(0),
        Direction::Inbound => match ctx.stranger_log(line.front).take(Instant::now()) {
            Some(more) => more,
            None => return,
        },
    };
    let hint = match failure {
        Failure::Handshake(h) if h.allows_v1_fallback() && !ctx.config.v1_fallback => {
            "; it may be a v1-only node: --v1-fallback would retry it in plaintext"
        }
        _ => "",
    };
    log_line!(
        warn,
        line,
        bytes,
        network = %network,
        failure = %failure.reason(direction),
        protocol_error = failure.protocol_error().map(ProtocolError::label),
        "{}connection failed: {}{hint}{more}",
        prefix(direction),
        LogSafe(failure.describe(direction))
    );
}

pub(super) fn opened(ctx: &Context, line: &Line<'_>, opened: &Opened, network: &str) {
    let (transport, prefix) = (opened.transport.kind(), prefix(line.direction));
    match &opened.transport {
        Transport::V2(session) => log_line!(
            info,
            line,
            network = %network,
            transport = %transport,
            session_id = %hex::encode(session.session_id),
            via = ctx.config.upstream_socks5.filter(|_| line.direction == Direction::Outbound).map(tracing::field::display),
            "{prefix}connection opened"
        ),
        Transport::V1Fallback { why } => log_line!(
            warn,
            line,
            network = %network,
            transport = %transport,
            "connection opened in PLAINTEXT v1 (--v1-fallback): {}",
            LogSafe(why)
        ),
        Transport::Passthrough => log_line!(
            info,
            line,
            network = %network,
            transport = %transport,
            "connection opened: the client does not speak v1, its bytes pass unchanged"
        ),
        Transport::V1 => log_line!(
            info,
            line,
            network = %network,
            transport = %transport,
            "{prefix}connection opened: the peer chose v1, as it may without the proxy"
        ),
    }
}

pub(super) fn closed(line: &Line<'_>, reason: &CloseReason) {
    let direction = line.direction;
    let described = Described { reason, direction };
    log_line!(
        info,
        line,
        bytes,
        close = %close::kind(reason, direction),
        protocol_error = reason.protocol_error().map(ProtocolError::label),
        reason = %LogSafe(&described),
        "{}connection closed",
        prefix(direction)
    );
}

/// Time since a start, as seconds with millisecond precision.
struct Seconds(Instant);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}s", self.0.elapsed().as_secs_f64())
    }
}
