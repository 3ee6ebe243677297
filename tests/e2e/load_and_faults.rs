//! Load and faults through the real proxy behind a real redirect: a thousand concurrent
//! connections lose nothing; running out of descriptors slows accepting but never stops it;
//! a killed proxy closes its connections, the redirect then refuses (fail closed), and a new
//! proxy serves again; a panic in one connection closes that connection only.

use std::time::{Duration, Instant};

use bip324_e2e::responder::{ResponderOptions, Transport};
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts, V1Peer, http_get,
    noisy_responder, raise_own_fd_limit, run_client,
};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
const LOAD_CLIENT: &str = env!("CARGO_BIN_EXE_e2e-load-client");

fn quiet_node(hosts: &TwoHosts) -> RemoteNode {
    RemoteNode::start(&hosts.remote, |upstream| ResponderOptions {
        keep_received: false,
        decoy_every: 100,
        ..noisy_responder(upstream)
    })
}

#[test]
fn a_thousand_connections_of_mixed_traffic_lose_nothing() {
    raise_own_fd_limit();
    let hosts = TwoHosts::create();
    let node = quiet_node(&hosts);
    let proxy = Proxy::start(&hosts.client, &[]);
    RedirectCli::new(&hosts).enable_tagged("nftables", "8333");
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");

    let mut load = hosts
        .client
        .command(LOAD_CLIENT, Some(TAGGED_GID))
        .args([&remote, "--connections", "1000", "--seconds", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak_rss = 0;
    while load.try_wait().unwrap().is_none() {
        peak_rss = peak_rss.max(proxy.memory_kib("VmRSS"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = load.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}proxy peak resident memory: {peak_rss} KiB");
    assert!(
        output.status.success(),
        "{stdout}{stderr}\nwhat the proxy says of its failures:\n{}",
        proxy
            .log()
            .lines()
            .filter(|l| l.contains("connection failed"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let value = |key: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap()
    };
    assert_eq!(value("connections"), 1000);
    assert_eq!(value("failures"), 0);
    assert!(value("messages") >= 10_000, "traffic flowed: {stdout}");

    let reports = node
        .responder
        .wait_for_reports(1000, Duration::from_secs(30));
    assert_eq!(reports.len(), 1000);
    assert!(
        reports
            .iter()
            .all(|r| r.error.is_none() && r.transport == Transport::V2)
    );

    // Bounded: per connection and direction, one message in translation (at most 256 KiB
    // here) plus 64 KiB of pending output and 16 KiB of staging.
    let bound_kib = 64 * 1024 + 1000 * 2 * (256 + 64 + 16 + 16);
    assert!(
        peak_rss < bound_kib,
        "peak {peak_rss} KiB above the bound {bound_kib} KiB"
    );
    // And an idle proxy gives the buffers back.
    assert!(proxy.wait_for_count("connection closed", 1000, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(1500));
    let idle = proxy.memory_kib("VmRSS");
    eprintln!("proxy resident memory once idle: {idle} KiB");
    assert!(
        idle < peak_rss / 2,
        "memory comes back down: {idle} KiB idle, {peak_rss} KiB peak"
    );
}

#[test]
fn running_out_of_descriptors_slows_accepting_but_never_stops_it() {
    raise_own_fd_limit();
    let hosts = TwoHosts::create();
    let _node = quiet_node(&hosts);
    // Room for about 20 connections: 100 at once exhaust it.
    let mut proxy = Proxy::start_with_fd_limit(&hosts.client, &[], Some(64));
    RedirectCli::new(&hosts).enable_tagged("nftables", "8333");
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");
    let load = hosts
        .client
        .command(LOAD_CLIENT, Some(TAGGED_GID))
        .args([&remote, "--connections", "100", "--seconds", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&load.stdout);
    eprintln!("{stdout}");
    assert!(
        proxy.log().contains("cannot accept connections"),
        "EMFILE was reached:\n{}",
        proxy.log()
    );
    assert!(proxy.is_running(), "the proxy survives");
    // Connections waited in the backlog and were served as descriptors came back.
    let connected: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("connections=")?.parse().ok())
        .unwrap();
    assert!(
        connected > 20,
        "more clients were served than fit at once: {stdout}"
    );
    // Afterwards, everything works.
    let run = run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&remote, "--large", "100000", "--small", "100"],
    );
    assert!(run.success, "{}", run.stderr);
}

#[test]
fn a_killed_proxy_closes_its_connections_fails_closed_and_recovers() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let mut proxy = Proxy::start(&hosts.client, &[]);
    RedirectCli::new(&hosts).enable_tagged("nftables", "8333");
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");

    // A long exchange, cut by a crash of the proxy.
    let mut client = hosts
        .client
        .command(CLIENT, Some(TAGGED_GID))
        .args([&remote, "--large", "4000000", "--small", "2000000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(proxy.wait_for_log("connection opened", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    proxy.kill();
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the client hangs after the proxy died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the client saw its connection end");
    eprintln!("client noticed the crash after {:?}", killed.elapsed());

    // The redirect stays: tagged connections are refused, nothing goes out in plaintext.
    let seen = node
        .responder
        .wait_for_reports(1, Duration::from_secs(10))
        .len();
    let run = run_client(CLIENT, &hosts.client, Some(TAGGED_GID), &[&remote]);
    assert!(
        !run.success && run.stderr.contains("Connection refused"),
        "{}",
        run.stderr
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        node.responder
            .wait_for_reports(seen + 1, Duration::from_millis(300))
            .len(),
        seen
    );

    // A new proxy serves again.
    let _proxy = Proxy::start(&hosts.client, &[]);
    let run = run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&remote, "--large", "100000", "--small", "100"],
    );
    assert!(run.success, "{}", run.stderr);
    let reports = node
        .responder
        .wait_for_reports(seen + 1, Duration::from_secs(10));
    assert_eq!(reports[seen].transport, Transport::V2);
}

/// A v1 client's connection through the redirect, past version and verack.
/// Faults stay local: a bug that panics while one connection is handled (injected through
/// the `fault-injection` build, never in a package) closes that connection only. Its
/// neighbour goes on exchanging messages, new connections are served, and the proxy counts
/// and logs the fault with the connection's id.
#[test]
fn a_panic_in_one_connection_closes_that_connection_only() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let mut proxy =
        Proxy::start_with_fault_injection(&hosts.client, &["--metrics", "127.0.0.1:9324"]);
    RedirectCli::new(&hosts).enable_tagged("nftables", &NODE_PORT.to_string());

    let mut neighbour = V1Peer::connect(&hosts);
    neighbour.echoes(b"before");
    let mut faulty = V1Peer::connect(&hosts);
    faulty.echoes(b"fine so far");
    faulty.send("injectpanic", b"").unwrap();
    assert!(
        faulty.receive().is_none(),
        "the faulty connection is closed, not answered"
    );

    neighbour.echoes(b"after");
    let mut newcomer = V1Peer::connect(&hosts);
    newcomer.echoes(b"new");
    assert!(proxy.is_running(), "the proxy goes on");
    let log = proxy.log();
    let panic_line = log
        .lines()
        .find(|l| l.contains("internal error at") && l.contains("injected fault"))
        .unwrap_or_else(|| panic!("the panic, logged:\n{log}"));
    assert!(panic_line.contains("conn{id=2}"), "{panic_line}");
    assert!(
        log.lines()
            .any(|l| l.contains("conn{id=2}") && l.contains("the others go on")),
        "{log}"
    );
    let metrics = http_get(&hosts.client, "127.0.0.1:9324", "/metrics");
    assert!(
        metrics.contains("\nbip324_proxy_connection_panics_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nbip324_proxy_connections_open 2\n"),
        "the neighbour and the newcomer: {metrics}"
    );
}
