//! Prometheus metrics: plain atomic counters on the data path (no lock per message), rendered
//! in the text exposition format on scrape, served by a deliberately small HTTP responder on
//! loopback (`--metrics 127.0.0.1:9324`, off by default).
//!
//! Long because the counters, their exposition format and the small HTTP responder that serves
//! them change together.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::labels::{FailureReason, RefusalKind, TransportKind};
use super::registry::Registry;
use super::socks5::wire::Reply;
use bip324_protocol::message_type::{self, SHORT_IDS};
use bip324_protocol::v1::Command;

/// Commands without a short ID that are common enough to count on their own; any other is
/// counted as "other" (a peer chooses command names: labels must stay few).
const LONG_COMMANDS: [&str; 8] = [
    "version",
    "verack",
    "sendheaders",
    "wtxidrelay",
    "sendaddrv2",
    "getaddr",
    "sendtxrcncl",
    "reject",
];
/// Message types counted: those with a short id, the common long ones, and "other".
const TYPES: usize = SHORT_IDS + LONG_COMMANDS.len() + 1;
/// What a person who opens the address in a browser sees.
const LANDING_PAGE: &str = "<!doctype html><title>bip324-proxy</title>\
<h1>bip324-proxy</h1><p>BIP-324 proxy metrics, in the Prometheus text format: \
<a href=\"/metrics\">/metrics</a>.</p>\n";
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Which way a message went: from the accepted socket (a client, an inbound peer) to the
/// dialled one, or back. Labelled `client_to_remote` and `remote_to_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    AcceptedToDialled = 0,
    DialledToAccepted = 1,
}

pub(crate) struct Metrics {
    opened: [AtomicU64; TransportKind::ALL.len()],
    inbound_opened: [AtomicU64; TransportKind::ALL.len()],
    socks5_replies: [AtomicU64; Reply::ALL.len()],
    refused: [AtomicU64; RefusalKind::ALL.len()],
    failed: [AtomicU64; FailureReason::ALL.len()],
    messages: [[AtomicU64; TYPES]; 2],
    decoys: AtomicU64,
    dropped: AtomicU64,
    handshake_buckets: [AtomicU64; BUCKETS.len()],
    handshake_count: AtomicU64,
    handshake_micros: AtomicU64,
    /// When the proxy started (the metrics are made then). Read here rather than from
    /// /proc/stat, which the service's sandbox (`ProcSubset=pid`) hides.
    started: std::time::SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            opened: Default::default(),
            inbound_opened: Default::default(),
            socks5_replies: Default::default(),
            refused: Default::default(),
            failed: Default::default(),
            // Default stops at arrays of 32.
            messages: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            decoys: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            handshake_buckets: Default::default(),
            handshake_count: AtomicU64::new(0),
            handshake_micros: AtomicU64::new(0),
            started: std::time::SystemTime::now(),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The label of a command: its own name if it has a short ID or is a common one, else "other".
fn type_index(command: &Command) -> usize {
    if let Some(id) = message_type::short_id(command) {
        return usize::from(id) - 1;
    }
    LONG_COMMANDS
        .iter()
        .position(|c| *c == command.name())
        .map_or(TYPES - 1, |i| SHORT_IDS + i)
}

fn type_label(index: usize) -> String {
    match index {
        0..SHORT_IDS => message_type::command_for_short_id(index as u8 + 1)
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        i if i < SHORT_IDS + LONG_COMMANDS.len() => LONG_COMMANDS[i - SHORT_IDS].to_string(),
        _ => "other".to_string(),
    }
}

impl Metrics {
    /// A connection opened: counted with all the others, and inbound ones on their own too.
    pub(crate) fn opened(&self, direction: bip324_control::Direction, transport: TransportKind) {
        bump(&self.opened[transport as usize]);
        if direction == bip324_control::Direction::Inbound {
            bump(&self.inbound_opened[transport as usize]);
        }
    }

    /// A reply sent to a SOCKS5 client.
    pub(crate) fn socks5_reply(&self, code: Reply) {
        bump(&self.socks5_replies[code as usize]);
    }

    pub(crate) fn refused(&self, reason: RefusalKind) {
        bump(&self.refused[reason as usize]);
    }

    pub(crate) fn failed(&self, reason: FailureReason) {
        bump(&self.failed[reason as usize]);
    }

    pub(crate) fn message(&self, flow: Flow, command: &Command) {
        bump(&self.messages[flow as usize][type_index(command)]);
    }

    pub(crate) fn decoy(&self) {
        bump(&self.decoys);
    }

    pub(crate) fn dropped(&self) {
        bump(&self.dropped);
    }

    pub(crate) fn handshake(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.handshake_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bump(bucket);
            }
        }
        bump(&self.handshake_count);
        self.handshake_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

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

/// The standard `process_*` metrics, from /proc/self: descriptors matter most here, each
/// proxied connection holding two.
fn render_process(out: &mut String, start: f64) {
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    // SAFETY: sysconf has no preconditions.
    let (page, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
        )
    };
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the
    // 13th.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (field(11) + field(12)) / ticks;
    for (name, kind, help, value) in [
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Limit on open file descriptors.",
            max_fds as f64,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
            resident as f64,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time.",
            cpu,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time, Unix seconds.",
            start,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
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

/// Serves `GET /metrics` until shutdown. A scrape reads counters and takes the registry lock
/// briefly; requests are small, bounded and time-limited.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(8));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("metrics: too many scrapes at once, closing {peer}");
            continue;
        };
        let (metrics, registry) = (Arc::clone(&metrics), Arc::clone(&registry));
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), respond(stream, &metrics, &registry))
                    .await;
            drop(permit);
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    metrics: &Metrics,
    registry: &Registry,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if request_line.starts_with(b"GET /metrics ") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(registry),
        )
    } else if request_line.starts_with(b"GET / ") {
        (
            "200 OK",
            "text/html; charset=utf-8",
            LANDING_PAGE.to_string(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = Metrics::default().render(&Registry::default());
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
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
