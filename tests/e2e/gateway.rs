//! Gateway mode end to end: a LAN host with an unmodified v1 client, a router running the
//! product (forwarding, masquerade, `enable --from-interface lan0`), and the internet with
//! an independent v2 responder (rust-bitcoin's `bip324`). IPv4 through the router's NAT,
//! IPv6 routed without NAT66.

use std::time::Duration;

use bip324_e2e::netns::{self, Netns};
use bip324_e2e::responder::{Report, Transport};
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, REMOTE_V6, RedirectCli, RemoteNode, TwoHosts, contains,
    noisy_responder, run_client,
};
use bip324_e2e::v1::PLAINTEXT_MARKER;

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
const LAN_HOST_V4: &str = "192.168.50.2";
const LAN_ROUTER_V4: &str = "192.168.50.1";
const LAN_HOST_V6: &str = "fd50::2";
const LAN_ROUTER_V6: &str = "fd50::1";

/// `hosts.client` is the router (its `veth0` faces the internet, `hosts.remote`), `lan` the
/// LAN host behind its `lan0`.
struct Router {
    hosts: TwoHosts,
    lan: Netns,
    node: RemoteNode,
}

impl Router {
    fn create() -> Router {
        let hosts = TwoHosts::create();
        let lan = Netns::create("lan");
        netns::link_named((&lan, "veth0"), (&hosts.client, "lan0"));
        netns::address(&lan, &format!("{LAN_HOST_V4}/24"));
        netns::address(&lan, &format!("{LAN_HOST_V6}/64"));
        netns::address_on(&hosts.client, "lan0", &format!("{LAN_ROUTER_V4}/24"));
        netns::address_on(&hosts.client, "lan0", &format!("{LAN_ROUTER_V6}/64"));
        lan.ip(&["route", "add", "default", "via", LAN_ROUTER_V4]);
        lan.ip(&["-6", "route", "add", "default", "via", LAN_ROUTER_V6]);
        // The internet knows the LAN's IPv6 prefix (no NAT66); IPv4 is masqueraded.
        let router_v6 = bip324_e2e::testbed::CLIENT_V6;
        hosts
            .remote
            .ip(&["-6", "route", "add", "fd50::/64", "via", router_v6]);
        for setting in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let done = hosts
                .client
                .command("sysctl", None)
                .args(["-qw", setting])
                .status();
            assert!(done.unwrap().success(), "{setting}");
        }
        for words in [
            "add table ip gwnat",
            "add chain ip gwnat post { type nat hook postrouting priority 100 ; }",
            "add rule ip gwnat post oifname veth0 masquerade",
        ] {
            let done = hosts
                .client
                .command("nft", None)
                .args(words.split(' '))
                .status();
            assert!(done.unwrap().success(), "nft {words}");
        }
        let node = RemoteNode::start(&hosts.remote, noisy_responder);
        Router { hosts, lan, node }
    }

    /// The unmodified client on the LAN host to the internet node; the responder's report.
    fn lan_client(&self, destination: &str, seen: usize) -> Report {
        let run = run_client(CLIENT, &self.lan, None, &[destination, "--small", "100"]);
        assert!(run.success, "client to {destination}: {}", run.stderr);
        assert_eq!(run.value("echoed"), Some("101"));
        assert_eq!(
            run.value("peer"),
            Some(destination),
            "it sees the remote as its peer"
        );
        let reports = self
            .node
            .responder
            .wait_for_reports(seen + 1, Duration::from_secs(10));
        reports[seen].clone()
    }
}

fn destinations() -> [String; 2] {
    [
        format!("{REMOTE_V4}:{NODE_PORT}"),
        format!("[{REMOTE_V6}]:{NODE_PORT}"),
    ]
}

/// The LAN host's connections go out over v2, with the same session id at both ends, and
/// the remote sees no v1 byte; `status` names the LAN host.
#[test]
fn lan_clients_are_encrypted_through_the_router_v4_and_v6() {
    let router = Router::create();
    let proxy = Proxy::start(&router.hosts.client, &["--listen", "[::]:324"]);
    let cli = RedirectCli::new(&router.hosts);
    let run = cli.enable("nftables", &["--from-interface", "lan0", "--ports", "8333"]);
    assert_eq!(run.code, 0, "{run:?}");
    for (seen, destination) in destinations().iter().enumerate() {
        let report = router.lan_client(destination, seen);
        assert_eq!(report.transport, Transport::V2, "{destination}");
        assert!(
            !contains(&report.received, PLAINTEXT_MARKER),
            "plaintext reached the remote"
        );
        let session = hex::encode(report.session_id.unwrap());
        assert!(
            proxy.wait_for_log(&session, Duration::from_secs(5)),
            "{}",
            proxy.log()
        );
    }
    let log = proxy.log();
    assert!(log.contains(&format!("client={LAN_HOST_V4}:")), "{log}");
    assert!(log.contains(&format!("client=[{LAN_HOST_V6}]:")), "{log}");
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    assert!(
        status["kernel"][0]["objects"]
            .to_string()
            .contains("gateway chain prerouting (1 rules)"),
        "{status}"
    );
}

/// A LAN host outside the selector goes out directly; with the proxy down, a selected one is
/// refused and nothing reaches the remote; the proxy port itself is no way out.
#[test]
fn selector_fail_closed_and_no_open_relay() {
    let router = Router::create();
    let cli = RedirectCli::new(&router.hosts);
    // The eBPF backend never sees forwarded traffic: it says so instead of pretending.
    let run = cli.enable("ebpf", &["--from-interface", "lan0"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("--backend nftables"), "{run:?}");
    // Only another host of the LAN is selected.
    let run = cli.enable(
        "nftables",
        &["--from", "192.168.50.99/32", "--ports", "8333"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let [v4, _] = destinations();
    assert_eq!(
        router.lan_client(&v4, 0).transport,
        Transport::V1,
        "not selected: direct"
    );

    // Selected, with no proxy running: refused, and nothing forwarded.
    let run = cli.enable(
        "nftables",
        &["--from", "192.168.50.0/24", "--from", "fd50::/64"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    for destination in destinations() {
        let run = run_client(CLIENT, &router.lan, None, &[&destination]);
        assert!(!run.success, "{destination}");
        assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
    }
    let reports = router
        .node
        .responder
        .wait_for_reports(2, Duration::from_millis(500));
    assert_eq!(
        reports.len(),
        1,
        "nothing more reached the remote: {reports:?}"
    );

    // The proxy port, dialled directly from the LAN, relays nothing.
    let proxy = Proxy::start(&router.hosts.client, &["--listen", "[::]:324"]);
    let direct = format!("{LAN_ROUTER_V4}:324");
    let run = run_client(CLIENT, &router.lan, None, &[&direct]);
    assert!(!run.success, "{run:?}");
    assert!(
        proxy.wait_for_log("refusal=destination_is_proxy", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert_eq!(
        router
            .node
            .responder
            .wait_for_reports(2, Duration::from_millis(300))
            .len(),
        1
    );
}

/// `status` reads the gateway chain back rule by rule; `disable` restores plain forwarding
/// and leaves nothing.
#[test]
fn status_sees_a_removed_gateway_rule_and_disable_leaves_nothing() {
    let router = Router::create();
    let _proxy = Proxy::start(&router.hosts.client, &["--listen", "[::]:324"]);
    let cli = RedirectCli::new(&router.hosts);
    let run = cli.enable("nftables", &["--from-interface", "lan0", "--ports", "8333"]);
    assert_eq!(run.code, 0, "{run:?}");
    let flushed = router
        .hosts
        .client
        .command("nft", None)
        .args(["flush", "chain", "inet", "bip324_redirect", "prerouting"])
        .status();
    assert!(flushed.unwrap().success());
    let (code, status) = cli.status();
    assert_eq!(
        (code, &status["state"]),
        (6, &"modified".into()),
        "{status}"
    );
    assert!(
        status["problems"]
            .to_string()
            .contains("the gateway rule for interface lan0, port 8333 is missing"),
        "{status}"
    );
    cli.ok(&["disable"]);
    let tables = router
        .hosts
        .client
        .command("nft", None)
        .args(["list", "tables"])
        .output();
    let tables = String::from_utf8_lossy(&tables.unwrap().stdout).into_owned();
    assert!(!tables.contains("bip324"), "{tables}");
    let [v4, _] = destinations();
    assert_eq!(
        router.lan_client(&v4, 0).transport,
        Transport::V1,
        "plain forwarding"
    );
}

/// A gateway policy enabled by hand is saved to the configuration file the unit re-applies:
/// after the table is flushed (what a reload of nftables.service does) `restore` brings the
/// gateway back, and the LAN host is encrypted again. `--no-save` warns, and `status` reports
/// a kernel policy that differs from the file's.
#[test]
fn a_gateway_policy_enabled_by_hand_is_what_restore_reapplies() {
    let router = Router::create();
    let _proxy = Proxy::start(&router.hosts.client, &["--listen", "[::]:324"]);
    let cli = RedirectCli::new(&router.hosts);
    let etc = cli.config_dir();
    std::fs::create_dir_all(&etc).unwrap();
    let shipped = include_str!("../../packaging/config/redirect.conf");
    std::fs::write(etc.join("redirect.conf"), shipped).unwrap();
    let [v4, _] = destinations();

    let run = cli.enable("nftables", &["--from-interface", "lan0", "--ports", "8333"]);
    assert_eq!(run.code, 0, "{run:?}");
    let saved = std::fs::read_to_string(etc.join("redirect.conf")).unwrap();
    assert!(
        saved.contains(
            "BIP324_REDIRECT_OPTIONS=\"--from-interface lan0 --ports 8333 --proxy-port 324 \
             --backend nftables\""
        ),
        "{saved}"
    );
    let comments = |t: &str| t.lines().filter(|l| l.starts_with('#')).count();
    assert_eq!(comments(&saved), comments(shipped), "{saved}");
    assert_eq!(router.lan_client(&v4, 0).transport, Transport::V2);

    // What nftables.service's reload does to our table, then what the unit runs after it.
    let nft = |args: &[&str]| {
        let done = router.hosts.client.command("nft", None).args(args).status();
        assert!(done.unwrap().success(), "nft {args:?}");
    };
    nft(&["delete", "table", "inet", "bip324_redirect"]);
    assert_eq!(cli.status().0, 6);
    cli.ok(&["restore"]);
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(
        router.lan_client(&v4, 1).transport,
        Transport::V2,
        "restored from the file"
    );

    // Not saved: a warning, and status says the file would bring another policy back.
    let run = cli.enable(
        "nftables",
        &["--from", "192.168.50.99/32", "--ports", "8333", "--no-save"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("--no-save") && run.stderr.contains("drops this one"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("redirect.conf")).unwrap(),
        saved
    );
    let (code, status) = cli.status();
    assert_eq!(code, 6, "{status}");
    assert!(
        status["problems"].to_string().contains("is not the one in"),
        "{status}"
    );
    cli.ok(&["restore"]);
    assert_eq!(cli.status().0, 0);
    assert_eq!(router.lan_client(&v4, 2).transport, Transport::V2);
    cli.ok(&["disable"]);
}
