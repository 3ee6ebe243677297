//! The status document: what the control socket answers and the dashboard's JSON endpoint
//! serves, made in one place so the two can never tell different stories.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bip324_control::{ProxyInfo, StatusDocument, VERSION};

use super::config::Shaping;
use super::metrics::Metrics;
use super::registry::Registry;
use super::traffic::TrafficHistory;

pub(crate) struct StatusSource {
    /// The proxy's own part, fixed at start.
    pub(crate) proxy: ProxyInfo,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) traffic: Arc<TrafficHistory>,
}

impl StatusSource {
    /// The proxy's part of the document, for a proxy started `started`.
    pub(crate) fn proxy_info(started: SystemTime) -> ProxyInfo {
        ProxyInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            listen: Vec::new(),
            inbound: Vec::new(),
            upstream_socks5: None,
            socks5: Vec::new(),
            shaping: None,
            v1_fallback: None,
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
pub(crate) fn shaping_word(shaping: Shaping) -> &'static str {
    match shaping {
        Shaping::None => "none",
        Shaping::Buckets => "buckets",
        Shaping::Cover => "cover",
    }
}
