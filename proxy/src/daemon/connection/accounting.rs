//! What each message, decoy and dropped message of a connection counts for: its status
//! entry, the metrics, and a debug line.

use tracing::debug;

use super::super::logging::LogSafe;
use super::super::metrics::{Direction, Metrics};
use super::super::registry::Entry;
use super::super::relay::{Side, Traffic};
use bip324_protocol::Event;

/// Counts a message or packet for the connection's status and the metrics, and logs it at
/// debug level.
pub(super) fn account(entry: &Entry, metrics: &Metrics, from: Side, event: Event) {
    log_event(from, event);
    match event {
        Event::Message { command, .. } => {
            let (counter, direction) = match from {
                Side::Client => (&entry.messages_from_client, Direction::ClientToRemote),
                Side::Remote => (&entry.messages_to_client, Direction::RemoteToClient),
            };
            Traffic::add(counter, 1);
            metrics.message(direction, &command);
        }
        Event::Decoy { .. } => metrics.decoy(),
        Event::Dropped { .. } => metrics.dropped(),
        Event::VersionPacket { .. } => {}
    }
}

fn log_event(from: Side, event: Event) {
    let to = match from {
        Side::Client => "remote",
        Side::Remote => "client",
    };
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
