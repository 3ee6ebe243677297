//! The last hour of traffic by wire, for the dashboard's chart: the proxy's byte totals are
//! sampled every `TRAFFIC_SAMPLE_SECONDS` and the differences kept in a bounded ring, so a page
//! opened now shows the hour before it, whatever the churn of connections.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bip324_control::{ByWire, TRAFFIC_SAMPLE_SECONDS, TRAFFIC_SAMPLES, TrafficSample};
use tokio_util::sync::CancellationToken;

use super::registry::Registry;

#[derive(Default)]
pub(crate) struct TrafficHistory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The totals at the last sample.
    last: ByWire,
    samples: VecDeque<TrafficSample>,
}

impl Inner {
    /// What moved since the last sample, given the totals now.
    fn since_last(&self, totals: ByWire) -> ByWire {
        ByWire {
            v1: totals.v1.saturating_sub(self.last.v1),
            v2: totals.v2.saturating_sub(self.last.v2),
        }
    }
}

impl TrafficHistory {
    /// Records what moved since the last sample, given the totals `now`.
    pub(crate) fn record(&self, at: SystemTime, totals: ByWire) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = inner.since_last(totals);
        inner.last = totals;
        if inner.samples.len() == TRAFFIC_SAMPLES {
            inner.samples.pop_front();
        }
        let at = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        inner.samples.push_back(TrafficSample {
            at: at.as_secs_f64(),
            bytes,
        });
    }

    /// The samples, oldest first, and last the span in progress: what moved since the last
    /// sample until `now`, when the totals are `totals`. A page opened seconds after a
    /// connection already sees it move.
    pub(crate) fn samples_until(&self, now: SystemTime, totals: ByWire) -> Vec<TrafficSample> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let at = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let current = TrafficSample {
            at,
            bytes: inner.since_last(totals),
        };
        let past = inner.samples.iter().copied().filter(|s| s.at < at);
        past.chain(std::iter::once(current)).collect()
    }
}

/// Samples `registry`'s totals into `history` until shutdown.
pub(crate) async fn sample(
    history: Arc<TrafficHistory>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(TRAFFIC_SAMPLE_SECONDS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: it sets the baseline (nothing has moved yet).
    loop {
        tokio::select! {
            _ = ticks.tick() => history.record(SystemTime::now(), registry.wire_totals().by_wire()),
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn keeps_the_differences_of_the_last_hour() {
        let history = TrafficHistory::default();
        history.record(at(10), ByWire { v1: 5, v2: 7 });
        history.record(at(20), ByWire { v1: 5, v2: 107 });
        let samples = history.samples_until(at(25), ByWire { v1: 8, v2: 107 });
        assert_eq!(samples[0].bytes, ByWire { v1: 5, v2: 7 });
        assert_eq!(samples[1].bytes, ByWire { v1: 0, v2: 100 });
        assert_eq!(samples[1].at, 20.0);
        assert_eq!(
            samples[2].bytes,
            ByWire { v1: 3, v2: 0 },
            "the span in progress"
        );
        assert_eq!(samples[2].at, 25.0);
        for i in 0..TRAFFIC_SAMPLES as u64 {
            history.record(at(30 + i), ByWire { v1: 5 + i, v2: 107 });
        }
        let last = ByWire {
            v1: 5 + TRAFFIC_SAMPLES as u64 - 1,
            v2: 107,
        };
        let samples = history.samples_until(at(1000), last);
        assert_eq!(
            samples.len(),
            TRAFFIC_SAMPLES + 1,
            "an hour, and the span in progress"
        );
        assert_eq!(samples[0].at, 30.0, "the oldest went first");
        let hour = &samples[1..TRAFFIC_SAMPLES];
        assert!(hour.iter().all(|s| s.bytes == ByWire { v1: 1, v2: 0 }));
        assert_eq!(samples[TRAFFIC_SAMPLES].bytes, ByWire::default());
    }
}
