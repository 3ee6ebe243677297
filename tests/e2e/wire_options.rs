//! The options that change what goes on the wire, end to end against the independent v2
//! responder: `--user-agent-suffix` (the client's `version` reaches the node with
//! `/bip324-proxy:VERSION/` appended, every other byte as sent) and `--shaping buckets` (the
//! responder skips every padding decoy and the messages arrive byte-exact), `--shaping cover`,
//! `--garbage-len` and `--key-prefix`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bip324_e2e::listening_node::ListeningNode;
use bip324_e2e::responder::{Flow, Responder, Transport};
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, RemoteNode, TAGGED_GID, TwoHosts, nft_redirect, noisy_responder,
};
use bip324_e2e::v1::{self, Message, REGTEST_MAGIC};

/// The client's `version` as the node behind the responder received it.
fn version_at_the_node(proxy_args: &[&str], agent: &'static str) -> (Vec<u8>, Vec<u8>) {
    let hosts = TwoHosts::create();
    let (node, _responder) = hosts.remote.run(|| {
        let node = ListeningNode::spawn(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            REGTEST_MAGIC,
            "127.0.0.1:1".parse().unwrap(),
        )
        .unwrap();
        let upstream = node.addr();
        let listener = TcpListener::bind(("::", NODE_PORT)).unwrap();
        (
            node,
            Responder::spawn(listener, noisy_responder(upstream)).unwrap(),
        )
    });
    nft_redirect(&hosts.client, TAGGED_GID);
    let _proxy = Proxy::start(&hosts.client, proxy_args);
    let remote = SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT);
    let sent = v1::version_payload(remote, 0xabcdef, agent);
    let payload = sent.clone();
    hosts.client.run_as_group(TAGGED_GID, move || {
        let mut stream = TcpStream::connect(remote).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        v1::write_message(
            &mut stream,
            REGTEST_MAGIC,
            &Message::new("version", payload),
        )
        .unwrap();
        v1::read_message(&mut stream, REGTEST_MAGIC)
            .unwrap()
            .expect("the node's version");
    });
    let seen = node.wait_for_peers(1, Duration::from_secs(5));
    (sent, seen[0].received[0].payload.clone())
}

#[test]
fn the_suffix_is_appended_and_nothing_else_changes() {
    let agent = "/Satoshi:25.1.0/";
    let (sent, received) = version_at_the_node(&["--user-agent-suffix"], agent);
    let suffixed = format!("{agent}bip324-proxy:{}/", env!("CARGO_PKG_VERSION"));
    // Fixed fields, then the user agent (one length byte here), then the rest.
    const AT: usize = 80;
    assert_eq!(
        received[..AT],
        sent[..AT],
        "every field before the user agent"
    );
    assert_eq!(usize::from(received[AT]), suffixed.len());
    assert_eq!(
        &received[AT + 1..AT + 1 + suffixed.len()],
        suffixed.as_bytes()
    );
    assert_eq!(
        received[AT + 1 + suffixed.len()..],
        sent[AT + 1 + agent.len()..],
        "every field after it"
    );
}

#[test]
fn without_the_option_the_version_is_untouched() {
    let (sent, received) = version_at_the_node(&[], "/btcwire:0.5.0/btcd:0.24.2/");
    assert_eq!(received, sent);
}

/// The tagged group's connections go through a proxy started with `proxy_args` to the
/// independent responder.
fn behind_the_proxy(proxy_args: &[&str]) -> (TwoHosts, RemoteNode, Proxy) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, proxy_args);
    (hosts, node, proxy)
}

/// With bucket padding the independent responder skips every decoy: the client's messages
/// are echoed byte for byte, and the padding shows as extra bytes on the wire.
#[test]
fn bucket_padding_is_skipped_by_an_independent_peer() {
    let client = env!("CARGO_BIN_EXE_e2e-v1-client");
    let mut sent_on_the_wire = Vec::new();
    for shaping in [&[][..], &["--shaping", "buckets"][..]] {
        let (hosts, node, _proxy) = behind_the_proxy(shaping);
        let remote = format!("{REMOTE_V4}:{NODE_PORT}");
        let args = [remote.as_str(), "--large", "100000", "--small", "300"];
        let run = bip324_e2e::testbed::run_client(client, &hosts.client, Some(TAGGED_GID), &args);
        assert!(run.success, "{shaping:?}: {}", run.stderr);
        assert_eq!(run.value("echoed"), Some("301"));
        let report = &node.responder.wait_for_reports(1, Duration::from_secs(10))[0];
        assert_eq!(report.error, None);
        sent_on_the_wire.push(report.bytes_received);
    }
    assert!(
        sent_on_the_wire[1] > sent_on_the_wire[0],
        "padding costs bytes: {sent_on_the_wire:?}"
    );
}

/// `--garbage-len`: the bytes the responder received before the first message are the key
/// (64), the garbage, its terminator (16) and the version packet (20), whatever the messages.
#[test]
fn the_garbage_length_is_what_was_asked() {
    let client = env!("CARGO_BIN_EXE_e2e-v1-client");
    for (range, expected) in [("0", 0..=0), ("1000", 1000..=1000), ("10-20", 10..=20)] {
        let (hosts, node, _proxy) = behind_the_proxy(&["--garbage-len", range]);
        let remote = format!("{REMOTE_V4}:{NODE_PORT}");
        let args = [remote.as_str(), "--large", "1000", "--small", "3"];
        let run = bip324_e2e::testbed::run_client(client, &hosts.client, Some(TAGGED_GID), &args);
        assert!(run.success, "{range}: {}", run.stderr);
        let report = &node.responder.wait_for_reports(1, Duration::from_secs(10))[0];
        let messages: u64 = report
            .ledger
            .iter()
            .filter(|((flow, _), _)| *flow == Flow::FromPeer)
            .map(|(_, tally)| tally.v2_bytes)
            .sum();
        let garbage = report.bytes_received - messages - 64 - 16 - 20;
        assert!(expected.contains(&garbage), "{range}: {garbage} bytes");
    }
}

/// What the responder received from one idle connection: version, 3 s of silence, a ping.
fn bytes_from_an_idle_connection(proxy_args: &[&str]) -> u64 {
    let (hosts, node, _proxy) = behind_the_proxy(proxy_args);
    let remote = SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT);
    hosts.client.run_as_group(TAGGED_GID, move || {
        let mut stream = TcpStream::connect(remote).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let version = v1::version_payload(remote, 1, "/idle/");
        v1::write_message(
            &mut stream,
            REGTEST_MAGIC,
            &Message::new("version", version),
        )
        .unwrap();
        v1::read_message(&mut stream, REGTEST_MAGIC)
            .unwrap()
            .expect("version");
        std::thread::sleep(Duration::from_secs(3));
        v1::write_message(&mut stream, REGTEST_MAGIC, &Message::new("ping", [4u8; 8])).unwrap();
        loop {
            let message = v1::read_message(&mut stream, REGTEST_MAGIC)
                .unwrap()
                .unwrap();
            if message.command == "pong" {
                assert_eq!(message.payload, [4u8; 8]);
                break;
            }
        }
    });
    let report = &node.responder.wait_for_reports(1, Duration::from_secs(10))[0];
    assert_eq!(
        report.error, None,
        "the independent peer skipped every decoy"
    );
    report.bytes_received
}

/// `--shaping cover` sends decoys while the client is silent, and no more than its budget.
#[test]
fn cover_decoys_flow_while_idle_within_their_budget() {
    const BUDGET: u64 = 2048;
    let plain = bytes_from_an_idle_connection(&[]);
    let budget = BUDGET.to_string();
    let covered = bytes_from_an_idle_connection(&[
        "--shaping",
        "cover",
        "--cover-interval",
        "100ms",
        "--cover-budget",
        &budget,
    ]);
    let extra = covered - plain;
    // A few 512-byte decoys a second are allowed; the flights' own padding adds a little.
    assert!(extra >= 4 * 512, "cover flowed while idle: {extra} bytes");
    let bound = BUDGET * 4 + BUDGET + 8 * 512;
    assert!(extra <= bound, "within the budget: {extra} > {bound}");
}

/// `--key-prefix`: the first 16 bytes the independent responder (rust-bitcoin's `bip324`)
/// receives are the prefix, it completes every handshake, and ten connections share the
/// prefix while the key bytes after it all differ.
#[test]
fn every_key_starts_with_the_prefix_and_the_rest_differs() {
    const PREFIX: &[u8; 16] = b"GET / HTTP/1.1\r\n";
    const CONNECTIONS: usize = 10;
    let client = env!("CARGO_BIN_EXE_e2e-v1-client");
    let (hosts, node, proxy) = behind_the_proxy(&["--key-prefix", &hex::encode(PREFIX)]);
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");
    let args = [remote.as_str(), "--large", "1000", "--small", "3"];
    for i in 0..CONNECTIONS {
        let run = bip324_e2e::testbed::run_client(client, &hosts.client, Some(TAGGED_GID), &args);
        assert!(
            run.success,
            "connection {i}: {}\n{}",
            run.stderr,
            proxy.log()
        );
        assert_eq!(run.value("echoed"), Some("4"), "connection {i}");
    }
    let reports = node
        .responder
        .wait_for_reports(CONNECTIONS, Duration::from_secs(10));
    assert_eq!(reports.len(), CONNECTIONS);
    for report in &reports {
        assert_eq!(report.transport, Transport::V2);
        assert_eq!(report.error, None);
        assert!(report.session_id.is_some(), "handshake completed");
        assert_eq!(&report.received[..16], PREFIX, "{:?}", report.peer);
    }
    let mut rests: Vec<&[u8]> = reports.iter().map(|r| &r.received[16..64]).collect();
    rests.sort_unstable();
    rests.dedup();
    assert_eq!(
        rests.len(),
        CONNECTIONS,
        "the key after the prefix differs each time"
    );
}
