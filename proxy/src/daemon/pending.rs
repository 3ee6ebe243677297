//! Inbound connections that have not reached the node yet, counted per source address and per
//! source network. The node's own eviction cannot see them, so without this one host could
//! hold every slot with connections that never speak. Networks follow Bitcoin Core's coarse
//! netgroups: an IPv4 /16, an IPv6 /32.
//!
//! One address may hold `PER_ADDRESS`; beyond that its newcomers are refused. A network may
//! hold `PER_NETWORK`; when it is full, a newcomer is still admitted and the oldest pending
//! connection of the address holding the most is evicted (closed). So an address that holds
//! none is never refused because of its neighbours: whoever hoards pays for the newcomer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// Most connections of one address still in their first bytes or handshake: more than an
/// honest peer (or a few behind one NAT) opens at once.
pub(super) const PER_ADDRESS: usize = 4;

/// Most connections of one source network still in their first bytes or handshake: far more
/// than honest peers open at once, far fewer than the connection limit.
pub(super) const PER_NETWORK: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Group([u8; 4]);

fn group(ip: IpAddr) -> Group {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            Group([4, a, b, 0])
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.octets();
            Group([a, b, c, d])
        }
    }
}

struct Entry {
    ip: IpAddr,
    /// Admission order: the lowest is the oldest.
    seq: u64,
    evict: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Each network's pending connections, in admission order; never empty, never more
    /// than `PER_NETWORK`.
    networks: HashMap<Group, Vec<Entry>>,
    next: u64,
}

#[derive(Default)]
pub(super) struct PendingPerSource {
    state: Mutex<State>,
}

/// One pending connection; dropping it (the connection reached the node, or ended) frees it.
pub(super) struct Pending {
    owner: Arc<PendingPerSource>,
    group: Group,
    seq: u64,
    evict: CancellationToken,
}

impl PendingPerSource {
    /// Counts a connection from `ip`; `None` when that address already holds `PER_ADDRESS`.
    /// When its network is full, the oldest connection of the address holding the most
    /// there is evicted to make room (its `Pending::evicted` completes).
    pub(super) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Pending> {
        let ip = ip.to_canonical();
        let group = group(ip);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = state.next;
        state.next += 1;
        let entries = state.networks.entry(group).or_default();
        if entries.iter().filter(|e| e.ip == ip).count() >= PER_ADDRESS {
            return None;
        }
        if entries.len() >= PER_NETWORK {
            let victim = victim(entries);
            entries.remove(victim).evict.cancel();
        }
        let evict = CancellationToken::new();
        entries.push(Entry {
            ip,
            seq,
            evict: evict.clone(),
        });
        Some(Pending {
            owner: Arc::clone(self),
            group,
            seq,
            evict,
        })
    }
}

/// The index of the oldest entry of the address holding the most (of those, the one whose
/// oldest entry is oldest). `entries` is in admission order and not empty.
fn victim(entries: &[Entry]) -> usize {
    let held = |ip: IpAddr| entries.iter().filter(|e| e.ip == ip).count();
    let most = entries.iter().map(|e| held(e.ip)).max().unwrap_or(0);
    // In admission order, the first entry of a top holder is that holder's oldest, and the
    // first such entry overall breaks ties by age.
    entries.iter().position(|e| held(e.ip) == most).unwrap_or(0)
}

impl Pending {
    /// Completes when this connection was evicted to admit a newcomer of its network: the
    /// caller closes it.
    pub(super) async fn evicted(&self) {
        self.evict.cancelled().await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = self
            .owner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entries) = state.networks.get_mut(&self.group) {
            // Absent when it was evicted.
            entries.retain(|e| e.seq != self.seq);
            if entries.is_empty() {
                state.networks.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn is_evicted(p: &Pending) -> bool {
        p.evict.is_cancelled()
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let pending = Arc::new(PendingPerSource::default());
        let held: Vec<Pending> = (0..PER_ADDRESS)
            .map(|_| pending.enter(ip("198.51.100.1")).unwrap())
            .collect();
        assert!(pending.enter(ip("198.51.100.1")).is_none(), "same address");
        assert!(
            pending.enter(ip("::ffff:198.51.100.1")).is_none(),
            "the same address, v4-mapped"
        );
        assert!(pending.enter(ip("198.51.100.2")).is_some(), "a neighbour");
        assert!(held.iter().all(|p| !is_evicted(p)));
        drop(held);
        assert!(pending.enter(ip("198.51.100.1")).is_some(), "freed on drop");
        assert!(pending.state.lock().unwrap().networks.is_empty());
    }

    #[test]
    fn a_full_network_evicts_the_oldest_of_the_biggest_holder() {
        let pending = Arc::new(PendingPerSource::default());
        // Four addresses of one /16 fill it: .1 and .2 first, then .3 and .4.
        let mut held: Vec<(IpAddr, Pending)> = Vec::new();
        for host in 1..=PER_NETWORK / PER_ADDRESS {
            let addr = ip(&format!("198.51.7.{host}"));
            for _ in 0..PER_ADDRESS {
                held.push((addr, pending.enter(addr).unwrap()));
            }
        }
        // A newcomer of the same /16 that holds none is admitted; the oldest of the first
        // top holder (.1's first) goes.
        let newcomer = pending.enter(ip("198.51.200.9")).expect("never refused");
        let evicted: Vec<usize> = (0..held.len())
            .filter(|&i| is_evicted(&held[i].1))
            .collect();
        assert_eq!(evicted, vec![0]);
        // Now .2, .3 and .4 hold the most (4 each): .2's oldest goes next.
        let _second = pending.enter(ip("198.51.200.10")).unwrap();
        let evicted: Vec<usize> = (0..held.len())
            .filter(|&i| is_evicted(&held[i].1))
            .collect();
        assert_eq!(evicted, vec![0, PER_ADDRESS]);
        assert!(!is_evicted(&newcomer));
        // Other networks and families are untouched.
        assert!(pending.enter(ip("198.52.0.1")).is_some(), "another /16");
        assert!(
            pending.enter(ip("2001:db8::1")).is_some(),
            "IPv6 counts apart"
        );
        let state = pending.state.lock().unwrap();
        let network = &state.networks[&group(ip("198.51.0.0"))];
        assert_eq!(network.len(), PER_NETWORK, "still at most its share");
    }

    #[test]
    fn many_single_addresses_evict_the_oldest() {
        let pending = Arc::new(PendingPerSource::default());
        let held: Vec<Pending> = (0..PER_NETWORK)
            .map(|i| pending.enter(ip(&format!("2001:db8:0:{i}::1"))).unwrap())
            .collect();
        let _newcomer = pending.enter(ip("2001:db8:ffff::1")).unwrap();
        assert!(is_evicted(&held[0]));
        assert!(held[1..].iter().all(|p| !is_evicted(p)));
        // An evicted connection's drop does not free another's slot.
        drop(held);
        assert_eq!(pending.state.lock().unwrap().networks.len(), 1);
    }

    #[tokio::test]
    async fn evicted_completes_for_the_victim() {
        let pending = Arc::new(PendingPerSource::default());
        let held: Vec<Pending> = (0..PER_NETWORK)
            .map(|i| pending.enter(ip(&format!("10.9.0.{i}"))).unwrap())
            .collect();
        let _newcomer = pending.enter(ip("10.9.1.1")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), held[0].evicted())
            .await
            .expect("the oldest is told");
    }
}
