//! Cover traffic (`--shaping cover`): while a connection is idle, the proxy sends a decoy
//! packet at randomized intervals, so that silence and activity look less different. Cover
//! bytes are spent from two token buckets, the connection's and the proxy's: when either is
//! empty, no cover is sent (messages are never held back for it).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket of bytes per second, holding at most one second's worth.
pub(super) struct Budget {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub(super) fn per_second(rate: u64) -> Budget {
        Budget {
            rate,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Spends `bytes` if the bucket holds them.
    pub(super) fn take(&self, bytes: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate as f64)
            .min(self.rate as f64);
        *last = now;
        if *tokens >= bytes as f64 {
            *tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// One connection's cover schedule and budgets.
pub(super) struct Cover {
    interval: Duration,
    connection: Budget,
    global: Arc<Budget>,
}

impl Cover {
    pub(super) fn new(interval: Duration, per_connection: u64, global: Arc<Budget>) -> Cover {
        Cover {
            interval,
            connection: Budget::per_second(per_connection),
            global,
        }
    }

    /// The idle time before the next decoy: the interval times a random factor in [0.5, 1.5),
    /// so that cover carries no clock.
    pub(super) fn next_wait(&self) -> Duration {
        let mut random = [0u8; 2];
        let factor = match getrandom::fill(&mut random) {
            Ok(()) => 0.5 + f64::from(u16::from_le_bytes(random)) / 65536.0,
            Err(_) => 1.0,
        };
        self.interval.mul_f64(factor)
    }

    /// Whether both budgets allow `bytes` more of cover now.
    pub(super) fn take(&self, bytes: usize) -> bool {
        // The connection's first: a refusal there spends nothing of the proxy's.
        self.connection.take(bytes) && self.global.take(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_holds_one_second_and_refills() {
        let budget = Budget::per_second(1000);
        assert!(budget.take(600));
        assert!(budget.take(400));
        assert!(!budget.take(100), "empty");
        std::thread::sleep(Duration::from_millis(150));
        assert!(budget.take(100), "refilled at its rate");
        assert!(!budget.take(100));
    }

    #[test]
    fn waits_are_randomized_around_the_interval() {
        let cover = Cover::new(Duration::from_secs(2), 1, Arc::new(Budget::per_second(1)));
        let waits: Vec<Duration> = (0..50).map(|_| cover.next_wait()).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(1) && *w < Duration::from_secs(3))
        );
        assert!(waits.iter().any(|w| *w != waits[0]), "not a fixed clock");
    }
}
