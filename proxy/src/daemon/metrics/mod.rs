//! Prometheus metrics: plain atomic counters on the data path (no lock per message), rendered
//! in the text exposition format on scrape (`text`, with `process`'s standard metrics) and
//! served by `web` (`--metrics 127.0.0.1:9324`, off by default).

mod process;
mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::labels::{FailureReason, RefusalKind, TransportKind};
use super::registry::Registry;
use super::socks5::wire::Reply;
use bip324_control::Tallies;
use bip324_protocol::message_type::{self, SHORT_IDS};
use bip324_protocol::v1::Command;

/// Commands without a short ID that are common enough to count on their own; any other is
/// counted as "other" (a peer chooses command names: labels must stay few).
const LONG_COMMANDS: [&str; 8] = [
    "version",
    "verack",
    "sendheaders",
    "wtxidrelay",
    "sendaddrv2",
    "getaddr",
    "sendtxrcncl",
    "reject",
];
/// Message types counted: those with a short id, the common long ones, and "other".
const TYPES: usize = SHORT_IDS + LONG_COMMANDS.len() + 1;
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Which way a message went: from the accepted socket (a client, an inbound peer) to the
/// dialled one, or back. Labelled `client_to_remote` and `remote_to_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    AcceptedToDialled = 0,
    DialledToAccepted = 1,
}

pub(crate) struct Metrics {
    opened: [AtomicU64; TransportKind::ALL.len()],
    inbound_opened: [AtomicU64; TransportKind::ALL.len()],
    socks5_replies: [AtomicU64; Reply::ALL.len()],
    refused: [AtomicU64; RefusalKind::ALL.len()],
    failed: [AtomicU64; FailureReason::ALL.len()],
    messages: [[AtomicU64; TYPES]; 2],
    decoys: AtomicU64,
    dropped: AtomicU64,
    panics: AtomicU64,
    handshake_buckets: [AtomicU64; BUCKETS.len()],
    handshake_count: AtomicU64,
    handshake_micros: AtomicU64,
    /// When the proxy started (the metrics are made then). Read here rather than from
    /// /proc/stat, which the service's sandbox (`ProcSubset=pid`) hides.
    started: std::time::SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            opened: Default::default(),
            inbound_opened: Default::default(),
            socks5_replies: Default::default(),
            refused: Default::default(),
            failed: Default::default(),
            // Default stops at arrays of 32.
            messages: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            decoys: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            handshake_buckets: Default::default(),
            handshake_count: AtomicU64::new(0),
            handshake_micros: AtomicU64::new(0),
            started: std::time::SystemTime::now(),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The label of a command: its own name if it has a short ID or is a common one, else "other".
fn type_index(command: &Command) -> usize {
    if let Some(id) = message_type::short_id(command) {
        return usize::from(id) - 1;
    }
    LONG_COMMANDS
        .iter()
        .position(|c| *c == command.name())
        .map_or(TYPES - 1, |i| SHORT_IDS + i)
}

fn type_label(index: usize) -> String {
    match index {
        0..SHORT_IDS => message_type::command_for_short_id(index as u8 + 1)
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        i if i < SHORT_IDS + LONG_COMMANDS.len() => LONG_COMMANDS[i - SHORT_IDS].to_string(),
        _ => "other".to_string(),
    }
}

impl Metrics {
    /// When the proxy started.
    pub(crate) fn started(&self) -> std::time::SystemTime {
        self.started
    }

    /// A connection opened: counted with all the others, and inbound ones on their own too.
    pub(crate) fn opened(&self, direction: bip324_control::Direction, transport: TransportKind) {
        bump(&self.opened[transport as usize]);
        if direction == bip324_control::Direction::Inbound {
            bump(&self.inbound_opened[transport as usize]);
        }
    }

    /// A reply sent to a SOCKS5 client.
    pub(crate) fn socks5_reply(&self, code: Reply) {
        bump(&self.socks5_replies[code as usize]);
    }

    pub(crate) fn refused(&self, reason: RefusalKind) {
        bump(&self.refused[reason as usize]);
    }

    pub(crate) fn failed(&self, reason: FailureReason) {
        bump(&self.failed[reason as usize]);
    }

    pub(crate) fn message(&self, flow: Flow, command: &Command) {
        bump(&self.messages[flow as usize][type_index(command)]);
    }

    pub(crate) fn decoy(&self) {
        bump(&self.decoys);
    }

    pub(crate) fn dropped(&self) {
        bump(&self.dropped);
    }

    /// A connection's task panicked (a bug): that connection was closed, no other.
    pub(crate) fn panicked(&self) {
        bump(&self.panics);
    }

    /// The counters by word, and the bytes by wire: the status document's tallies.
    pub(crate) fn tallies(&self, registry: &Registry) -> Tallies {
        fn by_word<K: Copy + Ord>(all: &[K], counters: &[AtomicU64]) -> BTreeMap<K, u64> {
            let counts = counters.iter().map(|c| c.load(Ordering::Relaxed));
            all.iter().copied().zip(counts).collect()
        }
        Tallies {
            opened: by_word(TransportKind::ALL, &self.opened),
            refused: by_word(RefusalKind::ALL, &self.refused),
            failed: by_word(FailureReason::ALL, &self.failed),
            wire: registry.wire_totals().by_wire(),
        }
    }

    pub(crate) fn handshake(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.handshake_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bump(bucket);
            }
        }
        bump(&self.handshake_count);
        self.handshake_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }
}
