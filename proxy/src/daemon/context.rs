//! What every connection of every front shares.

use std::net::SocketAddr;
use std::sync::Arc;

use super::config::{Config, Shaping};
use super::cover::{Budget, Cover};
use super::front::Front;
use super::handover::Departure;
use super::log_budget::LogBudget;
use super::loop_guard::LoopGuard;
use super::metrics::Metrics;
use super::pending::PendingPerSource;
use super::registry::Registry;
use super::transparent::Binder;

pub(crate) struct Context {
    pub(crate) config: Config,
    /// Addresses the proxy accepts redirected connections on: a connection "to" one of them
    /// was not redirected.
    pub(crate) listening: Vec<SocketAddr>,
    pub(crate) loop_guard: Arc<LoopGuard>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    /// Inbound mode: binds sockets to peers' addresses.
    pub(crate) binder: Option<Binder>,
    /// Inbound connections not yet at the node, per source network.
    pub(crate) inbound_pending: Arc<PendingPerSource>,
    /// Lines a second for what strangers cause (refusals, an inbound peer's failures), per
    /// front: one front's flood never silences another's. The metrics count them all.
    stranger_log: [LogBudget; 3],
    /// The proxy's budget of cover traffic (`--shaping cover`).
    cover_budget: Arc<Budget>,
    /// Where relaying connections leave for a successor (`--take-over`).
    pub(crate) departure: Arc<Departure>,
}

impl Context {
    pub(crate) fn new(config: Config, listening: Vec<SocketAddr>, binder: Option<Binder>) -> Self {
        let cover_budget = Arc::new(Budget::per_second(config.cover_budget_total));
        Context {
            config,
            listening,
            loop_guard: Arc::default(),
            registry: Arc::default(),
            metrics: Arc::default(),
            binder,
            inbound_pending: Arc::default(),
            stranger_log: std::array::from_fn(|_| LogBudget::per_second(10)),
            cover_budget,
            departure: Arc::default(),
        }
    }

    pub(crate) fn stranger_log(&self, front: Front) -> &LogBudget {
        let index = match front {
            Front::Redirect | Front::Unknown => 0,
            Front::Inbound => 1,
            Front::Socks5 => 2,
        };
        &self.stranger_log[index]
    }

    /// A connection's cover schedule, with `--shaping cover`.
    pub(crate) fn cover(&self) -> Option<Cover> {
        (self.config.shaping == Shaping::Cover).then(|| {
            Cover::new(
                self.config.cover_interval,
                self.config.cover_budget,
                Arc::clone(&self.cover_budget),
            )
        })
    }
}
