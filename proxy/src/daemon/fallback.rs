//! Remembers destinations that only speak v1, so that with `--v1-fallback` the next
//! connection to one of them does not wait for a v2 attempt to fail again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub struct V1OnlyDestinations {
    ttl: Duration,
    entries: Mutex<HashMap<SocketAddr, Instant>>,
}

impl V1OnlyDestinations {
    /// Bounds memory whatever the clients connect to.
    const CAPACITY: usize = 4096;

    pub fn new(ttl: Duration) -> Self {
        V1OnlyDestinations {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn remember(&self, destination: SocketAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= Self::CAPACITY {
            entries.retain(|_, expiry| *expiry > now);
        }
        if entries.len() >= Self::CAPACITY {
            // Still full of live entries: forget the one closest to expiry.
            if let Some(oldest) = entries.iter().min_by_key(|(_, e)| **e).map(|(a, _)| *a) {
                entries.remove(&oldest);
            }
        }
        entries.insert(destination, now + self.ttl);
    }

    pub fn is_v1_only(&self, destination: SocketAddr, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&destination) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                entries.remove(&destination);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let cache = V1OnlyDestinations::new(Duration::from_secs(60));
        let dest: SocketAddr = "10.0.0.2:8333".parse().unwrap();
        let t0 = Instant::now();
        assert!(!cache.is_v1_only(dest, t0));
        cache.remember(dest, t0);
        assert!(cache.is_v1_only(dest, t0 + Duration::from_secs(59)));
        assert!(!cache.is_v1_only(dest, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn capacity_is_bounded() {
        let cache = V1OnlyDestinations::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(V1OnlyDestinations::CAPACITY + 10) {
            let dest = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8333));
            cache.remember(dest, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(
            cache.entries.lock().unwrap().len(),
            V1OnlyDestinations::CAPACITY
        );
        // The newest entry survived.
        let newest = V1OnlyDestinations::CAPACITY + 9;
        let dest = SocketAddr::from(([10, 0, (newest >> 8) as u8, newest as u8], 8333));
        assert!(cache.is_v1_only(dest, t0));
    }
}
