//! The status document: what the control socket answers and the dashboard's JSON endpoint
//! serves, made in one place so the two can never tell different stories.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bip324_control::{ProxyInfo, StatusDocument, VERSION};

use super::config::Shaping;
use super::context::Context;
use super::metrics::Metrics;
use super::registry::Registry;
use super::traffic::TrafficHistory;

pub(crate) struct StatusSource {
    /// The proxy's own part, fixed at start.
    proxy: ProxyInfo,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) traffic: Arc<TrafficHistory>,
}

impl StatusSource {
    /// What `ctx`'s proxy reports, with the addresses its inbound and SOCKS5 fronts listen on.
    pub(crate) fn new(ctx: &Context, inbound: Vec<SocketAddr>, socks5: Vec<SocketAddr>) -> Self {
        let started = ctx.metrics.started().duration_since(UNIX_EPOCH);
        let proxy = ProxyInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: started.unwrap_or_default().as_secs_f64(),
            listen: ctx.listening.clone(),
            inbound,
            upstream_socks5: ctx.config.upstream_socks5,
            socks5,
            shaping: Some(shaping_word(ctx.config.shaping).to_string()),
            v1_fallback: Some(ctx.config.v1_fallback),
        };
        StatusSource {
            proxy,
            registry: Arc::clone(&ctx.registry),
            metrics: Arc::clone(&ctx.metrics),
            traffic: Arc::default(),
        }
    }

    pub(crate) fn document(&self) -> StatusDocument {
        let tallies = self.metrics.tallies(&self.registry);
        let traffic = self.traffic.samples_until(SystemTime::now(), tallies.wire);
        StatusDocument {
            version: VERSION,
            proxy: self.proxy.clone(),
            connections: self.registry.snapshot(),
            totals: self.registry.totals(),
            recent: self.registry.recent(),
            tallies,
            traffic,
        }
    }
}

/// `--shaping`'s value as the command line spells it.
fn shaping_word(shaping: Shaping) -> &'static str {
    match shaping {
        Shaping::None => "none",
        Shaping::Buckets => "buckets",
        Shaping::Cover => "cover",
    }
}
