//! The proxy behind a real kernel redirect (nftables, installed with `nft`): an unmodified v1
//! client in the tagged group talks, through the proxy, to an independent v2 responder on
//! another host. Needs root; fails (never skips) without it.
//!
//! Long because it is one suite of independent cases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bip324_e2e::responder::{Report, Transport};
use bip324_e2e::testbed::{
    NODE_PORT, OTHER_GID, Proxy, RemoteNode, TAGGED_GID, TwoHosts, contains, nft_redirect,
    noisy_responder, run_client,
};
use bip324_e2e::v1::{Message, PLAINTEXT_MARKER, REGTEST_MAGIC};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");

/// Commands the client and the echo node send; none may appear in clear on the remote's wire.
const COMMANDS: [&str; 9] = [
    "version", "verack", "ping", "pong", "block", "tx", "inv", "getdata", "headers",
];

fn assert_no_plaintext(report: &Report) {
    let wire = &report.received;
    assert!(!wire.is_empty());
    assert!(
        !contains(wire, PLAINTEXT_MARKER),
        "payload marker seen in clear by the remote"
    );
    for command in COMMANDS {
        // A v1 header: magic followed by the padded command.
        let header = &Message::new(command, []).to_wire(REGTEST_MAGIC)[..16];
        assert!(
            !contains(wire, header),
            "v1 header of {command} seen by the remote"
        );
        assert!(
            !contains(wire, &header[4..]),
            "command {command} seen by the remote"
        );
    }
}

fn tagged_client_is_encrypted(remote: impl Fn(&TwoHosts) -> SocketAddr) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &[]);
    let destination = remote(&hosts);

    let run = run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&destination.to_string()],
    );
    assert!(
        run.success,
        "client failed: {}\nproxy log:\n{}",
        run.stderr,
        proxy.log()
    );
    assert_eq!(run.value("echoed"), Some("10001"), "{run:?}");
    assert_eq!(run.value("peer"), Some(destination.to_string().as_str()));

    let reports = node.responder.wait_for_reports(1, Duration::from_secs(10));
    assert_eq!(
        reports.len(),
        1,
        "one connection reached the remote: {reports:?}"
    );
    let report = &reports[0];
    assert_eq!(report.error, None);
    assert_eq!(report.transport, Transport::V2);
    assert!(
        report.decoys_sent >= 4 + 10,
        "decoys before and after the version packet"
    );
    assert_no_plaintext(report);
    let session_id = hex::encode(report.session_id.expect("v2 session"));
    assert!(
        proxy.wait_for_log("connection closed", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert_eq!(
        proxy.session_ids(),
        vec![session_id],
        "both ends report the same session id"
    );
}

#[test]
fn ipv4_client_in_the_group_is_encrypted() {
    tagged_client_is_encrypted(TwoHosts::remote_v4);
}

#[test]
fn ipv6_client_in_the_group_is_encrypted() {
    tagged_client_is_encrypted(TwoHosts::remote_v6);
}

#[test]
fn client_outside_the_group_goes_direct() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &[]);

    for remote in [hosts.remote_v4(), hosts.remote_v6()] {
        let args = [
            remote.to_string(),
            "--large".into(),
            "1000".into(),
            "--small".into(),
            "10".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_client(CLIENT, &hosts.client, Some(OTHER_GID), &args);
        assert!(run.success, "client failed: {}", run.stderr);
    }
    let reports = node.responder.wait_for_reports(2, Duration::from_secs(10));
    assert_eq!(reports.len(), 2);
    for report in reports {
        assert_eq!(report.error, None);
        assert_eq!(
            report.transport,
            Transport::V1,
            "untagged traffic is not redirected"
        );
        assert!(contains(&report.received, PLAINTEXT_MARKER));
    }
    assert!(
        !proxy.log().contains("connection opened"),
        "{}",
        proxy.log()
    );
}

#[test]
fn direct_connection_to_the_proxy_is_refused() {
    let hosts = TwoHosts::create();
    let proxy = Proxy::start(&hosts.client, &[]);
    nft_redirect(&hosts.client, TAGGED_GID);
    for addr in ["127.0.0.1:324", "[::1]:324"] {
        let closed = hosts.client.run(move || {
            let mut stream = TcpStream::connect(addr).expect("the proxy accepts");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let hello = Message::new("version", vec![0u8; 100]).to_wire(REGTEST_MAGIC);
            let _ = stream.write_all(&hello);
            let mut buf = [0u8; 64];
            // Closed (or reset) without a byte: not a timeout.
            match stream.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut
                }
            }
        });
        assert!(closed, "direct connection to {addr} must be closed at once");
    }
    assert!(proxy.wait_for_log("refused connection", Duration::from_secs(5)));
    assert_eq!(
        proxy.log().matches("refused connection").count(),
        2,
        "{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("connection opened"));
}

/// A local user who floods the proxy with direct connections gets a few log lines a second,
/// and the next line logged accounts for every refusal left out.
#[test]
fn a_flood_of_refusals_is_logged_in_part_and_accounted_for() {
    const FLOOD: usize = 200;
    let hosts = TwoHosts::create();
    let proxy = Proxy::start(&hosts.client, &[]);
    let connect = || {
        TcpStream::connect("127.0.0.1:324").expect("the proxy accepts");
    };
    hosts.client.run(move || (0..FLOOD).for_each(|_| connect()));
    // Past the window of the flood, one more refusal is logged with the count left out.
    std::thread::sleep(Duration::from_secs(2));
    hosts.client.run(connect);
    let refusals = || {
        proxy
            .log()
            .lines()
            .filter(|l| l.contains("refused connection"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let accounted = |lines: &[String]| {
        let left_out: usize = lines
            .iter()
            .filter_map(|l| {
                let before = l.split_once(" similar lines not logged")?.0;
                before.rsplit_once('(')?.1.parse::<usize>().ok()
            })
            .sum::<usize>();
        lines.len() + left_out
    };
    while accounted(&refusals()) < FLOOD + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = refusals();
    assert_eq!(accounted(&lines), FLOOD + 1, "{}", proxy.log());
    assert!(
        lines.len() < FLOOD,
        "the flood was not capped: {}",
        lines.len()
    );
}

const V2_CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v2-client");

#[test]
fn client_that_speaks_v2_is_passed_through() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &[]);
    let remote = hosts.remote_v4().to_string();
    let run = run_client(V2_CLIENT, &hosts.client, Some(TAGGED_GID), &[&remote]);
    assert!(
        run.success,
        "v2 client failed: {}\n{}",
        run.stderr,
        proxy.log()
    );
    assert_eq!(run.value("pong"), Some("ok"));
    let reports = node.responder.wait_for_reports(1, Duration::from_secs(10));
    assert_eq!(reports[0].transport, Transport::V2);
    assert!(
        proxy.wait_for_log("transport=passthrough", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

#[test]
fn v1_only_destination_is_refused_without_fallback() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::v1_only(&hosts.remote);
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &[]);
    let remote = hosts.remote_v4().to_string();
    let run = run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&remote, "--large", "0", "--small", "1"],
    );
    assert!(
        !run.success,
        "nothing may reach a v1-only node in plaintext"
    );
    assert!(
        proxy.wait_for_log("does not speak v2", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("--v1-fallback would retry"),
        "{}",
        proxy.log()
    );
}

#[test]
fn v1_fallback_retries_each_connection_in_plaintext_and_remembers_nothing() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::v1_only(&hosts.remote);
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &["--v1-fallback"]);
    let remote = hosts.remote_v6().to_string();
    for _ in 0..2 {
        let run = run_client(
            CLIENT,
            &hosts.client,
            Some(TAGGED_GID),
            &[&remote, "--large", "100000", "--small", "100"],
        );
        assert!(
            run.success,
            "client failed: {}\n{}",
            run.stderr,
            proxy.log()
        );
        assert_eq!(run.value("echoed"), Some("101"));
    }
    let log = proxy.log();
    assert_eq!(log.matches("transport=v1_fallback").count(), 2, "{log}");
    // Bitcoin Core's rule, per connection: the second one tries v2 again, so one failure
    // (which an attacker can inject) never downgrades later connections.
    assert_eq!(log.matches("does not speak v2").count(), 2, "{log}");
}

/// With `--v1-fallback`, an on-path attacker who resets the first v2 attempt gets that one
/// connection in plaintext, never the next: each connection tries v2 first again.
#[test]
fn one_injected_reset_does_not_downgrade_the_next_connection() {
    use bip324_e2e::echo::spawn_echo_node;
    use bip324_e2e::responder::Responder;
    use bip324_e2e::server::Server;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let hosts = TwoHosts::create();
    // The node (echo behind a v2 responder) and, in front of it on the node port, the
    // attacker: it resets the first connection once the key exchange began, and relays the
    // others untouched.
    let (_echo, responder, _attacker) = hosts
        .remote
        .run(|| {
            let echo = spawn_echo_node(TcpListener::bind("127.0.0.1:0")?, REGTEST_MAGIC)?;
            let responder = Responder::spawn(
                TcpListener::bind("127.0.0.1:0")?,
                noisy_responder(echo.addr()),
            )?;
            let node = responder.addr();
            let reset_done = Arc::new(AtomicBool::new(false));
            let attacker =
                Server::spawn(TcpListener::bind(("::", NODE_PORT))?, move |mut client| {
                    if !reset_done.swap(true, Ordering::SeqCst) {
                        let mut key = [0u8; 64];
                        let _ = client.read_exact(&mut key);
                        let _ = nix::sys::socket::setsockopt(
                            &client,
                            nix::sys::socket::sockopt::Linger,
                            &libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            },
                        );
                        return; // dropped with linger 0: a reset
                    }
                    let Ok(upstream) = TcpStream::connect(node) else {
                        return;
                    };
                    let (mut a, mut b) =
                        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    let forward = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut upstream, mut client) = (upstream, client);
                    let _ = std::io::copy(&mut upstream, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                    let _ = forward.join();
                })?;
            std::io::Result::Ok((echo, responder, attacker))
        })
        .expect("start the node and the attacker");
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &["--v1-fallback"]);
    let remote = hosts.remote_v4().to_string();
    for _ in 0..2 {
        let run = run_client(
            CLIENT,
            &hosts.client,
            Some(TAGGED_GID),
            &[&remote, "--large", "1000", "--small", "10"],
        );
        assert!(run.success, "{}\n{}", run.stderr, proxy.log());
    }
    let reports = responder.wait_for_reports(2, Duration::from_secs(10));
    assert_eq!(reports.len(), 2, "{}", proxy.log());
    assert_eq!(
        reports[0].transport,
        Transport::V1,
        "the reset one fell back"
    );
    assert_eq!(
        reports[1].transport,
        Transport::V2,
        "the next one is encrypted"
    );
    let log = proxy.log();
    assert_eq!(log.matches("transport=v1_fallback").count(), 1, "{log}");
    assert_eq!(log.matches("transport=v2").count(), 1, "{log}");
}
