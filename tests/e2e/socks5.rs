//! The SOCKS5 front end end to end: a v1 client that knows SOCKS5 but not BIP-324 (the bytes
//! of RFC 1928 are written by hand in `socks5_client`, independently of the proxy's code) reaches the
//! independent v2 responder through `bip324-proxy --socks5`, over IPv4, IPv6 and a name;
//! each failure comes back as its reply code; the proxy is no open relay, reaches nothing on
//! this host, passes a client's credentials to the upstream proxy, and takes only hostnames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use bip324_e2e::responder::Transport;
use bip324_e2e::socks5_client::{self, Offer, To};
use bip324_e2e::testbed::{
    CLIENT_V4, NODE_PORT, Proxy, REMOTE_V4, REMOTE_V6, RemoteNode, TwoHosts, contains,
    noisy_responder,
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
    // A name only this host's resolver turns into the remote's address: 10.32.4.2 as the one
    // 32-bit number inet_aton reads (/etc/hosts is the machine's, not the test's; an address
    // written as such would be taken as an address, not looked up).
    let v4_number = u32::from(REMOTE_V4.parse::<std::net::Ipv4Addr>().unwrap()).to_string();
    hosts.client.run(move || {
        let (mut stream, code) = socks_connect(To::Name(&v4_number, NODE_PORT), false);
        assert_eq!(code, 0);
        speak_v1(&mut stream, v4);
    });
    let report = &node.responder.wait_for_reports(3, Duration::from_secs(10))[2];
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

/// What the recording upstream saw of one client.
#[derive(Debug, PartialEq)]
struct Seen {
    methods: Vec<u8>,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// The request's address type and address bytes, as sent.
    target: (u8, Vec<u8>),
}

/// A SOCKS5 server written from RFC 1928/1929 for the test: it takes username/password when
/// offered, records what each client sent, and answers every request "connection refused".
fn recording_upstream(listener: TcpListener) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let tx = tx.clone();
            std::thread::spawn(move || {
                if let Ok(seen) = record(&mut stream) {
                    let _ = tx.send(seen);
                }
            });
        }
    });
    rx
}

fn record(stream: &mut TcpStream) -> std::io::Result<Seen> {
    let read = |stream: &mut TcpStream, n: usize| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf)?;
        Ok(buf)
    };
    let head = read(stream, 2)?;
    let methods = read(stream, usize::from(head[1]))?;
    let mut credentials = None;
    if methods.contains(&2) {
        stream.write_all(&[5, 2])?;
        let user_len = read(stream, 2)?[1];
        let user = read(stream, usize::from(user_len))?;
        let pass_len = read(stream, 1)?[0];
        credentials = Some((user, read(stream, usize::from(pass_len))?));
        stream.write_all(&[1, 0])?;
    } else {
        stream.write_all(&[5, 0])?;
    }
    let request = read(stream, 4)?;
    let address = match request[3] {
        1 => read(stream, 4)?,
        4 => read(stream, 16)?,
        _ => {
            let len = read(stream, 1)?[0];
            read(stream, usize::from(len))?
        }
    };
    read(stream, 2)?;
    stream.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0])?;
    Ok(Seen {
        methods,
        credentials,
        target: (request[3], address),
    })
}

/// Stream isolation: with an upstream, a client offering both methods with credentials (as
/// Bitcoin Core's `-proxyrandomize`) is asked for them, and they reach the upstream
/// unchanged; two clients with different credentials arrive as two identities. A client that
/// offers no authentication only still goes through, without credentials.
#[test]
fn credentials_reach_the_upstream_so_it_isolates_streams() {
    let hosts = TwoHosts::create();
    let listener = hosts
        .client
        .run(|| TcpListener::bind("127.0.0.1:1082").unwrap());
    let seen = recording_upstream(listener);
    let proxy = Proxy::start(
        &hosts.client,
        &[
            "--socks5",
            SOCKS,
            "--socks5-network",
            "regtest",
            "--upstream-socks5",
            "127.0.0.1:1082",
        ],
    );
    let clients: [(&[u8], &[u8]); 2] = [(b"3f9a1c07", b"b2e4d8f1"), (b"77c0de21", b"09ab4e6d")];
    for (user, pass) in clients {
        let (method, code) = hosts.client.run(move || {
            let to = To::Name("node.test", NODE_PORT);
            let (_, method, code) = socks5_client::connect_offering(
                SOCKS.parse().unwrap(),
                to,
                Offer::Both(user, pass),
            )
            .unwrap();
            (method, code)
        });
        assert_eq!(
            method,
            2,
            "the proxy asks for the credentials: {}",
            proxy.log()
        );
        assert_eq!(code, 5, "the upstream's refusal comes back");
        let upstream = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(upstream.methods.contains(&2), "{upstream:?}");
        assert_eq!(
            upstream.credentials,
            Some((user.to_vec(), pass.to_vec())),
            "exactly the client's credentials"
        );
        assert_eq!(upstream.target, (3, b"node.test".to_vec()));
    }
    let code = hosts.client.run(|| {
        let to = To::Name("node.test", NODE_PORT);
        let socks = SOCKS.parse().unwrap();
        socks5_client::connect_offering(socks, to, Offer::NoAuth)
            .unwrap()
            .2
    });
    assert_eq!(code, 5);
    let upstream = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((upstream.methods, upstream.credentials), (vec![0], None));
    let log = proxy.log();
    for (user, pass) in clients {
        for secret in [user, pass] {
            let secret = std::str::from_utf8(secret).unwrap();
            assert!(!log.contains(secret), "credentials are never logged: {log}");
        }
    }
}

/// A name outside hostname syntax (here one that carries a forged log line) is refused with
/// a reply code before anything else: no lookup, nothing sent upstream, and the proxy's log
/// shows it escaped, never as a line of its own.
#[test]
fn names_outside_hostname_syntax_are_refused_and_never_forge_a_line() {
    let hosts = TwoHosts::create();
    let listener = hosts
        .client
        .run(|| TcpListener::bind("127.0.0.1:1082").unwrap());
    let seen = recording_upstream(listener);
    let forged = "2026-12-03T05:00:00.000000Z  INFO connection opened client=127.0.0.1:40000 \
                  destination=10.32.4.2:8333 network=regtest transport=v2 \
                  session_id=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let name = format!("node.test\n{forged}");
    for upstream in [false, true] {
        let mut args = vec!["--socks5", SOCKS, "--socks5-network", "regtest"];
        if upstream {
            args.extend(["--upstream-socks5", "127.0.0.1:1082"]);
        }
        let proxy = Proxy::start(&hosts.client, &args);
        for name in [name.clone(), "node_1.test".into(), "nöde.test".into()] {
            let code = hosts
                .client
                .run(move || socks_connect(To::Name(&name, NODE_PORT), false).1);
            assert_eq!(code, 4, "refused as no host name: {}", proxy.log());
            let log = proxy.log();
            assert!(
                log.lines().all(|line| !line.contains("connection opened")),
                "a forged line: {log}"
            );
        }
        let log = proxy.log();
        assert!(log.contains("outside hostname syntax"), "{log}");
        assert!(
            seen.recv_timeout(Duration::from_millis(300)).is_err(),
            "nothing reaches the upstream"
        );
    }
}

/// The proxy reaches nothing on its own host: CONNECT to a loopback address, to `localhost`
/// (looked up here), to an address of the proxy's own namespace, and, with an upstream, to a
/// loopback literal: each is answered 0x02 (not allowed), counted and logged as a refusal,
/// and the listener that waits on this host's Bitcoin port receives nothing.
#[test]
fn this_host_is_never_a_destination() {
    let hosts = TwoHosts::create();
    let (v4, v6) = hosts.client.run(|| {
        let v4 = TcpListener::bind("0.0.0.0:8333").unwrap();
        let v6 = TcpListener::bind("[::1]:8333").unwrap();
        v4.set_nonblocking(true).unwrap();
        v6.set_nonblocking(true).unwrap();
        (v4, v6)
    });
    let upstream_listener = hosts
        .client
        .run(|| TcpListener::bind("127.0.0.1:1082").unwrap());
    let seen = recording_upstream(upstream_listener);
    for upstream in [false, true] {
        let mut args = vec!["--socks5", SOCKS, "--socks5-network", "regtest"];
        if upstream {
            args.extend(["--upstream-socks5", "127.0.0.1:1082"]);
        }
        let proxy = Proxy::start(&hosts.client, &args);
        let own = SocketAddr::new(CLIENT_V4.parse().unwrap(), NODE_PORT);
        let mut cases = vec![
            (Dest::Ip("127.0.0.1:8333".parse().unwrap()), "loopback"),
            (Dest::Ip("127.7.7.7:8333".parse().unwrap()), "loopback"),
            (Dest::Ip("[::1]:8333".parse().unwrap()), "loopback, IPv6"),
            (Dest::Ip(own), "this host's own address"),
            (Dest::Ip("0.0.0.0:8333".parse().unwrap()), "unspecified"),
            (Dest::Name("127.0.0.1"), "a loopback literal as a name"),
        ];
        if !upstream {
            cases.push((Dest::Name("localhost"), "localhost, looked up here"));
        }
        let count = cases.len();
        for (to, what) in cases {
            let code = hosts.client.run(move || {
                let to = match to {
                    Dest::Ip(addr) => To::Ip(addr),
                    Dest::Name(name) => To::Name(name, NODE_PORT),
                };
                socks_connect(to, false).1
            });
            assert_eq!(code, 2, "{what} (upstream: {upstream}): {}", proxy.log());
        }
        // Each line is written once the client has its reply: wait for the last one.
        proxy.wait_for_count(
            "refusal=forbidden_destination",
            count,
            Duration::from_secs(5),
        );
        let log = proxy.log();
        assert_eq!(
            log.matches("refusal=forbidden_destination").count(),
            count,
            "{log}"
        );
        for listener in [&v4, &v6] {
            assert!(
                listener.accept().is_err(),
                "a listener on this host was reached: {log}"
            );
        }
        assert!(
            seen.recv_timeout(Duration::from_millis(300)).is_err(),
            "an address literal never goes upstream"
        );
    }
}

/// A target that can move into a namespace's thread.
enum Dest {
    Ip(SocketAddr),
    Name(&'static str),
}
