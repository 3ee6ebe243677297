//! The text exposition format (version 0.0.4) of the counters and the registry's totals.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::process::render_process;
use super::{BUCKETS, Metrics, type_label};
use crate::daemon::labels::{FailureReason, RefusalKind, TransportKind};
use crate::daemon::registry::Registry;
use crate::daemon::socks5::wire::Reply;

impl Metrics {
    /// The text exposition format (version 0.0.4).
    pub(crate) fn render(&self, registry: &Registry) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        render_labelled(
            &mut out,
            "connections_opened_total",
            "Connections relayed, by transport.",
            "transport",
            &labels(TransportKind::ALL, TransportKind::as_str),
            &self.opened,
        );
        render_labelled(
            &mut out,
            "inbound_connections_opened_total",
            "Peers' connections to the local node relayed (inbound mode), by transport; \
             also in connections_opened_total.",
            "transport",
            &labels(TransportKind::ALL, TransportKind::as_str),
            &self.inbound_opened,
        );
        render_labelled(
            &mut out,
            "socks5_replies_total",
            "Replies sent to SOCKS5 clients, by code.",
            "reply",
            &labels(Reply::ALL, Reply::as_str),
            &self.socks5_replies,
        );
        render_labelled(
            &mut out,
            "connections_refused_total",
            "Connections refused before anything was read, by reason.",
            "reason",
            &labels(RefusalKind::ALL, RefusalKind::as_str),
            &self.refused,
        );
        render_labelled(
            &mut out,
            "connections_failed_total",
            "Connections that ended before they were relayed, by reason.",
            "reason",
            &labels(FailureReason::ALL, FailureReason::as_str),
            &self.failed,
        );
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_connections_open Connections open now.\n# TYPE bip324_proxy_connections_open gauge\nbip324_proxy_connections_open {}",
            registry.len()
        );
        let wire = registry.wire_totals().0;
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_bytes_total Bytes moved, counted on both sockets of each connection, by direction (from the accepted socket, a client or an inbound peer, to the dialled one, or back) and by wire: v2 on a socket that carries a v2 session, v1 for plaintext (v1, or bytes passed through unchanged).\n# TYPE bip324_proxy_bytes_total counter"
        );
        for (direction, bytes) in ["client_to_remote", "remote_to_client"].iter().zip(wire) {
            for (side, value) in ["v1", "v2"].iter().zip(bytes) {
                let _ = writeln!(
                    out,
                    "bip324_proxy_bytes_total{{direction=\"{direction}\",side=\"{side}\"}} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_messages_total Messages translated, by direction and type.\n# TYPE bip324_proxy_messages_total counter"
        );
        for (direction, counts) in ["client_to_remote", "remote_to_client"]
            .iter()
            .zip(&self.messages)
        {
            for (index, count) in counts.iter().enumerate() {
                let value = get(count);
                if value > 0 {
                    let _ = writeln!(
                        out,
                        "bip324_proxy_messages_total{{direction=\"{direction}\",type=\"{}\"}} {value}",
                        type_label(index)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_decoys_received_total Decoy packets authenticated and skipped.\n# TYPE bip324_proxy_decoys_received_total counter\nbip324_proxy_decoys_received_total {}",
            get(&self.decoys)
        );
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_messages_dropped_total v2 messages without a v1 equivalent, dropped.\n# TYPE bip324_proxy_messages_dropped_total counter\nbip324_proxy_messages_dropped_total {}",
            get(&self.dropped)
        );
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_connection_panics_total Connections closed after an internal error (a bug: the log has it); no other connection was touched.\n# TYPE bip324_proxy_connection_panics_total counter\nbip324_proxy_connection_panics_total {}",
            get(&self.panics)
        );
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_handshake_duration_seconds Time to connect and complete the v2 handshake.\n# TYPE bip324_proxy_handshake_duration_seconds histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(&self.handshake_buckets) {
            let _ = writeln!(
                out,
                "bip324_proxy_handshake_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                get(count)
            );
        }
        let count = get(&self.handshake_count);
        let _ = writeln!(
            out,
            "bip324_proxy_handshake_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "bip324_proxy_handshake_duration_seconds_sum {}",
            get(&self.handshake_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "bip324_proxy_handshake_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP bip324_proxy_build_info The running version.\n# TYPE bip324_proxy_build_info gauge\nbip324_proxy_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let started = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        render_process(&mut out, started.as_secs_f64());
        out
    }
}

fn labels<K: Copy>(all: &[K], as_str: fn(K) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|k| as_str(*k)).collect()
}

fn render_labelled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counts: &[AtomicU64],
) {
    let _ = writeln!(
        out,
        "# HELP bip324_proxy_{name} {help}\n# TYPE bip324_proxy_{name} counter"
    );
    for (value, count) in values.iter().zip(counts) {
        let _ = writeln!(
            out,
            "bip324_proxy_{name}{{{label}=\"{value}\"}} {}",
            count.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::daemon::metrics::Flow;
    use bip324_protocol::v1::Command;

    /// This process's user and system CPU time, as the kernel accounts it.
    fn cpu_seconds() -> f64 {
        let usage =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    }

    #[test]
    fn renders_every_family_with_its_counts() {
        let metrics = Metrics::default();
        let registry = Registry::default();
        metrics.opened(bip324_control::Direction::Outbound, TransportKind::V2);
        metrics.refused(RefusalKind::Loop);
        metrics.failed(FailureReason::HandshakeTimeout);
        metrics.message(
            Flow::AcceptedToDialled,
            &Command::from_name("ping").unwrap(),
        );
        metrics.message(
            Flow::DialledToAccepted,
            &Command::from_name("version").unwrap(),
        );
        metrics.message(
            Flow::DialledToAccepted,
            &Command::from_name("madeup").unwrap(),
        );
        metrics.handshake(Duration::from_millis(30));
        let text = metrics.render(&registry);
        for line in [
            "bip324_proxy_connections_opened_total{transport=\"v2\"} 1",
            "bip324_proxy_connections_refused_total{reason=\"loop\"} 1",
            "bip324_proxy_connections_failed_total{reason=\"handshake_timeout\"} 1",
            "bip324_proxy_connections_open 0",
            "bip324_proxy_messages_total{direction=\"client_to_remote\",type=\"ping\"} 1",
            "bip324_proxy_messages_total{direction=\"remote_to_client\",type=\"version\"} 1",
            "bip324_proxy_messages_total{direction=\"remote_to_client\",type=\"other\"} 1",
            "bip324_proxy_handshake_duration_seconds_bucket{le=\"0.025\"} 0",
            "bip324_proxy_handshake_duration_seconds_bucket{le=\"0.05\"} 1",
            "bip324_proxy_handshake_duration_seconds_bucket{le=\"+Inf\"} 1",
            "bip324_proxy_handshake_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // Every sample belongs to a family announced by TYPE.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{sample}");
        }
    }

    #[test]
    fn renders_build_and_process_metrics() {
        // Enough CPU time that the kernel's clock ticks (1/100 s) see it.
        let spin = std::time::Instant::now();
        while cpu_seconds() < 0.05 && spin.elapsed() < Duration::from_secs(5) {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        let before = cpu_seconds();
        let text = Metrics::default().render(&Registry::default());
        let after = cpu_seconds();
        assert!(text.contains(&format!(
            "bip324_proxy_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        };
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_start_time_seconds") > 1.6e9);
        // Whole clock ticks of the same accounting: at most one tick behind.
        let cpu = value("process_cpu_seconds_total");
        assert!(
            cpu > 0.0 && cpu >= before - 0.011 && cpu <= after,
            "{before} <= {cpu} <= {after}"
        );
    }
}
