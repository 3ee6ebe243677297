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

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::front::{Accepted, Refusal};
use super::relay::{RelayContext, Side};
use accounting::account;
use bip324_protocol::Event;
use close::{failed_side, reset_on_close};
use report::Line;

pub(crate) use failure::Failure;
pub(crate) use open::within_first_bytes_timeout;
pub(crate) use report::refused;

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

    let cx = RelayContext {
        traffic: &entry.traffic,
        events: &events,
        shutdown,
        cover: None,
    };
    let destination = accepted.destination;
    let reason = carry::carry(
        &mut accepted.stream,
        &mut opened,
        direction,
        destination,
        ctx,
        cx,
    )
    .await;
    entry.set_closed(close::kind(&reason, direction));
    report::closed(&line, &reason);
    // A reset or a broken protocol on one side is a reset on the other.
    match failed_side(&reason) {
        Some(Side::Dialled) => reset_on_close(&accepted.stream),
        Some(Side::Accepted) => reset_on_close(&opened.dialled),
        None => {}
    }
}
