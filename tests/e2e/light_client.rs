//! A real light client, unmodified: Kyoto (crate `bip157` from crates.io) syncs a regtest chain
//! of headers, filter headers, filters and a matching block through the proxy: through the
//! SOCKS5 front end (Kyoto's own proxy option) and redirected by the product's kernel rule,
//! from the suite's chain node behind the independent v2 responder; and, speaking v2 itself,
//! from the chain node as a v1-only node behind inbound mode, with each shaping strategy.
//!
//! Two runs print the tables docs/performance.md shows (`cargo test -p bip324-e2e --test
//! light_client -- --nocapture`): bytes per message type, and what each shaping strategy costs.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bip324_e2e::chain_node::{Chain, spawn_chain_node};
use bip324_e2e::netns::Netns;
use bip324_e2e::responder::{Flow, Ledger, Report, Responder, ResponderOptions, Tally, Transport};
use bip324_e2e::server::Server;
use bip324_e2e::testbed::{
    CLIENT_V4, NODE_PORT, Proxy, RedirectCli, Run, TAGGED_GID, TwoHosts, contains, run_client,
};
use bip324_e2e::v1::REGTEST_MAGIC;
use bitcoin::ScriptBuf;

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-light-client");
const SOCKS: &str = "127.0.0.1:1080";
/// Headers in messages of up to 2,000, two batches of filter headers and three of filters.
const TIP: usize = 2_100;
const PAID_AT: usize = 1_500;

fn watched() -> ScriptBuf {
    ScriptBuf::from_bytes([&[0x00, 0x14][..], &[0x42; 20]].concat())
}

/// The remote host's node: the chain behind the independent v2 responder on `NODE_PORT`.
struct ChainNode {
    chain: Arc<Chain>,
    responder: Responder,
    _node: Server,
}

impl ChainNode {
    fn start(host: &Netns) -> ChainNode {
        let chain = Arc::new(Chain::generate(TIP, (&watched(), PAID_AT)));
        let served = Arc::clone(&chain);
        let (node, responder) = host
            .run(move || {
                let node = spawn_chain_node(TcpListener::bind("127.0.0.1:0")?, served)?;
                let options = ResponderOptions {
                    magic: REGTEST_MAGIC,
                    garbage_len: 0,
                    decoys_before_version: 0,
                    decoys_after_version: 0,
                    decoy_every: 0,
                    upstream: node.addr(),
                    keep_received: true,
                };
                let responder = Responder::spawn(TcpListener::bind(("::", NODE_PORT))?, options)?;
                std::io::Result::Ok((node, responder))
            })
            .expect("start the chain node");
        ChainNode {
            chain,
            responder,
            _node: node,
        }
    }

    /// Runs Kyoto in `host` (as `gid`) to `peer` and checks it synced the whole chain, found
    /// the one block that pays the watched script, and did so over v2; returns the
    /// responder's report of this connection, the one after `seen` others.
    fn sync(
        &self,
        (host, gid): (&Netns, Option<u32>),
        seen: usize,
        peer: impl ToString,
        extra: &[&str],
    ) -> Report {
        let script = hex::encode(watched().as_bytes());
        let peer = peer.to_string();
        let mut args = vec![peer.as_str(), "--watch", &script, "--timeout", "120"];
        args.extend(extra);
        assert_synced(&run_client(CLIENT, host, gid, &args), &self.chain);
        let reports = self
            .responder
            .wait_for_reports(seen + 1, Duration::from_secs(10));
        let report = reports.get(seen).expect("Kyoto's connection ended").clone();
        assert_eq!(report.transport, Transport::V2);
        // Nothing the client sent crossed in clear: not a v1 header, not the hash of the
        // block it asked for.
        let getdata = [&REGTEST_MAGIC[..], b"getdata"].concat();
        let asked = self.chain.blocks[PAID_AT].block_hash();
        assert!(!contains(&report.received, &getdata));
        assert!(!contains(&report.received, asked.as_ref()));
        report
    }
}

/// Kyoto synced the whole chain and found the one block that pays the watched script.
fn assert_synced(run: &Run, chain: &Chain) {
    assert!(run.success, "Kyoto did not sync: {}", run.stderr);
    let (height, hash) = chain.tip();
    assert_eq!(run.value("tip_height"), Some(height.to_string().as_str()));
    assert_eq!(run.value("tip_hash"), Some(hash.to_string().as_str()));
    assert_eq!(run.value("matched"), Some(PAID_AT.to_string().as_str()));
    assert_eq!(run.value("paid"), Some("true"));
}

fn of(ledger: &Ledger, flow: Flow, command: &str) -> Tally {
    ledger
        .get(&(flow, command.to_string()))
        .copied()
        .unwrap_or_default()
}

#[test]
fn kyoto_syncs_through_the_socks5_front_end() {
    let hosts = TwoHosts::create();
    let node = ChainNode::start(&hosts.remote);
    let proxy = Proxy::start(
        &hosts.client,
        &["--socks5", SOCKS, "--socks5-network", "regtest"],
    );
    let report = node.sync(
        (&hosts.client, None),
        0,
        hosts.remote_v4(),
        &["--socks5", SOCKS],
    );
    let session = hex::encode(report.session_id.unwrap());
    assert!(
        proxy.wait_for_log(&format!("session_id={session}"), Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    // A peer given by name: Kyoto asks the proxy to resolve it (Tor's RESOLVE), then
    // connects to the address. The name must lead to another host (the proxy refuses this
    // one as a destination, so not `localhost`) without a resolver of our own: a number is a
    // name the system resolver reads as an IPv4 address (inet_aton), 169870338 is 10.32.4.2.
    let number = std::net::Ipv4Addr::from(169_870_338u32);
    assert_eq!(std::net::IpAddr::from(number), hosts.remote_v4().ip());
    node.sync(
        (&hosts.client, None),
        1,
        format!("169870338:{NODE_PORT}"),
        &["--socks5", SOCKS],
    );
    // The whole sync, as BIP-157 lays it out: every header (some twice: Kyoto lists its
    // locator oldest first, and a node answers from the first hash it knows, as Core does),
    // every filter once, one block.
    let ledger = &report.ledger;
    let headers = of(ledger, Flow::ToPeer, "headers");
    assert!(headers.v1_bytes - 24 * headers.messages > 81 * TIP as u64);
    assert_eq!(of(ledger, Flow::ToPeer, "cfilter").messages, TIP as u64);
    assert_eq!(of(ledger, Flow::ToPeer, "block").messages, 1);
    print_table(ledger, report.bytes_received + report.bytes_sent);
}

/// In the group, with each backend, Kyoto speaking v1 is upgraded; told that the node offers
/// v2, it speaks v2 itself (its own `bip324` crate) and the proxy passes its bytes through.
fn kyoto_in_the_group_syncs_through_the_redirect(backend: &str) {
    let hosts = TwoHosts::create();
    let node = ChainNode::start(&hosts.remote);
    let proxy = Proxy::start(&hosts.client, &[]);
    RedirectCli::new(&hosts).enable_tagged(backend, "8333");
    let tagged = (&hosts.client, Some(TAGGED_GID));
    let report = node.sync(tagged, 0, hosts.remote_v6(), &[]);
    let session = hex::encode(report.session_id.unwrap());
    assert!(
        proxy.wait_for_log(&format!("session_id={session}"), Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    node.sync(tagged, 1, hosts.remote_v4(), &["--v2", "1"]);
    assert!(
        proxy.wait_for_count("transport=passthrough", 1, Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

bip324_e2e::for_each_backend!(kyoto_in_the_group_syncs_through_the_redirect);

/// Inbound mode with a real v2 client: Kyoto, told that the node offers v2, syncs from the
/// chain node as a v1-only node behind `bip324-proxy --inbound`, once per shaping strategy.
/// Every padding decoy must be skipped by Kyoto's own `bip324` crate; the proxy's closing line
/// gives the bytes on each side, printed as what each strategy costs on a real sync.
#[test]
fn kyoto_speaking_v2_syncs_from_a_v1_node_behind_inbound_mode() {
    const PORT: u16 = 18444;
    let chain = Arc::new(Chain::generate(TIP, (&watched(), PAID_AT)));
    let script = hex::encode(watched().as_bytes());
    let mut costs = Vec::new();
    for shaping in ["none", "buckets", "cover"] {
        let hosts = TwoHosts::create();
        let listener = hosts
            .client
            .run(|| TcpListener::bind(("::", PORT)))
            .unwrap();
        let _node = spawn_chain_node(listener, Arc::clone(&chain)).unwrap();
        let args = ["--inbound", "[::]:325", "--shaping", shaping];
        let proxy = Proxy::start(&hosts.client, &args);
        let cli = RedirectCli::new(&hosts);
        cli.ok(&["inbound", "enable", "--ports", &PORT.to_string()]);
        let node = format!("{CLIENT_V4}:{PORT}");
        let kyoto = [node.as_str(), "--watch", &script, "--v2", "1"];
        assert_synced(&run_client(CLIENT, &hosts.remote, None, &kyoto), &chain);
        assert!(
            proxy.wait_for_log("inbound connection closed", Duration::from_secs(10)),
            "{}",
            proxy.log()
        );
        let log = proxy.log();
        assert!(log.contains("transport=v2"), "{log}");
        let closed = log
            .lines()
            .find(|l| l.contains("connection closed"))
            .unwrap();
        let field = |key: &str| -> u64 {
            closed
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {closed}"))
        };
        let v1 = field("node_in") + field("node_out");
        let v2 = field("peer_in") + field("peer_out");
        costs.push((shaping, v1, v2));
        cli.ok(&["inbound", "disable"]);
    }
    // Cover pads as buckets do; while the sync keeps both directions busy it adds no more.
    assert!(
        costs[1].2 > costs[0].2 && costs[2].2 > costs[0].2,
        "padding costs bytes: {costs:?}"
    );
    println!("| `--shaping` | v1 bytes (node) | v2 bytes (Kyoto) | v2 / v1 |");
    println!("|---|---:|---:|---:|");
    for (shaping, v1, v2) in costs {
        let ratio = (v2 as f64 / v1 as f64 - 1.0) * 100.0;
        println!("| {shaping} | {v1} | {v2} | {ratio:+.2} % |");
    }
}

/// Prints, per message type, the bytes framed as v1 (what the client and the proxy exchanged)
/// and as v2 (what crossed the network), and the handshake's share of the v2 total.
fn print_table(ledger: &Ledger, wire_total: u64) {
    println!("| direction | message | count | v1 bytes | v2 bytes | v2 − v1 |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut total = Tally::default();
    for ((flow, command), tally) in ledger {
        let direction = match flow {
            Flow::FromPeer => "client → node",
            Flow::ToPeer => "node → client",
        };
        println!(
            "| {direction} | `{command}` | {} | {} | {} | {:+} |",
            tally.messages,
            tally.v1_bytes,
            tally.v2_bytes,
            tally.v2_bytes as i64 - tally.v1_bytes as i64
        );
        total.messages += tally.messages;
        total.v1_bytes += tally.v1_bytes;
        total.v2_bytes += tally.v2_bytes;
    }
    let handshake = wire_total - total.v2_bytes;
    println!(
        "| both | v2 handshake (keys, garbage terminators, version packets) | | 0 | {handshake} | +{handshake} |"
    );
    let v2 = total.v2_bytes + handshake;
    println!(
        "| both | **total** | {} | {} | {v2} | {:+} ({:+.2} %) |",
        total.messages,
        total.v1_bytes,
        v2 as i64 - total.v1_bytes as i64,
        (v2 as f64 / total.v1_bytes as f64 - 1.0) * 100.0
    );
}
