//! What each message, decoy and dropped message of a connection counts for: its status
//! entry, the metrics, and a debug line.

use bip324_control::Direction;
use tracing::debug;

use super::party::Party;
use crate::daemon::logging::LogSafe;
use crate::daemon::metrics::{Flow, Metrics};
use crate::daemon::registry::Entry;
use crate::daemon::relay::{Side, Traffic};
use bip324_protocol::Event;

/// Counts a message or packet that came from `from` for the connection's status and the
/// metrics, and logs it at debug level.
pub(super) fn account(
    entry: &Entry,
    metrics: &Metrics,
    direction: Direction,
    from: Side,
    event: Event,
) {
    log_event(direction, from, event);
    match event {
        Event::Message { command, .. } => {
            #[cfg(feature = "fault-injection")]
            crate::daemon::fault::inject(&command);
            let (counter, flow) = match from {
                Side::Accepted => (&entry.messages_from_client, Flow::AcceptedToDialled),
                Side::Dialled => (&entry.messages_to_client, Flow::DialledToAccepted),
            };
            Traffic::add(counter, 1);
            metrics.message(flow, &command);
        }
        Event::Decoy { .. } => metrics.decoy(),
        Event::Dropped { .. } => metrics.dropped(),
        Event::VersionPacket { .. } => {}
    }
}

fn log_event(direction: Direction, from: Side, event: Event) {
    let (from, to) = (
        Party::of(direction, from),
        Party::of(direction, from.other()),
    );
    match event {
        Event::Message {
            command,
            payload_len,
        } => debug!(
            "{from} -> {to}: {} ({payload_len} bytes)",
            LogSafe(command.name())
        ),
        Event::Decoy { contents_len } => {
            debug!("{from}: skipped a decoy packet ({contents_len} bytes)");
        }
        Event::VersionPacket { contents_len } => {
            debug!("{from}: version packet authenticated ({contents_len} bytes of contents)");
        }
        Event::Dropped {
            reason,
            contents_len,
        } => debug!("{from} -> {to}: dropped a message of {contents_len} bytes: {reason}"),
    }
}
