//! One row group of the table per phase, each beside its bound or baseline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::*;

/// The addresses of the three paths, and the processes measured.
pub(crate) struct Setup {
    pub(crate) proxied: SocketAddr,
    pub(crate) direct: SocketAddr,
    pub(crate) relayed: SocketAddr,
    pub(crate) proxy: u32,
    pub(crate) relay: u32,
    /// Everything on the paths: this process, the proxy, the nodes, the relay.
    pub(crate) processes: [u32; 4],
}

pub(crate) async fn bulk_rows(setup: &Setup, rows: &mut Vec<Row>) {
    let bound = crypto_bound();
    for (name, upload) in [
        ("client -> remote (v1 -> v2)", true),
        ("remote -> client (v2 -> v1)", false),
    ] {
        eprintln!("e2e-bench: bulk, {name}");
        let direct_wall = bulk(setup.direct, upload, None).await.1;
        let relay_per_core = bulk(setup.relayed, upload, Some(setup.relay)).await.0;
        let (per_core, wall) = bulk(setup.proxied, upload, Some(setup.proxy)).await;
        // The physical limit of a user-space relay, measured here: the crypto, plus what the
        // kernel costs a relay that does nothing else. The target is read against it; against
        // the crypto alone (which no relay can reach), the ratio is reported.
        let limit = 1.0 / (1.0 / bound + 1.0 / relay_per_core);
        rows.push(Row::new(
            &format!("bulk {name}"),
            format!(
                "{:.3} GB/s per core, {:.2} GB/s wall (direct: {:.2} GB/s)",
                per_core / 1e9,
                wall / 1e9,
                direct_wall / 1e9
            ),
            format!("{:.3} GB/s per core: crypto + relay", limit / 1e9),
            per_core / limit,
            "≥ 80% of crypto + relay",
            per_core >= 0.8 * limit,
        ));
        rows.push(Row::new(
            "  the same, beside crypto alone",
            format!(
                "(plain relay alone: {:.2} GB/s per core)",
                relay_per_core / 1e9
            ),
            format!("{:.3} GB/s per core: crypto", bound / 1e9),
            per_core / bound,
            "(reported)",
            true,
        ));
    }
}

pub(crate) async fn round_trip_rows(setup: &Setup, rows: &mut Vec<Row>) {
    for (label, cpus) in [("all on one core", Some(0)), ("unpinned", None)] {
        eprintln!("e2e-bench: round trips, {label}");
        pin(&setup.processes, cpus);
        let [direct, relayed, proxied] =
            round_trips([setup.direct, setup.relayed, setup.proxied]).await;
        let added = proxied.median.saturating_sub(direct.median);
        let relay_added = relayed.median.saturating_sub(direct.median);
        // Any user-space hop adds the plain relay's time (two more socket hops, and unpinned,
        // the scheduler's cross-CPU wakeups): the target is what the proxy adds beyond it.
        let beyond_relay = proxied.median.saturating_sub(relayed.median);
        rows.push(Row::new(
            &format!("round trip, median, {label}"),
            format!(
                "{} µs: {} µs added, {} µs beyond a plain relay",
                proxied.median.as_micros(),
                added.as_micros(),
                beyond_relay.as_micros()
            ),
            format!(
                "{} µs relay ({} µs direct)",
                relayed.median.as_micros(),
                direct.median.as_micros()
            ),
            proxied.median.as_secs_f64() / relayed.median.as_secs_f64(),
            "≤ 25 µs beyond the relay",
            beyond_relay <= Duration::from_micros(25),
        ));
        rows.push(Row::new(
            "  the same, added to direct",
            format!(
                "{} µs added ({} µs by a plain relay)",
                added.as_micros(),
                relay_added.as_micros()
            ),
            format!("{} µs direct", direct.median.as_micros()),
            proxied.median.as_secs_f64() / direct.median.as_secs_f64(),
            "(reported)",
            true,
        ));
        rows.push(Row::new(
            &format!("round trip, p99, {label}"),
            format!(
                "{} µs ({} µs plain relay)",
                proxied.p99.as_micros(),
                relayed.p99.as_micros()
            ),
            format!("{} µs direct", direct.p99.as_micros()),
            proxied.p99.as_secs_f64() / direct.p99.as_secs_f64(),
            "(reported)",
            true,
        ));
    }
}

pub(crate) async fn handshake_rows(setup: &Setup, rows: &mut Vec<Row>) {
    eprintln!("e2e-bench: handshakes");
    let secp = secp256k1_handshakes_per_second();
    let relay_per_core = handshakes(setup.relayed, setup.relay).await.0;
    let (per_core, wall) = handshakes(setup.proxied, setup.proxy).await;
    // The limit: the secp256k1 work of one handshake plus what accepting and dialling a
    // connection costs a plain relay. Against the secp256k1 work alone, reported.
    let limit = 1.0 / (1.0 / secp + 1.0 / relay_per_core);
    rows.push(Row::new(
        "handshakes",
        format!("{per_core:.0}/s per core, {wall:.0}/s wall"),
        format!("{limit:.0}/s: secp256k1 + relay"),
        per_core / limit,
        "≥ 80% of secp256k1 + relay",
        per_core >= 0.8 * limit,
    ));
    rows.push(Row::new(
        "  the same, beside secp256k1 alone",
        format!("(plain relay alone: {relay_per_core:.0} connections/s per core)"),
        format!("{secp:.0}/s: secp256k1 work of one"),
        per_core / secp,
        "(reported)",
        true,
    ));
}

pub(crate) async fn idle_row(setup: &Setup, idle: usize, rows: &mut Vec<Row>) {
    eprintln!("e2e-bench: {idle} idle connections");
    let per_connection = idle_memory(setup.proxied, setup.proxy, idle).await;
    rows.push(Row::new(
        "memory per idle v2 session (after version)",
        if idle < IDLE_CONNECTIONS {
            format!(
                "{:.1} KiB, {idle} open (all the fd limit allows)",
                per_connection / 1024.0
            )
        } else {
            format!("{:.1} KiB, {idle} open", per_connection / 1024.0)
        },
        "16 KiB (target)".to_string(),
        per_connection / (16.0 * 1024.0),
        "≤ 16 KiB",
        per_connection <= 16.0 * 1024.0,
    ));
}

/// The proxy as a user starts it: as root, it binds port 324 and then runs as `nobody`,
/// outside the redirected group (root's, 0); with `extra` options (`--key-prefix HEX`), its
/// control socket at `control`, its log to `log`.
pub(crate) fn start_proxy(extra: &[String], control: &Path, log: &Path) -> Child {
    let mut command = std::process::Command::new(sibling("bip324-proxy"));
    command
        .args(["--max-connections", "30000", "--log-level", "info"])
        .args(extra)
        .args(["--user", "nobody", "--control"])
        .arg(control)
        .stdout(std::process::Stdio::null());
    // Two lines per connection at info: to a file, not over the table.
    if let Ok(file) = std::fs::File::create(log) {
        eprintln!("e2e-bench: the proxy's log is {}", log.display());
        command.stderr(file);
    }
    Child::spawn(command)
}
