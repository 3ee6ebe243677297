//! The life of every accepted connection after its front: the destination policy, the
//! first bytes, the v2 handshake or fallback, relay, close, logs and metrics, written once
//! for the three fronts. It reads front -> `run` -> `open` -> `carry` (relay) -> close,
//! with no return trip.

mod accounting;
mod admission;
mod carry;
mod close;
mod failure;
mod open;
mod party;
mod report;
mod resume;

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::front::{Accepted, Refusal};
use super::handover::record::Meta;
use super::handover::{Leaving, Ticket, record};
use super::registry::Entry;
use super::relay::{CloseReason, RelayContext, Side, Traffic};
use accounting::account;
use bip324_protocol::Event;
use carry::{Carried, Paused};
use close::{failed_side, reset_on_close};
use report::Line;
use tokio::net::TcpStream;

pub(crate) use failure::Failure;
pub(crate) use open::within_first_bytes_timeout;
pub(crate) use report::refused;
pub(crate) use resume::resume;

/// Handles one accepted connection to its end. Never panics on peer input; every outcome is
/// counted and logged.
pub(crate) async fn run(
    mut accepted: Box<Accepted>,
    id: u64,
    ctx: &Context,
    shutdown: &CancellationToken,
) {
    let (front, client, direction) = (accepted.front, accepted.client, accepted.direction());
    if let Err(refusal) = admission::admit(&accepted, ctx) {
        if let Some(reply) = accepted.reply.take() {
            reply.refuse(&mut accepted.stream, ctx).await;
        }
        return refused(ctx, front, client, &refusal);
    }
    let _ = accepted.stream.set_nodelay(true);
    let registration = ctx
        .registry
        .register(id, (front, direction), client, accepted.destination);
    let entry = &registration.entry;
    if let Some(network) = accepted.network() {
        entry.set_network(network.name().to_string());
    }
    let line = Line {
        front,
        direction,
        client,
        destination: accepted.destination_shown(),
        started: Instant::now(),
        traffic: &entry.traffic,
    };
    let events = |side: Side, event: Event| account(entry, &ctx.metrics, direction, side, event);

    // Until it is opened, an inbound connection may be evicted to admit a newcomer.
    let pending = accepted.pending.take();
    let evicted = async {
        match &pending {
            Some(pending) => pending.evicted().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        // Boxed: the opening's state (handshake, dial) is freed once the connection is open.
        result = Box::pin(open::open(&mut accepted, ctx, entry, &events)) => result,
        () = evicted => return refused(ctx, front, client, &Refusal::EvictedPending),
        _ = shutdown.cancelled() => Err(Failure::Shutdown),
    };
    drop(pending);
    let network = entry.network().unwrap_or_else(|| "unknown".to_string());
    let mut opened = match result {
        Ok(opened) => opened,
        Err(failure) => {
            let reason = failure.reason(direction);
            ctx.metrics.failed(reason);
            entry.set_failed(reason);
            report::failed(ctx, &line, &failure, &network);
            // What a direct connection would have shown: an error, not a clean end.
            if failure.is_an_error_to_the_accepted() {
                reset_on_close(&accepted.stream);
            }
            return;
        }
    };
    let transport = opened.transport.kind();
    entry.set_opened(transport, opened.transport.session_id());
    ctx.metrics.opened(direction, transport);
    report::opened(ctx, &line, &opened, &network);

    let meta = Meta {
        id,
        front,
        direction,
        client,
        destination: accepted.destination,
        destination_shown: line.destination.clone(),
        network: entry.network(),
        transport,
        session_id: opened.transport.session_id(),
        traffic: [0; 4],
        age_ms: 0,
    };
    let ticket = ctx.departure.ticket();
    let cx = RelayContext {
        traffic: &entry.traffic,
        events: &events,
        shutdown,
        cover: None,
        ticket: ticket.as_ref(),
    };
    let destination = accepted.destination;
    let carried = carry::carry(
        &mut accepted.stream,
        &mut opened,
        direction,
        destination,
        ctx,
        cx,
    )
    .await;
    let sockets = (&accepted.stream, &opened.dialled);
    finish(carried, sockets, (entry, &line), meta, ticket);
}

/// After the relay: logs and counts how it ended, and passes a reset or a broken protocol on
/// one side to the other as a reset. Or, handed over, sends its sockets and state off with
/// `ticket`.
fn finish(
    carried: Carried,
    (accepted, dialled): (&TcpStream, &TcpStream),
    (entry, line): (&Entry, &Line<'_>),
    meta: Meta,
    ticket: Option<Ticket>,
) {
    let reason = match carried {
        Carried::Closed(reason) => reason,
        Carried::Left(paused) => {
            // Only a relay holding a ticket is ever called.
            let boarded = match (leaving(paused, (accepted, dialled), line, meta), ticket) {
                (Ok(leaving), Some(ticket)) => ticket.board(leaving),
                _ => false,
            };
            if boarded {
                CloseReason::HandedOver
            } else {
                // The successor is gone: what the proxy does as it stops.
                CloseReason::Shutdown
            }
        }
    };
    entry.set_closed(close::kind(&reason, line.direction));
    report::closed(line, &reason);
    match failed_side(&reason) {
        Some(Side::Dialled) => reset_on_close(accepted),
        Some(Side::Accepted) => reset_on_close(dialled),
        None => {}
    }
}

/// The connection as it leaves: its record, and copies of its sockets (this process's close
/// as the task ends then sends nothing: the successor holds them).
fn leaving(
    paused: Paused,
    (accepted, dialled): (&TcpStream, &TcpStream),
    line: &Line<'_>,
    mut meta: Meta,
) -> std::io::Result<Leaving> {
    use std::os::fd::AsFd;
    let t = line.traffic;
    meta.traffic = [
        Traffic::get(&t.accepted_in),
        Traffic::get(&t.accepted_out),
        Traffic::get(&t.dialled_in),
        Traffic::get(&t.dialled_out),
    ];
    meta.age_ms = line.started.elapsed().as_millis() as u64;
    let unread = (&paused.unread.0[..], &paused.unread.1[..]);
    Ok(Leaving {
        id: meta.id,
        record: record::encode(&meta, (&paused.up, &paused.down), unread),
        sockets: [
            accepted.as_fd().try_clone_to_owned()?,
            dialled.as_fd().try_clone_to_owned()?,
        ],
    })
}
