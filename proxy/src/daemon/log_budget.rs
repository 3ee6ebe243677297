//! A cap on how many lines one kind of event may log per second. Any local user can connect
//! to the proxy directly and be refused; without a cap, a flood of such connections would
//! spend journald's per-service rate limit, and journald would then drop the lines that matter
//! (other clients' connections) along with the flood.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

pub(super) struct LogBudget {
    per_window: u32,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    /// Events not logged since the last line that was.
    suppressed: u64,
}

impl LogBudget {
    pub(super) const fn per_second(lines: u32) -> Self {
        LogBudget {
            per_window: lines,
            window: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some` when this event may be logged, with how many were left out before it; `None`
    /// when it must not.
    pub(super) fn take(&self, now: Instant) -> Option<Suppressed> {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= WINDOW)
        {
            window.started = Some(now);
            window.logged = 0;
        }
        if window.logged < self.per_window {
            window.logged += 1;
            Some(Suppressed(std::mem::take(&mut window.suppressed)))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

/// Events left out before a line that is logged: the end of that line says how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Suppressed(pub u64);

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} similar lines not logged since the last one)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_a_burst_per_window_and_counts_the_rest() {
        let budget = LogBudget::per_second(3);
        let t0 = Instant::now();
        let first: Vec<_> = (0..5).map(|_| budget.take(t0)).collect();
        let logged = Some(Suppressed(0));
        assert_eq!(first, [logged, logged, logged, None, None]);
        // Still the same window.
        assert_eq!(budget.take(t0 + Duration::from_millis(999)), None);
        // A new window: the first line reports the three left out.
        let t1 = t0 + WINDOW;
        assert_eq!(budget.take(t1), Some(Suppressed(3)));
        assert_eq!(budget.take(t1), Some(Suppressed(0)));
        assert_eq!(
            Suppressed(3).to_string(),
            " (3 similar lines not logged since the last one)"
        );
        assert_eq!(Suppressed(0).to_string(), "");
    }
}
