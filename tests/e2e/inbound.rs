//! Inbound mode end to end: a v1-only node listens on the "client" host, which runs the
//! product (`bip324-proxy --inbound`, `bip324-redirect inbound enable`); peers on the
//! "remote" host connect to it: rust-bitcoin's `bip324` crate as a v2 initiator, and plain v1
//! peers, over IPv4 and IPv6. The node must see each peer's real address, and every message
//! must arrive byte for byte, with only `NODE_P2P_V2` added where the node advertises
//! itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bip324_e2e::initiator::V2Peer;
use bip324_e2e::listening_node::{ListeningNode, SERVICES, Seen, self_advertisement};
use bip324_e2e::testbed::{CLIENT_V4, CLIENT_V6, Proxy, RedirectCli, TwoHosts, http_get};
use bip324_e2e::v1::{self, Message, REGTEST_MAGIC};

/// The node's port: regtest's, so the proxy takes the network from it.
const NODE_PORT: u16 = 18444;
const INBOUND_PORT: &str = "325";
const NODE_P2P_V2: u64 = 1 << 11;

struct Inbound {
    hosts: TwoHosts,
    node: ListeningNode,
    proxy: Proxy,
}

impl Inbound {
    /// The node on [::]:18444 (dual stack), the proxy, and `inbound enable`.
    fn start(proxy_args: &[&str]) -> Inbound {
        let hosts = TwoHosts::create();
        let listener = hosts
            .client
            .run(|| TcpListener::bind(("::", NODE_PORT)))
            .expect("node listens");
        let advertised = SocketAddr::new(CLIENT_V4.parse().unwrap(), NODE_PORT);
        let node = ListeningNode::spawn(listener, REGTEST_MAGIC, advertised).unwrap();
        let mut args = vec!["--inbound", "[::]:325"];
        args.extend(proxy_args);
        let proxy = Proxy::start(&hosts.client, &args);
        RedirectCli::new(&hosts).ok(&["inbound", "enable", "--ports", "18444"]);
        Inbound { hosts, node, proxy }
    }

    fn node_addr(&self, v6: bool) -> SocketAddr {
        let ip = if v6 { CLIENT_V6 } else { CLIENT_V4 };
        SocketAddr::new(ip.parse().unwrap(), NODE_PORT)
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        // The record lives in the test's state directory; the kernel objects with the
        // namespace. Disable anyway, as a user would.
        let _ = RedirectCli::new(&self.hosts).run(&["inbound", "disable"]);
    }
}

fn services(version: &[u8]) -> u64 {
    u64::from_le_bytes(version[4..12].try_into().unwrap())
}

/// The node's version with the bit set: every other byte as the node sent it.
fn with_v2_bit(version: &[u8]) -> Vec<u8> {
    let mut expected = version.to_vec();
    expected[4..12].copy_from_slice(&(services(version) | NODE_P2P_V2).to_le_bytes());
    expected
}

/// Sends our `version` to the node at `to` over `stream`; where the node saw us from, and its
/// first answer.
fn greet(mut stream: TcpStream, to: SocketAddr) -> (SocketAddr, Option<Message>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    v1::write_message(&mut stream, REGTEST_MAGIC, &our_version(to)).unwrap();
    let reply = v1::read_message(&mut stream, REGTEST_MAGIC).unwrap();
    (stream.local_addr().unwrap(), reply)
}

fn our_version(to: SocketAddr) -> Message {
    Message::new(
        "version",
        v1::version_payload(to, 0xfeed, "/inbound-peer:0.1/"),
    )
}

/// A v2 peer (rust-bitcoin's `bip324`) and a v1 peer, over IPv4 and IPv6: the node sees each
/// one's own address and port, its messages arrive unchanged, and the node's `version` and
/// self-advertising `addr` reach both with `NODE_P2P_V2` and nothing else changed.
#[test]
fn v2_and_v1_peers_reach_a_v1_only_node_as_themselves() {
    let inbound = Inbound::start(&["--metrics", "127.0.0.1:9325"]);
    let mut peers_seen = 0;
    for v6 in [false, true] {
        let node_addr = inbound.node_addr(v6);
        let advertised = SocketAddr::new(CLIENT_V4.parse().unwrap(), NODE_PORT);

        let (local, session_id, replies) = inbound.hosts.remote.run(move || {
            let mut peer = V2Peer::connect(node_addr, REGTEST_MAGIC, (300, 2)).unwrap();
            peer.send(&our_version(node_addr)).unwrap();
            let mut replies = Vec::new();
            for _ in 0..3 {
                replies.push(peer.receive().unwrap().expect("a reply"));
            }
            peer.send(&Message::new("ping", [7u8; 8])).unwrap();
            replies.push(peer.receive().unwrap().expect("pong"));
            (peer.local_addr(), peer.session_id(), replies)
        });
        peers_seen += 1;
        let seen = &inbound
            .node
            .wait_for_peers(peers_seen, Duration::from_secs(5))[peers_seen - 1];
        assert_eq!(seen.peer, local, "the node sees the v2 peer itself");
        assert_eq!(
            seen.received[0],
            our_version(node_addr),
            "version arrived unchanged"
        );
        assert_eq!(seen.received[1], Message::new("ping", [7u8; 8]));
        assert_eq!(replies[0].command, "version");
        assert_eq!(replies[0].payload, with_v2_bit(&inbound.node.version));
        assert_eq!(replies[1], Message::new("verack", []));
        // The node advertises its IPv4 address: the entry gains the bit for a peer that
        // reached it there, and only the node's own entry.
        let bit = if v6 { 0 } else { NODE_P2P_V2 };
        assert_eq!(
            replies[2],
            Message::new("addr", self_advertisement(advertised, SERVICES | bit)),
            "over IPv6: {v6}"
        );
        assert_eq!(replies[3], Message::new("pong", [7u8; 8]));
        let session = hex::encode(session_id);
        assert!(
            inbound.proxy.wait_for_log(&session, Duration::from_secs(5)),
            "the same session id at both ends:\n{}",
            inbound.proxy.log()
        );

        let (local, replies) = inbound.hosts.remote.run(move || {
            let mut stream =
                TcpStream::connect_timeout(&node_addr, Duration::from_secs(10)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            v1::write_message(&mut stream, REGTEST_MAGIC, &our_version(node_addr)).unwrap();
            let replies: Vec<Message> = (0..3)
                .map(|_| {
                    v1::read_message(&mut stream, REGTEST_MAGIC)
                        .unwrap()
                        .unwrap()
                })
                .collect();
            (stream.local_addr().unwrap(), replies)
        });
        peers_seen += 1;
        let seen = &inbound
            .node
            .wait_for_peers(peers_seen, Duration::from_secs(5))[peers_seen - 1];
        assert_eq!(seen.peer, local, "the node sees the v1 peer itself");
        assert_eq!(seen.received[0], our_version(node_addr));
        assert_eq!(replies[0].payload, with_v2_bit(&inbound.node.version));
        assert_eq!(replies[1], Message::new("verack", []));
    }
    let log = inbound.proxy.log();
    assert_eq!(log.matches("transport=v2").count(), 2, "{log}");
    assert_eq!(log.matches("transport=v1").count(), 2, "{log}");
    let metrics = http_get(&inbound.hosts.client, "127.0.0.1:9325", "/metrics");
    for line in [
        "bip324_proxy_inbound_connections_opened_total{transport=\"v2\"} 2",
        "bip324_proxy_inbound_connections_opened_total{transport=\"v1\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Bytes by wire: toward the node, everything reaches it in plaintext, and the v1 peers'
    // bytes were plaintext before it too; only the v2 peers' bytes count as v2.
    let peers = inbound.node.wait_for_peers(4, Duration::from_secs(5));
    let wire = |seen: &[Seen]| -> u64 {
        let messages = seen.iter().flat_map(|s| &s.received);
        messages
            .map(|m| m.to_wire(REGTEST_MAGIC).len() as u64)
            .sum()
    };
    // Peers alternate: v2, v1, v2, v1.
    let from_v1_peers: Vec<Seen> = peers.iter().skip(1).step_by(2).cloned().collect();
    let bytes = |direction: &str, side: &str| -> u64 {
        let series =
            format!("bip324_proxy_bytes_total{{direction=\"{direction}\",side=\"{side}\"}} ");
        let value = metrics.lines().find_map(|l| l.strip_prefix(&series));
        value
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series}in\n{metrics}"))
    };
    assert_eq!(
        bytes("client_to_remote", "v1"),
        wire(&peers) + wire(&from_v1_peers),
        "{metrics}"
    );
    let handshakes = 2 * 64;
    assert!(bytes("client_to_remote", "v2") > handshakes, "{metrics}");
    assert!(bytes("remote_to_client", "v2") > handshakes, "{metrics}");
}

/// A peer that breaks v2 after its handshake is cut off, and the node sees a reset, as it
/// would from a peer that reset its connection: never a clean close it could mistake for a
/// goodbye.
#[test]
fn a_peer_breaking_v2_is_a_reset_to_the_node() {
    let inbound = Inbound::start(&[]);
    let node_addr = inbound.node_addr(false);
    inbound.hosts.remote.run(move || {
        let mut peer = V2Peer::connect(node_addr, REGTEST_MAGIC, (0, 0)).unwrap();
        peer.send(&our_version(node_addr)).unwrap();
        assert_eq!(peer.receive().unwrap().unwrap().command, "version");
        peer.send_tampered(&Message::new("ping", [1u8; 8])).unwrap();
        // Read what the node sent until the proxy cuts the peer off: a peer that closed with
        // unread bytes would reset its connection itself.
        while let Ok(Some(_)) = peer.receive() {}
    });
    let ended = (0..250).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        inbound.node.wait_for_peers(1, Duration::ZERO)[0].ended
    });
    assert_eq!(
        ended,
        Some(Err(std::io::ErrorKind::ConnectionReset)),
        "{}",
        inbound.proxy.log()
    );
    let log = inbound.proxy.log();
    assert!(log.contains("close=peer_protocol"), "{log}");
}

/// `--key-prefix` in inbound mode: the key the proxy answers with starts with the prefix, and
/// the peer (rust-bitcoin's `bip324`) completes the handshake and reaches the node.
#[test]
fn the_answering_key_starts_with_the_prefix() {
    const PREFIX: &[u8] = b"GET / HTTP/1.1\r\n";
    let prefix = hex::encode(PREFIX);
    let inbound = Inbound::start(&["--key-prefix", &prefix]);
    let node_addr = inbound.node_addr(false);
    let keys = inbound.hosts.remote.run(move || {
        (0..3)
            .map(|_| {
                let mut peer = V2Peer::connect(node_addr, REGTEST_MAGIC, (0, 0)).unwrap();
                peer.send(&our_version(node_addr)).unwrap();
                assert_eq!(peer.receive().unwrap().unwrap().command, "version");
                peer.their_key
            })
            .collect::<Vec<_>>()
    });
    for key in &keys {
        assert_eq!(&key[..PREFIX.len()], PREFIX, "{}", inbound.proxy.log());
    }
    assert!(keys[0][16..] != keys[1][16..] && keys[1][16..] != keys[2][16..]);
}

/// While a peer is connected, `status` lists it as inbound, with its transport and session.
#[test]
fn status_lists_live_inbound_connections() {
    let inbound = Inbound::start(&[]);
    let node_addr = inbound.node_addr(true);
    let (opened, close) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let peer = inbound.hosts.remote.spawn(move || {
        let mut peer = V2Peer::connect(node_addr, REGTEST_MAGIC, (0, 0)).unwrap();
        peer.send(&our_version(node_addr)).unwrap();
        peer.receive().unwrap().expect("version");
        opened
            .0
            .send((peer.local_addr(), peer.session_id()))
            .unwrap();
        let _ = close.1.recv();
    });
    let (local, session) = opened.1.recv().unwrap();
    let (_, status) = RedirectCli::new(&inbound.hosts).status();
    let _ = close.0.send(());
    peer.join().unwrap();
    let connections = status["proxy_status"]["connections"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(connections.len(), 1, "{status}");
    let c = &connections[0];
    assert_eq!(c["direction"], "inbound", "{status}");
    assert_eq!(c["transport"], "v2");
    assert_eq!(c["client"], local.to_string());
    assert_eq!(c["session_id"], hex::encode(session));
}

/// Hostile initiators close alone: endless garbage without a terminator, a wrong key's
/// packets, and silence; a healthy v2 peer connected the whole time goes on working.
#[test]
fn hostile_initiators_close_alone() {
    let inbound = Inbound::start(&["--first-bytes-timeout", "1s", "--handshake-timeout", "3s"]);
    let node_addr = inbound.node_addr(false);
    let healthy = inbound.hosts.remote.spawn(move || {
        let mut peer = V2Peer::connect(node_addr, REGTEST_MAGIC, (0, 0)).unwrap();
        peer.send(&our_version(node_addr)).unwrap();
        for i in 0..3 {
            assert_eq!(
                peer.receive().unwrap().unwrap().command,
                ["version", "verack", "addr"][i]
            );
        }
        std::thread::sleep(Duration::from_secs(5));
        peer.send(&Message::new("ping", [1u8; 8])).unwrap();
        peer.receive().unwrap().expect("pong after the attacks")
    });
    std::thread::sleep(Duration::from_millis(500));

    let closed = |bytes: Vec<u8>| {
        inbound.hosts.remote.run(move || {
            let mut stream = TcpStream::connect(node_addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // The peer may be cut off while still writing.
            let _ = stream.write_all(&bytes);
            let mut sink = Vec::new();
            let started = std::time::Instant::now();
            let _ = stream.read_to_end(&mut sink);
            (sink.len(), started.elapsed())
        })
    };
    // 64 bytes of key, then 5000 bytes of garbage: no terminator within 4095 + 16.
    let (_, elapsed) = closed(vec![0x5a; 64 + 5000]);
    assert!(
        elapsed < Duration::from_secs(8),
        "garbage flood closed: {elapsed:?}"
    );
    // Silence: the first-bytes timeout closes it.
    let (received, elapsed) = closed(Vec::new());
    assert_eq!(received, 0, "nothing is sent to a silent peer");
    assert!(
        elapsed < Duration::from_secs(8),
        "silent peer closed: {elapsed:?}"
    );

    assert_eq!(
        healthy.join().unwrap(),
        Message::new("pong", [1u8; 8]),
        "the healthy peer is unaffected"
    );
    let log = inbound.proxy.log();
    assert!(log.contains("no_garbage_terminator"), "{log}");
    assert!(log.contains("failure=peer_timeout"), "a silent peer: {log}");
}

/// The inbound port itself is no way in, and connections from the node's own host (and
/// forwarded ones) are left alone.
#[test]
fn direct_and_local_connections_are_left_alone() {
    let inbound = Inbound::start(&[]);
    let node_addr = inbound.node_addr(false);
    let direct: SocketAddr = format!("{CLIENT_V4}:{INBOUND_PORT}").parse().unwrap();
    let refused = inbound.hosts.remote.run(move || {
        let mut stream = TcpStream::connect(direct).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&our_version(node_addr).to_wire(REGTEST_MAGIC));
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).map(|_| sink.len())
    });
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    assert!(
        inbound
            .proxy
            .wait_for_log("refusal=not_redirected", Duration::from_secs(5)),
        "{}",
        inbound.proxy.log()
    );

    // From the node's own host: straight to the node, v1, the bit not added.
    let (local, reply) = inbound.hosts.client.run(move || {
        let mut stream = TcpStream::connect(node_addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        v1::write_message(&mut stream, REGTEST_MAGIC, &our_version(node_addr)).unwrap();
        let reply = v1::read_message(&mut stream, REGTEST_MAGIC)
            .unwrap()
            .unwrap();
        (stream.local_addr().unwrap(), reply)
    });
    let seen = inbound.node.wait_for_peers(1, Duration::from_secs(5));
    assert_eq!(seen[0].peer, local);
    assert_eq!(reply.payload, inbound.node.version, "untouched");
    assert!(!inbound.proxy.log().contains("inbound connection opened"));
}

/// `status` verifies inbound mode piece by piece, and `disable` leaves no rule, route or
/// table behind.
#[test]
fn status_verifies_inbound_mode_and_disable_leaves_nothing() {
    let inbound = Inbound::start(&[]);
    let cli = RedirectCli::new(&inbound.hosts);
    // This command line's own record (each test command line keeps one).
    cli.ok(&["inbound", "enable", "--ports", "18444"]);
    let (code, status) = cli.status();
    assert_eq!(status["inbound"]["state"], "active", "{status}");
    assert_eq!(code, 0, "outbound not enabled, inbound as asked: {status}");
    assert!(
        status["problems"].as_array().unwrap().is_empty(),
        "{status}"
    );

    inbound
        .hosts
        .client
        .ip(&["-6", "rule", "del", "pref", "324"]);
    let (code, status) = cli.status();
    assert_eq!(
        (code, &status["inbound"]["state"]),
        (6, &"modified".into()),
        "{status}"
    );
    assert!(
        status["problems"].to_string().contains("IPv6 policy route"),
        "{status}"
    );

    let flushed = inbound
        .hosts
        .client
        .command("nft", None)
        .args(["flush", "ruleset"])
        .status()
        .unwrap();
    assert!(flushed.success());
    let (code, status) = cli.status();
    assert_eq!(
        (code, &status["inbound"]["state"]),
        (6, &"vanished".into()),
        "{status}"
    );
    assert!(
        status["problems"]
            .to_string()
            .contains("bip324-redirect inbound enable --ports 18444 --proxy-port 325"),
        "{status}"
    );

    cli.ok(&["inbound", "enable", "--ports", "18444"]);
    assert_eq!(cli.status().1["inbound"]["state"], "active");
    // `disable` removes the outbound redirect only, and says inbound mode is left enabled.
    let disabled = cli.ok(&["disable"]);
    assert!(
        disabled.stdout.contains("inbound mode is still enabled")
            && disabled
                .stdout
                .contains("`bip324-redirect inbound disable` removes it"),
        "{disabled:?}"
    );
    assert_eq!(cli.status().1["inbound"]["state"], "active");
    cli.ok(&["inbound", "disable"]);
    let disabled = cli.ok(&["disable"]);
    assert!(!disabled.stdout.contains("inbound"), "{disabled:?}");
    let (code, status) = cli.status();
    assert_eq!(code, 5, "{status}");
    assert!(status.get("inbound").is_none(), "{status}");
    let leftovers = inbound.hosts.client.run(|| {
        let rules = std::process::Command::new("ip")
            .args(["rule"])
            .output()
            .unwrap();
        let rules6 = std::process::Command::new("ip")
            .args(["-6", "rule"])
            .output()
            .unwrap();
        let routes = std::process::Command::new("ip")
            .args(["route", "show", "table", "324"])
            .output()
            .unwrap();
        let tables = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        [rules, rules6, routes, tables]
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .join("\n")
    });
    assert!(!leftovers.contains("324"), "{leftovers}");
    assert!(!leftovers.contains("bip324_inbound"), "{leftovers}");
}

/// Opens a TCP connection to `to` from `source`, an address of the calling namespace.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, socket,
    };
    use std::os::fd::AsRawFd;
    let source = SocketAddr::new(source.parse().unwrap(), 0);
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrStorage::from(source)).unwrap();
    connect(fd.as_raw_fd(), &SockaddrStorage::from(to)).unwrap();
    TcpStream::from(fd)
}

/// Polls `done` for up to 10 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Whether the proxy closed `stream` (end of stream or reset), without waiting.
fn closed_by_proxy(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// One address cannot lock its network out: while 10.32.4.2 holds 40 silent connections
/// (all but a few refused at once), and three neighbours of its /16 fill the network's share,
/// a fifth address of the same /16 still connects and reaches the node as itself; the
/// oldest silent connection of an address holding the most is closed to make room.
#[test]
fn a_silent_flood_from_one_address_locks_out_no_neighbour() {
    // The proxy's shares (pending.rs): per address, per /16.
    const PER_ADDRESS: usize = 4;
    const PER_NETWORK: usize = 16;
    let inbound = Inbound::start(&["--first-bytes-timeout", "60s"]);
    let neighbours = ["10.32.4.3", "10.32.4.4", "10.32.4.5"];
    let newcomer = "10.32.4.6";
    for ip in neighbours.iter().chain([&newcomer]) {
        bip324_e2e::netns::address(&inbound.hosts.remote, &format!("{ip}/24"));
    }
    let v4 = inbound.node_addr(false);
    let flood: Vec<TcpStream> = inbound
        .hosts
        .remote
        .run(move || (0..40).map(|_| TcpStream::connect(v4).unwrap()).collect());
    let open = |streams: &[&TcpStream]| streams.iter().filter(|s| !closed_by_proxy(s)).count();
    let flood_refs: Vec<&TcpStream> = flood.iter().collect();
    assert!(
        wait_until(|| open(&flood_refs) == PER_ADDRESS),
        "beyond its share, the flooding address is refused at once: {} open\n{}",
        open(&flood_refs),
        inbound.proxy.log()
    );
    assert!(inbound.proxy.log().contains("refusal=too_many_pending"));
    // Three neighbours fill the /16's share with silent connections of their own.
    let held: Vec<TcpStream> = inbound.hosts.remote.run(move || {
        neighbours
            .iter()
            .flat_map(|ip| (0..PER_ADDRESS).map(move |_| connect_from(ip, v4)))
            .collect()
    });
    let all: Vec<&TcpStream> = flood.iter().chain(&held).collect();
    // Longer than the log budget's window, so that the eviction's line is not left out.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        open(&all),
        PER_NETWORK,
        "the network holds its share\n{}",
        inbound.proxy.log()
    );

    // The newcomer, whose network is full, is admitted and reaches the node as itself.
    let (local, reply) = inbound
        .hosts
        .remote
        .run(move || greet(connect_from(newcomer, v4), v4));
    assert_eq!(
        reply.map(|m| m.command),
        Some("version".to_string()),
        "the newcomer is served:\n{}",
        inbound.proxy.log()
    );
    let seen = inbound.node.wait_for_peers(1, Duration::from_secs(5));
    assert_eq!(seen.len(), 1, "only the newcomer reached the node");
    assert_eq!(seen[0].peer, local, "as itself");
    // The oldest connection of the flooding address (one of those holding the most) paid.
    assert!(
        inbound
            .proxy
            .wait_for_log("refusal=evicted_pending", Duration::from_secs(5)),
        "{}",
        inbound.proxy.log()
    );
    let held_refs: Vec<&TcpStream> = held.iter().collect();
    assert_eq!(
        (open(&flood_refs), open(&held_refs)),
        (PER_ADDRESS - 1, neighbours.len() * PER_ADDRESS),
        "one of the flood evicted, no neighbour"
    );
    // Another network (the remote's IPv6 address) is served meanwhile.
    let v6 = inbound.node_addr(true);
    let reply = inbound.hosts.remote.run(move || {
        let mut peer = V2Peer::connect(v6, REGTEST_MAGIC, (0, 0)).unwrap();
        peer.send(&our_version(v6)).unwrap();
        peer.receive().unwrap().expect("version")
    });
    assert_eq!(reply.command, "version");
}

/// A `bip324-proxy` started as systemd starts the inbound unit: a user of its own (here
/// nobody) with ambient CAP_NET_RAW, nothing else. Killed on drop.
struct AsTheUnit {
    child: std::process::Child,
    log: std::path::PathBuf,
}

const UNIT_UID: u32 = 65534;

impl AsTheUnit {
    fn start(hosts: &bip324_e2e::testbed::TwoHosts) -> AsTheUnit {
        // systemd's socket unit opens port 325 for the real unit; here this namespace lets
        // any user bind it, so the proxy needs no other privilege.
        let sysctl = hosts
            .client
            .command("sysctl", None)
            .args(["-qw", "net.ipv4.ip_unprivileged_port_start=0"])
            .status()
            .unwrap();
        assert!(sysctl.success());
        let binary = bip324_e2e::testbed::workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
        let log = std::env::temp_dir().join(format!("{}-unit-proxy.log", hosts.client.name()));
        let mut command = hosts.client.command("setpriv", None);
        command
            .args([
                &format!("--reuid={UNIT_UID}"),
                &format!("--regid={UNIT_UID}"),
                "--clear-groups",
                "--inh-caps=+net_raw",
                "--ambient-caps=+net_raw",
                "--",
            ])
            .arg(binary)
            .args(["--inbound", "[::]:325", "--no-control"])
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let started = AsTheUnit {
            child: command.spawn().expect("start the proxy"),
            log,
        };
        assert!(
            wait_until(|| started.log().contains("ready")),
            "not ready:\n{}",
            started.log()
        );
        started
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AsTheUnit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `(field, mask)` of each `Cap*` line of a /proc status file.
fn capabilities(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(field, _)| field.starts_with("Cap"))
        .map(|(field, v)| {
            (
                field.to_string(),
                u64::from_str_radix(v.trim(), 16).unwrap(),
            )
        })
        .collect()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": the name may hold spaces and parentheses.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

/// Every thread of the proxy `main` holds no capability; its one child, the binding helper,
/// runs as `uid`, holds CAP_NET_RAW alone, and is not dumpable: its /proc entries belong to
/// root and a process of the same uid cannot open its memory. `main_dumpable`: the proxy is
/// dumpable (not after a switch from root), so that same process can open the proxy's memory,
/// which shows the check is real.
fn assert_capability_confined_to_a_helper(
    hosts: &TwoHosts,
    main: u32,
    uid: u32,
    main_dumpable: bool,
    log: &str,
) -> u32 {
    const CAP_NET_RAW: u64 = 1 << 13;
    for task in std::fs::read_dir(format!("/proc/{main}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for (field, mask) in capabilities(&status) {
            if field != "CapBnd" {
                assert_eq!(mask, 0, "proxy thread {field}:\n{status}");
            }
        }
    }
    let helpers = children_of(main);
    assert_eq!(helpers.len(), 1, "one helper process:\n{log}");
    let helper = helpers[0];
    assert_ne!(helper, main);
    let status = std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    assert!(status.contains("bip324-bind"), "{status}");
    let caps = capabilities(&status);
    for (field, expected) in [
        ("CapEff", CAP_NET_RAW),
        ("CapPrm", CAP_NET_RAW),
        ("CapInh", 0),
        ("CapAmb", 0),
    ] {
        let found = caps.iter().find(|(f, _)| f == field).map(|(_, m)| *m);
        assert_eq!(found, Some(expected), "helper {field}:\n{status}");
    }
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == uid.to_string()),
        "the helper runs as the proxy's user {uid}: {uid_line}"
    );
    // A process that is not dumpable has its /proc entries owned by root.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(format!("/proc/{helper}/mem"))
        .unwrap()
        .uid();
    assert_eq!(owner, 0, "the helper is not dumpable");
    let opened = hosts.client.run_as_user(uid, uid, move || {
        let open = |pid: u32| std::fs::File::open(format!("/proc/{pid}/mem")).map(|_| ());
        (open(main), open(helper))
    });
    assert_eq!(
        opened.0.is_ok(),
        main_dumpable,
        "the same uid opening the proxy's memory: {:?}",
        opened.0
    );
    let denied = opened.1.expect_err("the helper's memory is out of reach");
    assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
    helper
}

/// Started as root, the proxy forks the helper before it becomes its user; the helper then
/// becomes the same user, with CAP_NET_RAW alone, in its bounding set too.
#[test]
fn started_as_root_the_helper_becomes_the_proxys_user_with_cap_net_raw_alone() {
    let inbound = Inbound::start(&[]);
    let main = inbound.proxy.pid();
    let status = std::fs::read_to_string(format!("/proc/{main}/status")).unwrap();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "the proxy left root");
    let helper = assert_capability_confined_to_a_helper(
        &inbound.hosts,
        main,
        uid,
        false,
        &inbound.proxy.log(),
    );
    let status = std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    let bounding = capabilities(&status)
        .into_iter()
        .find(|(f, _)| f == "CapBnd")
        .map(|(_, m)| m);
    assert_eq!(bounding, Some(1 << 13), "{status}");
    // And it serves: a v1 peer reaches the node.
    let node_addr = inbound.node_addr(false);
    let (_, reply) = inbound.hosts.remote.run(move || {
        let stream = TcpStream::connect_timeout(&node_addr, Duration::from_secs(10)).unwrap();
        greet(stream, node_addr)
    });
    assert_eq!(reply.map(|m| m.command), Some("version".into()));
}

/// Started as the inbound unit starts it, the proxy keeps no capability in any thread; the
/// transparent binding is done by another process, which holds CAP_NET_RAW alone and is not
/// dumpable (its /proc entries belong to root, and a process of the same uid cannot open its
/// memory, while it can open the proxy's); and a peer still reaches the node as itself.
#[test]
fn cap_net_raw_lives_in_a_separate_undumpable_helper() {
    let hosts = TwoHosts::create();
    let listener = hosts
        .client
        .run(|| TcpListener::bind(("::", NODE_PORT)))
        .expect("node listens");
    let advertised = SocketAddr::new(CLIENT_V4.parse().unwrap(), NODE_PORT);
    let node = ListeningNode::spawn(listener, REGTEST_MAGIC, advertised).unwrap();
    let proxy = AsTheUnit::start(&hosts);
    let cli = RedirectCli::new(&hosts);
    cli.ok(&["inbound", "enable", "--ports", "18444"]);
    let main = proxy.child.id();
    assert_capability_confined_to_a_helper(&hosts, main, UNIT_UID, true, &proxy.log());

    // A peer reaches the node as itself through the helper's socket.
    let node_addr = SocketAddr::new(CLIENT_V4.parse().unwrap(), NODE_PORT);
    let (local, reply) = hosts.remote.run(move || {
        let stream = TcpStream::connect_timeout(&node_addr, Duration::from_secs(10)).unwrap();
        greet(stream, node_addr)
    });
    assert_eq!(
        reply.map(|m| m.command),
        Some("version".into()),
        "{}",
        proxy.log()
    );
    let seen = node.wait_for_peers(1, Duration::from_secs(5));
    assert_eq!(seen[0].peer, local, "the node sees the peer itself");
    let _ = cli.run(&["inbound", "disable"]);
}

/// The helper connects only to the node's configured ports: with the node on 18444 and
/// `--inbound-ports 8333`, a peer's connection is refused by the helper and never reaches it.
#[test]
fn the_helper_refuses_ports_that_are_not_the_nodes() {
    let inbound = Inbound::start(&["--inbound-ports", "8333"]);
    let node_addr = inbound.node_addr(false);
    let received = inbound.hosts.remote.run(move || {
        let mut stream = TcpStream::connect_timeout(&node_addr, Duration::from_secs(10)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = v1::write_message(&mut stream, REGTEST_MAGIC, &our_version(node_addr));
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        sink.len()
    });
    assert_eq!(received, 0, "nothing from the node");
    assert!(
        inbound.proxy.wait_for_log(
            "the destination port is not one of --inbound-ports",
            Duration::from_secs(5)
        ),
        "{}",
        inbound.proxy.log()
    );
    assert!(
        inbound
            .node
            .wait_for_peers(1, Duration::from_millis(500))
            .is_empty()
    );
}
