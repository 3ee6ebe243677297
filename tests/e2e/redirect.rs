//! `bip324-redirect` end to end, for each backend: the product's own command installs the
//! redirect in a client host; an unmodified v1 client in the group reaches an independent v2
//! responder on another host through the proxy. Needs root; fails (never skips) without it.
//!
//! Long because it is one suite of independent cases, each run for both backends.

use std::time::Duration;

use bip324_e2e::responder::{Report, Transport};
use bip324_e2e::testbed::{
    OTHER_GID, Proxy, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts, contains, noisy_responder,
    run_client, run_client_as,
};
use bip324_e2e::v1::PLAINTEXT_MARKER;

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
/// A workload that still crosses several rekeys, small enough to run many times.
const WORKLOAD: [&str; 4] = ["--large", "1000000", "--small", "1000"];

/// Runs the client to `destination` as the tagged group; returns the responder's report.
fn tagged_client(hosts: &TwoHosts, node: &RemoteNode, destination: &str, seen: usize) -> Report {
    let mut args = vec![destination];
    args.extend(WORKLOAD);
    let run = run_client(CLIENT, &hosts.client, Some(TAGGED_GID), &args);
    assert!(
        run.success,
        "client to {destination} failed: {}",
        run.stderr
    );
    assert_eq!(run.value("echoed"), Some("1001"));
    // The client believes it talks to the remote itself.
    assert_eq!(
        run.value("peer"),
        Some(destination),
        "getpeername shows the original remote"
    );
    let reports = node
        .responder
        .wait_for_reports(seen + 1, Duration::from_secs(10));
    reports[seen].clone()
}

fn assert_encrypted(report: &Report) {
    assert_eq!(report.error, None);
    assert_eq!(report.transport, Transport::V2);
    assert!(
        !contains(&report.received, PLAINTEXT_MARKER),
        "plaintext reached the remote"
    );
}

fn assert_direct(report: &Report) {
    assert_eq!(report.error, None);
    assert_eq!(
        report.transport,
        Transport::V1,
        "this client must not be redirected"
    );
}

pub fn tagged_clients_are_encrypted_v4_v6_and_v4_mapped(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, "8333");
    let v4 = hosts.remote_v4().to_string();
    let v6 = hosts.remote_v6().to_string();
    let mapped = format!("[::ffff:{}]:8333", hosts.remote_v4().ip());
    for (i, destination) in [v4, v6, mapped].iter().enumerate() {
        let report = tagged_client(&hosts, &node, destination, i);
        assert_encrypted(&report);
        let session_id = hex::encode(report.session_id.unwrap());
        assert!(
            proxy.wait_for_log(&format!("session_id={session_id}"), Duration::from_secs(5)),
            "the proxy reports the responder's session id:\n{}",
            proxy.log()
        );
    }
}

pub fn untagged_and_supplementary_only_clients_go_direct(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, "8333");
    let remote = hosts.remote_v4().to_string();
    let mut args = vec![remote.as_str()];
    args.extend(WORKLOAD);
    let untagged = run_client(CLIENT, &hosts.client, Some(OTHER_GID), &args);
    assert!(untagged.success, "{}", untagged.stderr);
    // The tagged group only as a supplementary group: not redirected.
    let supplementary = run_client_as(CLIENT, &hosts.client, Some(OTHER_GID), &[TAGGED_GID], &args);
    assert!(supplementary.success, "{}", supplementary.stderr);
    let reports = node.responder.wait_for_reports(2, Duration::from_secs(10));
    assert_eq!(reports.len(), 2);
    reports.iter().for_each(assert_direct);
    assert!(
        !proxy.log().contains("connection opened"),
        "{}",
        proxy.log()
    );
}

pub fn proxy_down_fails_closed(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    let run = cli.enable_tagged(backend, "8333");
    assert!(
        run.stderr.contains("nothing answers"),
        "enable warns: {run:?}"
    );
    for destination in [hosts.remote_v4(), hosts.remote_v6()] {
        let run = run_client(
            CLIENT,
            &hosts.client,
            Some(TAGGED_GID),
            &[&destination.to_string()],
        );
        assert!(!run.success);
        assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
    }
    // Nothing, not even a connection, reached the remote.
    let reports = node
        .responder
        .wait_for_reports(1, Duration::from_millis(500));
    assert!(reports.is_empty(), "{reports:?}");
}

pub fn disable_restores_direct_connections_and_leaves_nothing(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, "8333");
    let remote = hosts.remote_v4().to_string();
    assert_encrypted(&tagged_client(&hosts, &node, &remote, 0));
    let run = cli.ok(&["disable"]);
    assert!(run.stdout.contains("disabled"), "{run:?}");
    assert!(
        cli.ok(&["disable"]).stdout.contains("nothing to remove"),
        "disable twice is fine"
    );
    assert_direct(&tagged_client(&hosts, &node, &remote, 1));
    let (code, status) = cli.status();
    assert_eq!(code, 5, "{status}");
    assert_eq!(status["state"], "disabled");
    for view in status["kernel"].as_array().unwrap() {
        assert_eq!(view["present"], false, "no kernel object left: {status}");
    }
}

pub fn enable_again_replaces_the_policy(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, "8333");
    cli.enable_tagged(backend, "8333");
    let (code, status) = cli.status();
    assert_eq!((code, &status["state"]), (0, &"active".into()), "{status}");
    let remote = hosts.remote_v4().to_string();
    assert_encrypted(&tagged_client(&hosts, &node, &remote, 0));
    // A policy without 8333 replaces the old one: 8333 is no longer redirected.
    cli.enable_tagged(backend, "18444");
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["policy"]["ports"], serde_json::json!([18444]));
    assert_direct(&tagged_client(&hosts, &node, &remote, 1));
}

pub fn status_reflects_each_state(backend: &str) {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    let (code, status) = cli.status();
    assert_eq!(
        (code, &status["state"]),
        (5, &"disabled".into()),
        "{status}"
    );

    cli.enable_tagged(backend, "8333,18444");
    let (code, status) = cli.status();
    assert_eq!(code, 6, "enabled without a proxy is a problem: {status}");
    assert_eq!(status["state"], "active");
    assert_eq!(status["backend"], backend);
    assert_eq!(status["policy"]["group"]["id"], TAGGED_GID);
    let problems = status["problems"].to_string();
    assert!(problems.contains("does not answer"), "{problems}");

    let _proxy = Proxy::start(&hosts.client, &[]);
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["problems"], serde_json::json!([]));
    assert!(
        status["proxy"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["answering"] == true)
    );

    cli.ok(&["disable"]);
    let (code, status) = cli.status();
    assert_eq!(
        (code, &status["state"]),
        (5, &"disabled".into()),
        "{status}"
    );
}

/// Re-enabling (with other ports, then back) while tagged clients keep connecting: every
/// connection that reaches the remote is v2. The replacement leaves no gap.
pub fn reenabling_under_load_never_leaks_plaintext(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, "8333");
    let remote = hosts.remote_v4().to_string();
    const CLIENTS: usize = 30;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..20 {
                cli.enable_tagged(backend, if i % 2 == 0 { "8333,18444" } else { "8333" });
            }
        });
        for _ in 0..CLIENTS {
            let args = [remote.as_str(), "--large", "0", "--small", "5"];
            let run = run_client(CLIENT, &hosts.client, Some(TAGGED_GID), &args);
            assert!(run.success, "{}", run.stderr);
        }
    });
    let reports = node
        .responder
        .wait_for_reports(CLIENTS, Duration::from_secs(10));
    assert_eq!(reports.len(), CLIENTS);
    reports.iter().for_each(assert_encrypted);
}

/// A member of the group talking to a node on this host reaches it directly (the node sees a
/// v1 client, not the proxy's v2; the proxy sees nothing), on loopback with both backends and,
/// with nftables, on this host's own non-loopback addresses; a remote node is still reached
/// through the proxy, and `status` reads the rules back as the policy's.
pub fn a_node_on_this_host_is_reached_directly(backend: &str) {
    let hosts = TwoHosts::create();
    let remote = RemoteNode::start(&hosts.remote, noisy_responder);
    let local = RemoteNode::start(&hosts.client, noisy_responder);
    let proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, "8333");
    let mut destinations = vec![
        "127.0.0.1:8333".to_string(),
        "[::1]:8333".to_string(),
        "[::ffff:127.0.0.1]:8333".to_string(),
    ];
    if backend == "nftables" {
        destinations.push(format!("{}:8333", bip324_e2e::testbed::CLIENT_V4));
        destinations.push(format!("[{}]:8333", bip324_e2e::testbed::CLIENT_V6));
    }
    for (seen, destination) in destinations.iter().enumerate() {
        let report = tagged_client(&hosts, &local, destination, seen);
        assert_direct(&report);
    }
    assert!(
        !proxy.log().contains("connection opened"),
        "{}",
        proxy.log()
    );
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    assert_encrypted(&tagged_client(
        &hosts,
        &remote,
        &hosts.remote_v4().to_string(),
        0,
    ));
}

bip324_e2e::for_each_backend!(
    a_node_on_this_host_is_reached_directly,
    tagged_clients_are_encrypted_v4_v6_and_v4_mapped,
    untagged_and_supplementary_only_clients_go_direct,
    proxy_down_fails_closed,
    disable_restores_direct_connections_and_leaves_nothing,
    enable_again_replaces_the_policy,
    status_reflects_each_state,
    reenabling_under_load_never_leaks_plaintext,
);

/// nftables only: `nft flush ruleset` (what a reload of nftables.service does) removes the
/// table behind our back. Status must notice: the clients go out in plaintext.
#[test]
fn nftables_status_notices_a_flushed_ruleset() {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    let _proxy = Proxy::start(&hosts.client, &[]);
    cli.enable_tagged("nftables", "8333");
    let output = hosts
        .client
        .command("nft", None)
        .args(["flush", "ruleset"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let (code, status) = cli.status();
    assert_eq!(code, 6, "{status}");
    assert_eq!(status["state"], "vanished");
    let problems = status["problems"].to_string();
    assert!(problems.contains("PLAINTEXT"), "{problems}");
    assert!(
        problems.contains("bip324-redirect enable --group 32324 --ports 8333"),
        "{problems}"
    );
    // Following the advice repairs it.
    cli.enable_tagged("nftables", "8333");
    assert_eq!(cli.status().0, 0);
}

/// nftables only: rules changed by hand are reported in `nft` words, each by its purpose.
#[test]
fn nftables_status_notices_modified_rules() {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    let _proxy = Proxy::start(&hosts.client, &[]);
    cli.enable_tagged("nftables", "8333");
    let nft = |words: &str| {
        let output = hosts
            .client
            .command("nft", None)
            .args(words.split(' '))
            .output()
            .unwrap();
        assert!(output.status.success(), "nft {words}: {output:?}");
    };
    let problems = || {
        let (code, status) = cli.status();
        assert_eq!(
            (code, &status["state"]),
            (6, &"modified".into()),
            "{status}"
        );
        status["problems"].to_string()
    };

    nft("add rule inet bip324_redirect output tcp dport 9999 accept");
    let added = problems();
    assert!(
        added.contains("unexpected rule `tcp dport 9999 accept`"),
        "{added}"
    );
    assert!(!added.contains("is missing"), "{added}");

    nft("flush chain inet bip324_redirect output");
    nft("add rule inet bip324_redirect output tcp dport 8334 meta skgid 32324 redirect to :324");
    let replaced = problems();
    for expected in [
        "the rule for port 8333 is missing (`tcp dport 8333 meta skgid 32324 fib daddr type != local redirect to :324`)",
        "unexpected rule `tcp dport 8334 meta skgid 32324 redirect to :324`",
    ] {
        assert!(replaced.contains(expected), "{expected} in {replaced}");
    }
}

/// Runs bpftool; true when it succeeds.
fn bpftool(args: &[&str]) -> std::process::Output {
    std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("run bpftool (apt-get install bpftool)")
}

/// eBPF only: what `status` reports (programs attached, the policy read back from the pinned
/// map) is what the kernel holds, and `disable` leaves no program, link, pin or map.
#[test]
fn ebpf_disable_leaves_no_program_link_pin_or_map() {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    let _proxy = Proxy::start(&hosts.client, &[]);
    cli.enable_tagged("ebpf", "8333,18444");
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    let view = status["kernel"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["backend"] == "ebpf")
        .unwrap()
        .clone();
    assert_eq!(view["present"], true);
    assert_eq!(view["matches"], true, "{view}");
    assert_eq!(
        view["policy"]["ports"],
        serde_json::json!([8333, 18444]),
        "read back from the map"
    );
    assert_eq!(view["policy"]["group"]["id"], TAGGED_GID);
    let programs: Vec<u64> = view["program_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let maps: Vec<u64> = view["map_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(programs.len(), 7, "{view}");
    assert_eq!(maps.len(), 4, "{view}");
    let cgroup = hosts.cgroup.path().to_str().unwrap();
    assert_eq!(status["cgroup"], cgroup);
    let attached = String::from_utf8(bpftool(&["cgroup", "show", cgroup]).stdout).unwrap();
    for id in &programs {
        assert!(
            attached.contains(&id.to_string()),
            "program {id} attached to the cgroup:\n{attached}"
        );
        assert!(
            bpftool(&["prog", "show", "id", &id.to_string()])
                .status
                .success()
        );
    }

    cli.ok(&["disable"]);
    let pin_dir = hosts.bpffs.path().join("bip324-redirect");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    // Unpinning a link releases it from a work queue: the detach follows within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut attached = bpftool(&["cgroup", "show", cgroup]);
    while !attached.stdout.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        attached = bpftool(&["cgroup", "show", cgroup]);
    }
    assert!(
        String::from_utf8_lossy(&attached.stdout).trim().is_empty(),
        "{attached:?}"
    );
    // The kernel frees programs and maps once their last reference goes (after an RCU grace
    // period): wait a little for that.
    let gone = |kind: &str, id: &u64| {
        !bpftool(&[kind, "show", "id", &id.to_string()])
            .status
            .success()
    };
    for _ in 0..100 {
        if programs.iter().all(|id| gone("prog", id)) && maps.iter().all(|id| gone("map", id)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("programs {programs:?} or maps {maps:?} are still loaded after disable");
}

/// Switching backends leaves exactly one active, and the redirect keeps working.
#[test]
fn switching_backends_leaves_exactly_one_active() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    let remote = hosts.remote_v4().to_string();
    for (i, backend) in ["nftables", "ebpf", "nftables"].into_iter().enumerate() {
        cli.enable_tagged(backend, "8333");
        let (code, status) = cli.status();
        assert_eq!(code, 0, "{status}");
        assert_eq!(status["backend"], backend);
        for view in status["kernel"].as_array().unwrap() {
            let active = view["backend"] == backend;
            assert_eq!(
                view["present"], active,
                "only {backend} is installed: {status}"
            );
        }
        assert_encrypted(&tagged_client(&hosts, &node, &remote, i));
    }
}
