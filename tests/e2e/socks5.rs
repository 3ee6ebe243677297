//! The SOCKS5 front end end to end: a v1 client that knows SOCKS5 but not BIP-324 (the bytes
//! of RFC 1928 are written by hand in `socks5_client`, independently of the proxy's code) reaches the
//! independent v2 responder through `bip324-proxy --socks5`, over IPv4, IPv6 and a name;
//! each failure comes back as its reply code; the proxy is no open relay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bip324_e2e::responder::Transport;
use bip324_e2e::socks5_client::{self, To};
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, REMOTE_V6, RemoteNode, TwoHosts, contains, noisy_responder,
};
use bip324_e2e::v1::{self, Message, PLAINTEXT_MARKER, REGTEST_MAGIC};

const SOCKS: &str = "127.0.0.1:1080";

/// CONNECT through the proxy's front end, which must answer.
fn socks_connect(to: To<'_>, credentials: bool) -> (TcpStream, u8) {
    socks5_client::connect(SOCKS.parse().unwrap(), to, credentials).unwrap()
}

/// A v1 exchange after CONNECT: version, verack, a ping, and a message with the marker that
/// must never reach the remote in clear; each echo byte for byte.
fn speak_v1(stream: &mut TcpStream, remote: SocketAddr) {
    let version = Message::new(
        "version",
        v1::version_payload(remote, 9, "/socks-client:0.1/"),
    );
    v1::write_message(stream, REGTEST_MAGIC, &version).unwrap();
    let reply = v1::read_message(stream, REGTEST_MAGIC).unwrap().unwrap();
    assert_eq!(reply.command, "version");
    let marked = Message::new("tx", [PLAINTEXT_MARKER, &[7u8; 5000][..]].concat());
    v1::write_message(stream, REGTEST_MAGIC, &marked).unwrap();
    loop {
        let message = v1::read_message(stream, REGTEST_MAGIC).unwrap().unwrap();
        if message.command == "tx" {
            assert_eq!(message, marked, "echoed byte for byte");
            break;
        }
    }
}

/// IPv4, IPv6 and a name (resolved by the proxy), with and without credentials: v2 to the
/// remote, the same session id at both ends, nothing in clear.
#[test]
fn a_v1_client_reaches_a_v2_node_through_socks5() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    // For the name: a node on the proxy's own host, reached as `localhost`.
    let local_node = RemoteNode::start(&hosts.client, noisy_responder);
    // The test nodes are regtest nodes on port 8333.
    let proxy = Proxy::start(
        &hosts.client,
        &["--socks5", SOCKS, "--socks5-network", "regtest"],
    );
    let v4 = SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT);
    let v6 = SocketAddr::new(REMOTE_V6.parse().unwrap(), NODE_PORT);
    for (seen, (to, credentials)) in [(v4, false), (v6, true)].into_iter().enumerate() {
        let code = hosts.client.run(move || {
            let (mut stream, code) = socks_connect(To::Ip(to), credentials);
            if code == 0 {
                speak_v1(&mut stream, to);
            }
            code
        });
        assert_eq!(code, 0, "{to}: {}", proxy.log());
        let report = &node
            .responder
            .wait_for_reports(seen + 1, Duration::from_secs(10))[seen];
        assert_eq!(report.transport, Transport::V2, "{to}");
        assert!(!contains(&report.received, PLAINTEXT_MARKER));
        let session = hex::encode(report.session_id.unwrap());
        assert!(
            proxy.wait_for_log(&session, Duration::from_secs(5)),
            "{}",
            proxy.log()
        );
    }
    hosts.client.run(move || {
        let (mut stream, code) = socks_connect(To::Name("localhost", NODE_PORT), false);
        assert_eq!(code, 0);
        speak_v1(&mut stream, v4);
    });
    let report = &local_node
        .responder
        .wait_for_reports(1, Duration::from_secs(10))[0];
    assert_eq!(report.transport, Transport::V2, "through a name");
}

/// Each failure is the reply code a direct connection's error would mean; ports that are not
/// Bitcoin's and commands other than CONNECT are refused; garbage instead of a greeting closes
/// only that connection.
#[test]
fn failures_come_back_as_reply_codes() {
    let hosts = TwoHosts::create();
    let _v1_only = RemoteNode::v1_only(&hosts.remote);
    // 18333 on the remote: silently dropped, so the attempt times out.
    let dropped = "add rule inet blackhole input tcp dport 18333 drop";
    for words in [
        "add table inet blackhole",
        "add chain inet blackhole input { type filter hook input priority 0 ; }",
        dropped,
    ] {
        let done = hosts
            .remote
            .command("nft", None)
            .args(words.split(' '))
            .status();
        assert!(done.unwrap().success(), "nft {words}");
    }
    let proxy = Proxy::start(
        &hosts.client,
        &[
            "--socks5",
            SOCKS,
            "--handshake-timeout",
            "2s",
            "--first-bytes-timeout",
            "2s",
        ],
    );
    let remote = |port: u16| SocketAddr::new(REMOTE_V4.parse().unwrap(), port);
    let cases = [
        (remote(NODE_PORT), 5, "a v1-only node: connection refused"),
        (remote(38333), 5, "nothing listens: connection refused"),
        (remote(18333), 6, "silence: TTL expired"),
        (
            "10.99.0.1:8333".parse().unwrap(),
            3,
            "no route: network unreachable",
        ),
        (remote(22), 2, "not a Bitcoin port: not allowed"),
    ];
    for (to, expected, what) in cases {
        let code = hosts.client.run(move || socks_connect(To::Ip(to), false).1);
        assert_eq!(code, expected, "{what}");
    }
    let (bind_reply, garbage_closed) = hosts.client.run(|| {
        let mut stream = TcpStream::connect(SOCKS).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(&[5, 1, 0]).unwrap();
        let mut choice = [0u8; 2];
        stream.read_exact(&mut choice).unwrap();
        // BIND, which the proxy does not do.
        stream
            .write_all(&[5, 2, 0, 1, 10, 0, 0, 1, 0x20, 0x8d])
            .unwrap();
        let mut reply = [0u8; 10];
        stream.read_exact(&mut reply).unwrap();
        let mut garbage = TcpStream::connect(SOCKS).unwrap();
        garbage
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = garbage.write_all(b"GET / HTTP/1.1\r\n\r\n");
        let mut sink = Vec::new();
        let closed = garbage.read_to_end(&mut sink).is_ok() && sink.is_empty();
        (reply[1], closed)
    });
    assert_eq!(bind_reply, 7, "command not supported");
    // Tor's RESOLVE, which Kyoto asks for peers given by name: resolved here, no upstream.
    let (localhost, unknown) = hosts.client.run(|| {
        let socks = SOCKS.parse().unwrap();
        let localhost = socks5_client::resolve(socks, "localhost").unwrap();
        let unknown = socks5_client::resolve(socks, "no-such-node.invalid").unwrap();
        (localhost, unknown.0)
    });
    assert!(
        localhost.0 == 0 && localhost.1.is_loopback(),
        "{localhost:?}"
    );
    assert_eq!(unknown, 4, "an unknown name: host unreachable");
    assert!(garbage_closed, "garbage closes that connection, silently");
    let log = proxy.log();
    assert!(log.contains("not a SOCKS5 client"), "{log}");
    assert!(log.contains("only the Bitcoin ports"), "{log}");
}

/// An independent SOCKS5 server (Debian's microsocks) as the upstream: a name only it can
/// resolve (in a mount namespace of its own, with its own /etc/hosts) reaches the remote, so
/// the proxy passed it on unresolved; the session is v2 end to end.
#[test]
fn names_reach_an_upstream_socks5_server_unresolved() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let hosts_file = std::env::temp_dir().join(format!("{}-hosts", hosts.client.name()));
    std::fs::write(
        &hosts_file,
        format!("{REMOTE_V4} node.test\n127.0.0.1 localhost\n"),
    )
    .unwrap();
    let resolvable_here = std::process::Command::new("getent")
        .args(["hosts", "node.test"])
        .output()
        .unwrap();
    assert!(
        !resolvable_here.status.success(),
        "only the upstream can resolve node.test"
    );
    let script = format!(
        "mount --bind {} /etc/hosts && exec microsocks -i 127.0.0.1 -p 1081",
        hosts_file.display()
    );
    let upstream_log = std::env::temp_dir().join(format!("{}-microsocks", hosts.client.name()));
    let upstream = Upstream(
        hosts
            .client
            .command("unshare", None)
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stderr(std::fs::File::create(&upstream_log).unwrap())
            .spawn()
            .expect("microsocks (apt-get install microsocks; cargo xtask setup does)"),
    );
    let started = hosts.client.run(|| {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            TcpStream::connect("127.0.0.1:1081").is_ok()
        })
    });
    assert!(started, "microsocks listens");
    let proxy = Proxy::start(
        &hosts.client,
        &[
            "--socks5",
            SOCKS,
            "--socks5-network",
            "regtest",
            "--upstream-socks5",
            "127.0.0.1:1081",
        ],
    );
    let remote = SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT);
    let code = hosts.client.run(move || {
        let (mut stream, code) = socks_connect(To::Name("node.test", NODE_PORT), true);
        if code == 0 {
            speak_v1(&mut stream, remote);
        }
        code
    });
    assert_eq!(code, 0, "{}", proxy.log());
    let report = &node.responder.wait_for_reports(1, Duration::from_secs(10))[0];
    assert_eq!(report.transport, Transport::V2);
    assert!(!contains(&report.received, PLAINTEXT_MARKER));
    let log = proxy.log();
    assert!(log.contains("destination=node.test:8333"), "{log}");
    assert!(log.contains("via=127.0.0.1:1081"), "{log}");
    // RESOLVE goes upstream too: microsocks does not know the command and says so, where a
    // lookup on this host would have found no such name (host unreachable).
    let resolved = hosts
        .client
        .run(|| socks5_client::resolve(SOCKS.parse().unwrap(), "node.test").map(|(code, _)| code));
    assert_eq!(resolved.unwrap(), 7, "{}", proxy.log());
    drop(upstream);
    // microsocks' own account: it was handed the name.
    let said = std::fs::read_to_string(&upstream_log).unwrap_or_default();
    let _ = std::fs::remove_file(&hosts_file);
    let _ = std::fs::remove_file(&upstream_log);
    assert!(said.contains("connected to node.test:8333"), "{said}");
}

/// The upstream server, stopped when the test ends, however it ends.
struct Upstream(std::process::Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
