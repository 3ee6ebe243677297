//! Inbound connections that have not reached the node yet, counted per source network. The
//! node's own eviction cannot see them, so without this one host could hold every slot with
//! connections that never speak. Groups follow Bitcoin Core's coarse netgroups: an IPv4 /16,
//! an IPv6 /32.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Most connections of one source network still in their first bytes or handshake: far more
/// than honest peers open at once, far fewer than the connection limit.
pub const PER_SOURCE: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Group([u8; 4]);

fn group(ip: IpAddr) -> Group {
    match ip {
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

#[derive(Default)]
pub struct PendingPerSource {
    counts: Mutex<HashMap<Group, usize>>,
}

/// One pending connection; dropping it (the connection reached the node, or ended) frees it.
pub struct Pending {
    owner: Arc<PendingPerSource>,
    group: Group,
}

impl PendingPerSource {
    /// Counts a connection from `ip`; `None` when its network already has `PER_SOURCE`.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Pending> {
        let group = group(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(group).or_insert(0);
        if *count >= PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(Pending {
            owner: Arc::clone(self),
            group,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.group) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_network_cannot_take_more_than_its_share() {
        let pending = Arc::new(PendingPerSource::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held: Vec<Pending> = (0..PER_SOURCE)
            .map(|i| pending.enter(ip(&format!("198.51.{}.{}", 100, i))).unwrap())
            .collect();
        assert!(pending.enter(ip("198.51.7.7")).is_none(), "same /16");
        assert!(pending.enter(ip("198.52.0.1")).is_some(), "another /16");
        assert!(
            pending.enter(ip("2001:db8::1")).is_some(),
            "IPv6 counts apart"
        );
        drop(held);
        assert!(pending.enter(ip("198.51.7.7")).is_some(), "freed on drop");
        assert!(pending.counts.lock().unwrap().len() <= 1);
    }
}
