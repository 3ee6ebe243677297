//! The live connections, for the control socket: who, where, which transport and session,
//! and their traffic, read while they run; and the last few that ended, with how, so that
//! `bip324-redirect check` can say why its connection failed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bip324_control::{ByWire, ConnectionStatus, Counts, EndedConnection, Outcome, RECENT};

use super::labels::{CloseKind, Direction, FailureReason, Front, TransportKind};
use super::relay::{Side, Traffic};

/// One live connection; its counters are updated by its relay without locking.
pub(crate) struct Entry {
    id: u64,
    front: Front,
    direction: Direction,
    client: SocketAddr,
    destination: SocketAddr,
    started: SystemTime,
    pub(crate) traffic: Traffic,
    pub(crate) messages_from_client: AtomicU64,
    pub(crate) messages_to_client: AtomicU64,
    opened: Mutex<Opened>,
}

struct Opened {
    /// The socket that carries v2: the dialled one out, the accepted one in, none once the
    /// connection opened in plaintext.
    encrypted: Option<Side>,
    network: Option<String>,
    transport: Option<TransportKind>,
    session_id: Option<String>,
    outcome: Option<Outcome>,
}

impl Entry {
    pub(crate) fn network(&self) -> Option<String> {
        self.opened().network.clone()
    }

    pub(crate) fn set_network(&self, network: String) {
        self.opened().network = Some(network);
    }

    pub(crate) fn set_opened(&self, transport: TransportKind, session_id: Option<[u8; 32]>) {
        let mut opened = self.opened();
        opened.transport = Some(transport);
        if transport != TransportKind::V2 {
            opened.encrypted = None;
        }
        opened.session_id = session_id.map(hex::encode);
    }

    /// It ended before it was relayed.
    pub(crate) fn set_failed(&self, reason: FailureReason) {
        self.opened().outcome = Some(Outcome::Failed(reason));
    }

    /// It was relayed, then closed.
    pub(crate) fn set_closed(&self, kind: CloseKind) {
        self.opened().outcome = Some(Outcome::Closed(kind));
    }

    fn ended(&self) -> EndedConnection {
        let opened = self.opened();
        EndedConnection {
            id: self.id,
            direction: self.direction,
            front: self.front,
            client: self.client,
            destination: self.destination,
            ended: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            transport: opened.transport,
            outcome: opened.outcome.unwrap_or(Outcome::Unknown),
        }
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, Opened> {
        self.opened.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status(&self) -> ConnectionStatus {
        let opened = self.opened();
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        ConnectionStatus {
            id: self.id,
            direction: self.direction,
            front: self.front,
            client: self.client,
            destination: self.destination,
            network: opened.network.clone(),
            transport: opened.transport,
            session_id: opened.session_id.clone(),
            started: started.as_secs_f64(),
            duration_seconds: self
                .started
                .elapsed()
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            counts: self.counts(),
        }
    }

    /// Bytes by flow and by wire, as the metrics show them.
    fn wire(&self) -> WireBytes {
        let encrypted = self.opened().encrypted;
        let t = &self.traffic;
        let mut wire = WireBytes::default();
        // Each flow reads from one socket and writes to the other.
        for (flow, (from, read), (to, written)) in [
            (
                0,
                (Side::Accepted, &t.accepted_in),
                (Side::Dialled, &t.dialled_out),
            ),
            (
                1,
                (Side::Dialled, &t.dialled_in),
                (Side::Accepted, &t.accepted_out),
            ),
        ] {
            for (side, counter) in [(from, read), (to, written)] {
                let v2 = usize::from(encrypted == Some(side));
                wire.0[flow][v2] += counter.load(Ordering::Relaxed);
            }
        }
        wire
    }

    fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            client_in: get(&self.traffic.accepted_in),
            client_out: get(&self.traffic.accepted_out),
            remote_in: get(&self.traffic.dialled_in),
            remote_out: get(&self.traffic.dialled_out),
            messages_from_client: get(&self.messages_from_client),
            messages_to_client: get(&self.messages_to_client),
        }
    }
}

/// Bytes by flow (`[0]` from the accepted socket to the dialled one, `[1]` back) and by wire
/// (`[0]` plaintext: v1, or passed through unchanged; `[1]` v2), counted on both sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WireBytes(pub(crate) [[u64; 2]; 2]);

impl WireBytes {
    /// Both flows together, by wire.
    pub(crate) fn by_wire(self) -> ByWire {
        let [[v1_out, v2_out], [v1_back, v2_back]] = self.0;
        ByWire {
            v1: v1_out + v1_back,
            v2: v2_out + v2_back,
        }
    }

    fn add(&mut self, other: WireBytes) {
        for (mine, theirs) in self.0.iter_mut().flatten().zip(other.0.iter().flatten()) {
            *mine += theirs;
        }
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<Live>,
}

/// Under one lock, so a connection moves from `entries` to `closed` atomically and totals
/// never go backwards.
#[derive(Default)]
struct Live {
    entries: HashMap<u64, Arc<Entry>>,
    closed: Counts,
    closed_wire: WireBytes,
    /// The last `RECENT` ended connections, oldest first: bounded, whatever the churn.
    recent: VecDeque<EndedConnection>,
}

impl Registry {
    /// Adds a connection; it leaves the registry when the returned guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        kind: (Front, Direction),
        client: SocketAddr,
        destination: SocketAddr,
    ) -> Registration {
        self.register_since(id, kind, (client, destination), SystemTime::now())
    }

    /// Adds a connection that began at `started` (in a predecessor, before a hand-over).
    pub(crate) fn register_since(
        self: &Arc<Self>,
        id: u64,
        (front, direction): (Front, Direction),
        (client, destination): (SocketAddr, SocketAddr),
        started: SystemTime,
    ) -> Registration {
        let entry = Arc::new(Entry {
            id,
            front,
            direction,
            client,
            destination,
            started,
            traffic: Traffic::default(),
            messages_from_client: AtomicU64::new(0),
            messages_to_client: AtomicU64::new(0),
            opened: Mutex::new(Opened {
                encrypted: Some(match direction {
                    Direction::Inbound => Side::Accepted,
                    Direction::Outbound => Side::Dialled,
                }),
                network: None,
                transport: None,
                session_id: None,
                outcome: None,
            }),
        });
        self.lock().entries.insert(id, Arc::clone(&entry));
        Registration {
            registry: Arc::clone(self),
            entry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Traffic of every connection so far, the live ones included.
    pub(crate) fn totals(&self) -> Counts {
        let live = self.lock();
        let mut totals = live.closed;
        for entry in live.entries.values() {
            totals.add(entry.counts());
        }
        totals
    }

    /// Bytes of every connection so far by flow and wire, the live ones included.
    pub(crate) fn wire_totals(&self) -> WireBytes {
        let live = self.lock();
        let mut totals = live.closed_wire;
        for entry in live.entries.values() {
            totals.add(entry.wire());
        }
        totals
    }

    /// The last few connections that ended, oldest first.
    pub(crate) fn recent(&self) -> Vec<EndedConnection> {
        self.lock().recent.iter().cloned().collect()
    }

    /// Every live connection, oldest first. The lock is held only to copy the handles.
    pub(crate) fn snapshot(&self) -> Vec<ConnectionStatus> {
        let entries: Vec<Arc<Entry>> = self.lock().entries.values().cloned().collect();
        let mut statuses: Vec<ConnectionStatus> = entries.iter().map(|e| e.status()).collect();
        statuses.sort_by_key(|s| s.id);
        statuses
    }
}

/// Keeps a connection listed; dropping it unlists it.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    pub(crate) entry: Arc<Entry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let ended = self.entry.ended();
        let mut live = self.registry.lock();
        live.entries.remove(&self.entry.id);
        live.closed.add(self.entry.counts());
        live.closed_wire.add(self.entry.wire());
        if live.recent.len() >= RECENT {
            live.recent.pop_front();
        }
        live.recent.push_back(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKS5: (Front, Direction) = (Front::Socks5, Direction::Outbound);
    const INBOUND: (Front, Direction) = (Front::Inbound, Direction::Inbound);

    #[test]
    fn connections_are_listed_while_registered() {
        let registry = Arc::new(Registry::default());
        let client: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let destination: SocketAddr = "10.0.0.2:8333".parse().unwrap();
        let first = registry.register(1, SOCKS5, client, destination);
        let second = registry.register(2, INBOUND, client, destination);
        first.entry.set_network("regtest".into());
        first.entry.set_opened(TransportKind::V2, Some([0xab; 32]));
        Traffic::add(&first.entry.traffic.accepted_in, 100);
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].transport, Some(TransportKind::V2));
        assert_eq!(snapshot[0].counts.client_in, 100);
        // The control socket's JSON keeps the counts beside the other fields.
        let json = serde_json::to_value(&snapshot[0]).unwrap();
        assert_eq!(json["client_in"], 100);
        assert_eq!(
            snapshot[0].session_id.as_deref(),
            Some(&"ab".repeat(32)[..])
        );
        assert_eq!(snapshot[1].transport, None);
        assert_eq!(json["direction"], "outbound");
        assert_eq!(json["transport"], "v2");
        assert_eq!(snapshot[1].direction, Direction::Inbound);
        assert_eq!(snapshot[1].front, Front::Inbound);
        assert_eq!(snapshot[0].front, Front::Socks5);
        Traffic::add(&second.entry.traffic.dialled_out, 7);
        let before = registry.totals();
        assert_eq!((before.client_in, before.remote_out), (100, 7));
        // Outbound, v2 is on the dialled socket; inbound, on the accepted one.
        Traffic::add(&second.entry.traffic.accepted_in, 50);
        assert_eq!(registry.wire_totals(), WireBytes([[107, 50], [0, 0]]));
        second.entry.set_opened(TransportKind::V1, None);
        assert_eq!(registry.wire_totals(), WireBytes([[157, 0], [0, 0]]));
        let wire = registry.wire_totals();
        let before = registry.totals();
        drop(first);
        assert_eq!(registry.snapshot().len(), 1);
        assert_eq!(
            registry.totals(),
            before,
            "closing moves the counts, keeps the totals"
        );
        drop(second);
        assert_eq!(registry.len(), 0);
        assert_eq!(registry.totals(), before);
        assert_eq!(registry.wire_totals(), wire);
    }

    /// Ended connections are remembered with how they ended, the last `RECENT` only.
    #[test]
    fn ended_connections_keep_their_outcome_and_only_the_last_few() {
        let registry = Arc::new(Registry::default());
        let client: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let destination: SocketAddr = "10.0.0.2:8333".parse().unwrap();
        let failed = registry.register(1, SOCKS5, client, destination);
        failed.entry.set_failed(FailureReason::ConnectError);
        drop(failed);
        let closed = registry.register(2, SOCKS5, client, destination);
        closed.entry.set_opened(TransportKind::V2, None);
        closed.entry.set_closed(CloseKind::RemoteClosed);
        drop(closed);
        let recent = registry.recent();
        assert_eq!(
            recent[0].outcome,
            Outcome::Failed(FailureReason::ConnectError)
        );
        assert_eq!(recent[0].transport, None);
        assert_eq!(recent[1].outcome, Outcome::Closed(CloseKind::RemoteClosed));
        assert_eq!(recent[1].transport, Some(TransportKind::V2));
        for id in 3..3 + RECENT as u64 {
            drop(registry.register(id, SOCKS5, client, destination));
        }
        let recent = registry.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].id, 3);
        assert_eq!(recent[RECENT - 1].outcome, Outcome::Unknown);
    }
}
