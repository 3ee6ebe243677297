//! `bip324-proxy --take-over`: a new proxy takes the running one's listening sockets and its
//! live connections, each with its v2 session, and carries them on where they stood; the
//! old proxy exits. Checked end to end against the independent remote node (rust-bitcoin's
//! `bip324`), which would see any new handshake and fail any packet sealed out of step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use bip324_e2e::initiator::V2Peer;
use bip324_e2e::listening_node::ListeningNode;
use bip324_e2e::responder::{ResponderOptions, Transport};
use bip324_e2e::socks5_client::{self, To};
use bip324_e2e::testbed::{
    CLIENT_V4, NODE_PORT, Proxy, REMOTE_V4, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts, V1Peer,
    http_get, noisy_responder, raise_own_fd_limit,
};
use bip324_e2e::v1::{Message, REGTEST_MAGIC, read_message, version_payload, write_message};

const LOAD_CLIENT: &str = env!("CARGO_BIN_EXE_e2e-load-client");
const SOCKS: &str = "127.0.0.1:1080";
const WEB: &str = "127.0.0.1:9324";

/// Keeps echoing `size`-byte messages on `peer` until told to stop; returns the bytes that
/// came back, or what went wrong.
fn keep_echoing(
    mut peer: V1Peer,
    size: usize,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Result<u64, String>> {
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let mut moved = 0;
        let mut seq = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let mut payload = vec![seq as u8; size];
            payload[..4].copy_from_slice(&seq.to_le_bytes());
            peer.try_echo(&payload)
                .map_err(|e| format!("after {moved} bytes: {e}"))?;
            moved += size as u64;
            seq += 1;
        }
        Ok(moved)
    })
}

fn value(stdout: &str, key: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {stdout}"))
}

/// The number a log line gives for `key=`.
fn logged(log: &str, line: &str, key: &str) -> u64 {
    let found = log
        .lines()
        .find(|l| l.contains(line))
        .unwrap_or_else(|| panic!("no {line:?} in\n{log}"));
    let at = found
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {found}"));
    found[at + key.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// 1,000 redirected v2 connections exchanging messages of mixed sizes, one moving megabytes
/// in 2 MB messages and one through SOCKS5 go through `--take-over`: every echo arrives whole
/// and in order, none is closed, the remote node saw exactly one handshake per connection,
/// and the old proxy exits at once (it holds nothing).
#[test]
fn a_thousand_live_connections_move_to_the_successor_and_lose_nothing() {
    raise_own_fd_limit();
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, |upstream| ResponderOptions {
        keep_received: false,
        decoy_every: 100,
        ..noisy_responder(upstream)
    });
    let options = [
        "--listen",
        "127.0.0.1:324",
        "--socks5",
        SOCKS,
        "--socks5-network",
        "regtest",
        "--metrics",
        WEB,
    ];
    let mut old = Proxy::start(&hosts.client, &options);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", &NODE_PORT.to_string());
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");

    let stop = Arc::new(AtomicBool::new(false));
    let mover = keep_echoing(V1Peer::connect(&hosts), 2_000_000, &stop);
    let to = remote.parse().unwrap();
    let socks = hosts.client.run(move || {
        let (stream, code) = socks5_client::connect(SOCKS.parse().unwrap(), To::Ip(to), false)?;
        assert_eq!(code, 0);
        std::io::Result::Ok(stream)
    });
    let socks = keep_echoing(V1Peer::greet(socks.unwrap(), to), 3000, &stop);
    let load = hosts
        .client
        .command(LOAD_CLIENT, Some(TAGGED_GID))
        .args([&remote, "--connections", "1000", "--seconds", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        old.wait_for_count("connection opened", 1002, Duration::from_secs(30)),
        "{}",
        old.log()
    );
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let new = Proxy::start(&hosts.client, &[&options[..], &["--take-over"]].concat());
    assert!(
        new.wait_for_log("took over the sockets and", Duration::from_secs(20)),
        "{}\n{}",
        new.log(),
        old.log()
    );
    let line = "took over the sockets and";
    let taken = logged(&new.log(), line, "connections");
    eprintln!(
        "the successor carries {taken} live connections on ({} bytes of state, received in \
         {} ms), {:?} after it started",
        logged(&new.log(), line, "state_bytes"),
        logged(&new.log(), line, "took_ms"),
        started.elapsed()
    );
    assert_eq!(
        taken,
        1002,
        "every relaying connection moved:\n{}",
        new.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !old.is_running(),
        "the old proxy holds nothing and exits:\n{}",
        old.log()
    );

    // The successor lists them (status and the dashboard's data answer with its pid).
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (_, status) = cli.status();
        let status = &status["proxy_status"];
        assert_eq!(status["proxy"]["pid"], new.pid(), "{status}");
        let listed = status["connections"].as_array().unwrap().len();
        if listed == 1002 || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        listed, 1002,
        "the successor lists every connection it carries"
    );
    let page = http_get(&hosts.client, WEB, "/status.json");
    assert!(page.contains(&format!("\"pid\":{}", new.pid())), "{page}");

    let output = load.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        new.log()
    );
    assert_eq!(value(&stdout, "connections"), 1000);
    assert_eq!(value(&stdout, "failures"), 0);
    stop.store(true, Ordering::Relaxed);
    let moved = mover.join().unwrap().expect("the large transfer goes on");
    let through_socks = socks
        .join()
        .unwrap()
        .expect("the SOCKS5 connection goes on");
    eprintln!("moved {moved} bytes in 2 MB messages and {through_socks} through SOCKS5");
    assert!(moved >= 20_000_000, "tens of megabytes: {moved}");

    // One handshake per connection at the remote: none was made again.
    let reports = node
        .responder
        .wait_for_reports(1002, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let reports_now = node.responder.wait_for_reports(0, Duration::ZERO);
    assert_eq!(reports.len(), 1002, "each connection ended");
    assert_eq!(
        reports_now.len(),
        1002,
        "and no other connection reached the node"
    );
    assert!(
        reports
            .iter()
            .all(|r| r.error.is_none() && r.transport == Transport::V2),
        "every session authenticated to its end"
    );
}

/// A connection that cannot leave yet (this one has not sent its first bytes) stays with the
/// old proxy, which serves it to its end and then exits, while the successor carries the
/// relaying one on and serves every newcomer. Only a process of the proxy's own user may
/// take over.
#[test]
fn a_connection_still_opening_finishes_in_the_old_proxy() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let mut old = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", &NODE_PORT.to_string());
    let mut relaying = V1Peer::connect(&hosts);
    relaying.echoes(b"before the take-over");
    let remote: std::net::SocketAddr = format!("{REMOTE_V4}:{NODE_PORT}").parse().unwrap();
    let opening = hosts
        .client
        .run_as_group(TAGGED_GID, move || std::net::TcpStream::connect(remote))
        .unwrap();
    // Accepted by the old proxy (listed), not waiting in the backlog.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cli.status().1["proxy_status"]["connections"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "the old proxy accepts it");
        std::thread::sleep(Duration::from_millis(20));
    }

    std::thread::sleep(Duration::from_millis(300));
    let before_successor = std::time::SystemTime::now();
    let new = Proxy::start(&hosts.client, &["--take-over", "--drain-timeout", "60s"]);
    assert!(
        new.wait_for_log(
            "took over the sockets and 1 live connections",
            Duration::from_secs(10)
        ),
        "{}\n{}",
        new.log(),
        old.log()
    );
    relaying.echoes(b"carried on by the successor");
    let mut after = V1Peer::connect(&hosts);
    after.echoes(b"a newcomer");
    let (_, status) = cli.status();
    let status = &status["proxy_status"];
    assert_eq!(status["proxy"]["pid"], new.pid(), "{status}");
    let local = |s: &std::net::TcpStream| s.local_addr().unwrap().to_string();
    let mut clients: Vec<String> = status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap().to_string())
        .collect();
    clients.sort();
    let mut expected = vec![local(&relaying.0), local(&after.0)];
    expected.sort();
    assert_eq!(
        clients, expected,
        "the opening connection is not the successor's"
    );
    // The moved connection keeps its age.
    let relaying_status = status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == local(&relaying.0).as_str())
        .unwrap();
    let since_epoch = before_successor
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let started = relaying_status["started"].as_f64().unwrap();
    assert!(
        started < since_epoch.as_secs_f64() - 0.2,
        "{relaying_status}"
    );

    // A process of another user may not take over: refused, and nothing changes.
    let control = bip324_e2e::testbed::control_socket(&hosts.client);
    let refusal = hosts.client.run_as_user(32999, 65534, move || {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&control)?;
        stream.write_all(b"{\"version\":1,\"request\":\"take-over\",\"connections\":1}\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        std::io::Result::Ok(answer)
    });
    let refusal = refusal.expect("a user of the socket's group may ask");
    assert!(
        refusal.contains("only a process of this proxy's own user"),
        "{refusal}"
    );

    // The old proxy still serves the opening connection, then exits.
    assert!(old.is_running(), "draining while its connection lives");
    let mut opening = V1Peer::greet(opening, remote);
    opening.echoes(b"served by the old proxy");
    assert!(old.log().contains("connection opened"), "{}", old.log());
    drop(opening);
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!old.is_running(), "the drained proxy exits:\n{}", old.log());
    relaying.echoes(b"and the successor goes on alone");
    after.echoes(b"with every connection");
}

/// Every transport and both directions move: an outbound v1 fallback to a v1-only node, an
/// outbound v2 client passed through, and inbound mode's v2 peer (with the node's messages
/// edited in between) and v1 peer. Each goes on after the take-over, and the v2 peers'
/// sessions are the same.
#[test]
fn every_kind_of_connection_moves() {
    const FALLBACK_PORT: u16 = 8334;
    const INBOUND_NODE_PORT: u16 = 18444;
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _v1_only = hosts
        .remote
        .run(|| {
            let listener = std::net::TcpListener::bind(("::", FALLBACK_PORT))?;
            bip324_e2e::echo::spawn_echo_node(listener, REGTEST_MAGIC)
        })
        .unwrap();
    let listener = hosts
        .client
        .run(|| std::net::TcpListener::bind(("::", INBOUND_NODE_PORT)))
        .unwrap();
    let advertised = SocketAddr::new(CLIENT_V4.parse().unwrap(), INBOUND_NODE_PORT);
    let local_node = ListeningNode::spawn(listener, REGTEST_MAGIC, advertised).unwrap();
    let options = [
        "--listen",
        "127.0.0.1:324",
        "--inbound",
        "[::]:325",
        "--v1-fallback",
    ];
    let old = Proxy::start(&hosts.client, &options);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", &format!("{NODE_PORT},{FALLBACK_PORT}"));
    cli.ok(&[
        "inbound",
        "enable",
        "--ports",
        &INBOUND_NODE_PORT.to_string(),
    ]);

    // Outbound: a v1 client falls back to plaintext; a v2 client passes through.
    let fallback_node: SocketAddr = format!("{REMOTE_V4}:{FALLBACK_PORT}").parse().unwrap();
    let stream = hosts
        .client
        .run_as_group(TAGGED_GID, move || {
            std::net::TcpStream::connect(fallback_node)
        })
        .unwrap();
    let mut fallback = V1Peer::greet(stream, fallback_node);
    let remote: SocketAddr = format!("{REMOTE_V4}:{NODE_PORT}").parse().unwrap();
    let mut passthrough = hosts
        .client
        .run_as_group(TAGGED_GID, move || {
            V2Peer::connect(remote, REGTEST_MAGIC, (100, 1))
        })
        .expect("a v2 client through the redirect");
    let version = Message::new("version", version_payload(remote, 3, "/v2-client:0.1/"));
    passthrough.send(&version).unwrap();
    assert_eq!(passthrough.receive().unwrap().unwrap().command, "version");
    assert_eq!(passthrough.receive().unwrap().unwrap().command, "verack");
    let passthrough_session = passthrough.session_id();

    // Inbound: a v2 peer and a v1 peer of the local node.
    let node_addr = SocketAddr::new(CLIENT_V4.parse().unwrap(), INBOUND_NODE_PORT);
    let greeting = Message::new("version", version_payload(node_addr, 5, "/peer:0.1/"));
    let (mut v2_peer, mut v1_peer) = {
        let greeting = greeting.clone();
        hosts.remote.run(move || {
            let mut v2 = V2Peer::connect(node_addr, REGTEST_MAGIC, (300, 2)).unwrap();
            v2.send(&greeting).unwrap();
            let mut v1 = std::net::TcpStream::connect(node_addr).unwrap();
            v1.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write_message(&mut v1, REGTEST_MAGIC, &greeting).unwrap();
            (v2, v1)
        })
    };
    // The node answers version, verack and its self-advertisement; NODE_P2P_V2 is set.
    for expected in ["version", "verack", "addr"] {
        assert_eq!(v2_peer.receive().unwrap().unwrap().command, expected);
        let got = read_message(&mut v1_peer, REGTEST_MAGIC).unwrap().unwrap();
        assert_eq!(got.command, expected);
    }
    let inbound_session = v2_peer.session_id();
    assert!(old.wait_for_count("connection opened", 4, Duration::from_secs(5)));

    let new = Proxy::start(&hosts.client, &[&options[..], &["--take-over"]].concat());
    assert!(
        new.wait_for_log(
            "took over the sockets and 4 live connections",
            Duration::from_secs(10)
        ),
        "{}\n{}",
        new.log(),
        old.log()
    );

    fallback.echoes(b"plaintext, as the fallback chose");
    let hello = Message::new("hello", b"still v2 end to end".to_vec());
    passthrough.send(&hello).unwrap();
    assert_eq!(passthrough.receive().unwrap(), Some(hello));
    assert_eq!(passthrough.session_id(), passthrough_session);
    let ping = Message::new("ping", [9u8; 8]);
    v2_peer.send(&ping).unwrap();
    assert_eq!(
        v2_peer.receive().unwrap(),
        Some(Message::new("pong", [9u8; 8]))
    );
    assert_eq!(v2_peer.session_id(), inbound_session);
    write_message(&mut v1_peer, REGTEST_MAGIC, &ping).unwrap();
    let pong = read_message(&mut v1_peer, REGTEST_MAGIC).unwrap();
    assert_eq!(pong, Some(Message::new("pong", [9u8; 8])));
    let seen = local_node.wait_for_peers(2, Duration::from_secs(5));
    assert!(
        seen.iter()
            .all(|peer| peer.received == [greeting.clone(), ping.clone()]),
        "the node got each peer's messages once, in order: {seen:?}"
    );
    let (_, status) = cli.status();
    let mut transports: Vec<String> = status["proxy_status"]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["transport"].as_str().unwrap().to_string())
        .collect();
    transports.sort();
    assert_eq!(
        transports,
        ["passthrough", "v1", "v1_fallback", "v2"],
        "{status}"
    );
}
