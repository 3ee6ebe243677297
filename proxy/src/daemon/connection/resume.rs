//! A connection handed over by a predecessor (`--take-over`): registered, logged and
//! counted as if it had opened here, then relayed on from where the predecessor paused it.

use std::time::{Duration, Instant, SystemTime};

use bip324_control::{Direction, TransportKind};
use bip324_protocol::Event;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::accounting::account;
use super::carry::{cover, drive, encrypted};
use super::report::Line;
use crate::daemon::context::Context;
use crate::daemon::handover::Arrived;
use crate::daemon::relay::{RelayContext, Side, Traffic, Unread};

/// Carries `arrived` on to its end, as `run` carries a connection it opened.
pub(crate) async fn resume(arrived: Arrived, ctx: &Context, shutdown: &CancellationToken) {
    let Arrived {
        meta,
        mut up,
        mut down,
        unread,
        sockets,
    } = arrived;
    let streams = sockets.map(|socket| {
        socket.set_nonblocking(true)?;
        TcpStream::from_std(socket)
    });
    let [Ok(mut accepted), Ok(mut dialled)] = streams else {
        return warn!("cannot carry on a connection handed over: its sockets are unusable");
    };
    let direction = meta.direction;
    // Its upstream socket is this proxy's own: a redirect back to it is a loop.
    let _port = match (direction, dialled.local_addr()) {
        (Direction::Outbound, Ok(local)) => Some(ctx.loop_guard.adopt(local)),
        _ => None,
    };
    let age = Duration::from_millis(meta.age_ms);
    let registration = ctx.registry.register_since(
        meta.id,
        (meta.front, direction),
        (meta.client, meta.destination),
        SystemTime::now()
            .checked_sub(age)
            .unwrap_or_else(SystemTime::now),
    );
    let entry = &registration.entry;
    if let Some(network) = &meta.network {
        entry.set_network(network.clone());
    }
    entry.set_opened(meta.transport, meta.session_id);
    let t = &entry.traffic;
    let counters = [
        &t.accepted_in,
        &t.accepted_out,
        &t.dialled_in,
        &t.dialled_out,
    ];
    for (counter, n) in counters.into_iter().zip(meta.traffic) {
        Traffic::add(counter, n as usize);
    }
    let line = Line {
        front: meta.front,
        direction,
        client: meta.client,
        destination: meta.destination_shown.clone(),
        started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        traffic: &entry.traffic,
    };
    debug!("carried on from the predecessor");
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, direction, side, event);
    let cover = cover(ctx, meta.transport == TransportKind::V2);
    let ticket = ctx.departure.ticket();
    let cx = RelayContext {
        traffic: &entry.traffic,
        events: &events,
        shutdown,
        cover: cover.as_ref().map(|c| (encrypted(direction).other(), c)),
        ticket: ticket.as_ref(),
    };
    let unread_bytes = Unread {
        accepted: &unread.0,
        dialled: &unread.1,
    };
    let sockets = (&mut accepted, &mut dialled);
    let carried = drive(sockets, (&mut up, &mut down), unread_bytes, &cx).await;
    super::finish(carried, (&accepted, &dialled), (entry, &line), meta, ticket);
}
