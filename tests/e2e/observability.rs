//! What the proxy shows: `bip324-redirect status` lists a live connection with its session id
//! and exact byte counts, the Prometheus metrics count it right (bytes on both sides match
//! what each end sent), and both forget it once closed. The control socket cuts off a client
//! that floods it, without slowing the connections it relays.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bip324_e2e::responder::Transport;
use bip324_e2e::testbed::{
    NODE_PORT, PROXY_PORT, Proxy, REMOTE_V4, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts,
    control_socket, http_get, noisy_responder, run_client,
};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
const METRICS: &str = "127.0.0.1:9324";

/// One scrape of the metrics endpoint, from inside the client host.
fn scrape(hosts: &TwoHosts) -> String {
    http_get(&hosts.client, METRICS, "/metrics")
}

fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

#[test]
fn status_and_metrics_report_a_live_connection_then_forget_it() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let proxy = Proxy::start(&hosts.client, &["--metrics", METRICS]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", "8333");
    let before = scrape(&hosts);
    assert_eq!(sample(&before, "bip324_proxy_connections_open"), 0);

    // A client that does its exchange, reports its byte counts, then stays connected.
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");
    let mut client = hosts
        .client
        .command(CLIENT, Some(TAGGED_GID))
        .args([
            &remote,
            "--large",
            "100000",
            "--small",
            "100",
            "--hold-ms",
            "3000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut counts = std::collections::HashMap::new();
    for line in BufReader::new(client.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((key, value)) = line.split_once('=') {
            counts.insert(key.to_string(), value.to_string());
        }
        if line.starts_with("bytes_received=") {
            break;
        }
    }
    let count = |key: &str| counts[key].parse::<u64>().unwrap();

    // Open: listed, with the remote's session id and the client's exact byte counts.
    let (_, status) = cli.status();
    let connections = status["proxy_status"]["connections"]
        .as_array()
        .expect("the proxy's report");
    assert_eq!(connections.len(), 1, "{status}");
    let live = &connections[0];
    assert_eq!(live["transport"], "v2");
    assert_eq!(live["network"], "regtest");
    assert_eq!(live["destination"], remote);
    assert_eq!(live["client"], counts["local"]);
    assert_eq!(live["client_in"], count("bytes_sent"), "{live}");
    assert_eq!(live["client_out"], count("bytes_received"), "{live}");
    assert_eq!(live["messages_from_client"], 3 + 1 + 100);
    assert_eq!(live["messages_to_client"], 3 + 1 + 100);
    let metrics = scrape(&hosts);
    assert_eq!(sample(&metrics, "bip324_proxy_connections_open"), 1);
    let text = cli.run(&[
        "status",
        "--control",
        control_socket(&hosts.client).to_str().unwrap(),
    ]);
    let session = live["session_id"].as_str().unwrap();
    eprintln!("{}", text.stdout);
    assert!(
        text.stdout.contains("connections: 1 open"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&session[..8]),
        "short session id in the table: {}",
        text.stdout
    );

    // Closed: gone from the status; counted in the metrics, both sides exact.
    assert!(client.wait().unwrap().success());
    let report = node.responder.wait_for_reports(1, Duration::from_secs(10))[0].clone();
    assert_eq!(report.transport, Transport::V2);
    assert_eq!(
        hex::encode(report.session_id.unwrap()),
        session,
        "the remote's session id"
    );
    assert!(proxy.wait_for_log("connection closed", Duration::from_secs(5)));
    let (_, status) = cli.status();
    assert_eq!(
        status["proxy_status"]["connections"],
        serde_json::json!([]),
        "{status}"
    );
    let metrics = scrape(&hosts);
    let series = |direction: &str, side: &str| {
        sample(
            &metrics,
            &format!("bip324_proxy_bytes_total{{direction=\"{direction}\",side=\"{side}\"}}"),
        )
    };
    assert_eq!(series("client_to_remote", "v1"), count("bytes_sent"));
    assert_eq!(series("remote_to_client", "v1"), count("bytes_received"));
    assert_eq!(
        series("client_to_remote", "v2"),
        report.bytes_received,
        "what the remote received"
    );
    assert_eq!(
        series("remote_to_client", "v2"),
        report.bytes_sent,
        "what the remote sent"
    );
    assert_eq!(sample(&metrics, "bip324_proxy_connections_open"), 0);
    assert_eq!(
        sample(
            &metrics,
            "bip324_proxy_connections_opened_total{transport=\"v2\"}"
        ),
        1
    );
    let messages = |direction: &str, kind: &str| {
        sample(
            &metrics,
            &format!("bip324_proxy_messages_total{{direction=\"{direction}\",type=\"{kind}\"}}"),
        )
    };
    // The client sent version, verack, ping, one block, then 20 of each small command.
    assert_eq!(messages("client_to_remote", "version"), 1);
    assert_eq!(messages("client_to_remote", "ping"), 1);
    assert_eq!(messages("client_to_remote", "block"), 1);
    assert_eq!(messages("client_to_remote", "tx"), 20);
    assert_eq!(
        messages("client_to_remote", "other"),
        20,
        "e2e-custom is not a known command"
    );
    assert_eq!(messages("remote_to_client", "pong"), 1);
    assert_eq!(messages("remote_to_client", "headers"), 20);
    assert!(sample(&metrics, "bip324_proxy_decoys_received_total") >= report.decoys_sent as u64);
    assert_eq!(
        sample(&metrics, "bip324_proxy_handshake_duration_seconds_count"),
        1
    );
    // `status` ran three times without connecting to the proxy: no refusal is counted.
    let refused = "bip324_proxy_connections_refused_total{reason=\"destination_is_proxy\"}";
    assert_eq!(sample(&metrics, refused), 0);
    // Direct connections to the proxy port are refused, and counted.
    hosts.client.run(|| {
        for addr in [
            format!("127.0.0.1:{PROXY_PORT}"),
            format!("[::1]:{PROXY_PORT}"),
        ] {
            let _ = std::net::TcpStream::connect(addr).unwrap();
        }
    });
    assert!(proxy.wait_for_count("refused connection", 2, Duration::from_secs(5)));
    assert_eq!(sample(&scrape(&hosts), refused), 2);
}

#[test]
fn control_socket_cuts_off_a_flooding_client_without_touching_the_data_path() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", "8333");
    let socket = control_socket(&hosts.client);
    let remote = format!("{REMOTE_V4}:{NODE_PORT}");

    std::thread::scope(|scope| {
        // The data path, busy the whole time.
        let traffic =
            scope.spawn(|| run_client(CLIENT, &hosts.client, Some(TAGGED_GID), &[&remote]));
        // A flood: endless bytes without a newline. The proxy stops reading after 4 KiB
        // and closes: the writer fails within seconds.
        let flood = scope.spawn(|| {
            let mut stream = UnixStream::connect(&socket).unwrap();
            let started = Instant::now();
            let chunk = [b'x'; 4096];
            while stream.write_all(&chunk).is_ok() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the flood is never cut off"
                );
            }
            started.elapsed()
        });
        // Meanwhile an honest client is answered.
        std::thread::sleep(Duration::from_millis(200));
        let (_, status) = cli.status();
        assert!(status["proxy_status"]["connections"].is_array(), "{status}");
        let cut = flood.join().unwrap();
        eprintln!("flooding control client cut off after {cut:?}");
        let run = traffic.join().unwrap();
        assert!(
            run.success,
            "the relayed connection was unaffected: {}",
            run.stderr
        );
    });

    // A request of an unknown version gets a clear error, not silence.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .write_all(b"{\"version\":99,\"request\":\"status\"}\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("unsupported version 99"), "{answer}");
}

/// One control socket per proxy: a second proxy does not take the first one's over (it
/// refuses to start, saying why), and a proxy removes its own socket when it stops.
#[test]
fn a_control_socket_belongs_to_one_proxy_and_goes_with_it() {
    let hosts = TwoHosts::create();
    let mut first = Proxy::start(&hosts.client, &[]);
    let socket = control_socket(&hosts.client);
    assert!(socket.exists());
    let binary = bip324_e2e::testbed::workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
    let second = hosts
        .client
        .command(&binary, None)
        .args(["--listen", "127.0.0.1:325", "--control"])
        .arg(&socket)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{log}");
    assert!(
        log.contains("another proxy answers on the control socket"),
        "{log}"
    );
    let (_, status) = RedirectCli::new(&hosts).status();
    assert_eq!(
        status["proxy_status"]["proxy"]["pid"],
        first.pid(),
        "the first proxy still answers: {status}"
    );
    assert!(first.stop(), "a clean stop:\n{}", first.log());
    assert!(
        !socket.exists(),
        "the stopped proxy removed its control socket"
    );
}

/// A proxy run by hand as an unprivileged user may not write under /run: by default it makes
/// its control socket in the user's runtime directory, answers there, and removes it on exit.
/// `status` run by that same user believes it there; run by anyone else (root here), it names
/// an untrusted process and uses none of its answers.
#[test]
fn a_proxy_run_by_hand_keeps_its_control_socket_in_the_users_runtime_dir() {
    const NOBODY: u32 = 65534;
    let hosts = TwoHosts::create();
    let runtime = std::env::temp_dir().join(format!("{}-runtime", hosts.client.name()));
    std::fs::create_dir_all(&runtime).unwrap();
    nix::unistd::chown(&runtime, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    // What pam_systemd makes: the user's own, private.
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let socket = runtime.join("bip324-proxy/control.sock");
    let binary = bip324_e2e::testbed::workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
    let proxy = hosts
        .client
        .command("setpriv", None)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .args(["--listen", "127.0.0.1:1325"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same user, as one runs `bip324-redirect status` after starting a proxy by hand.
    let as_nobody = hosts
        .client
        .command("setpriv", None)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bip324_e2e::testbed::workspace_binary(
            "bip324-redirect",
            "BIP324_REDIRECT_BIN",
        ))
        .args(["status", "--json", "--control", socket.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("BIP324_REDIRECT_STATE_DIR", runtime.join("state"))
        .output()
        .unwrap();
    let status = serde_json::from_slice::<serde_json::Value>(&as_nobody.stdout);
    let answered = status.map(|s| s["proxy_status"]["proxy"]["pid"] == proxy.id());
    let by_root =
        RedirectCli::new(&hosts).run(&["status", "--json", "--control", socket.to_str().unwrap()]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = proxy.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let socket_left = socket.exists();
    std::fs::remove_dir_all(&runtime).unwrap();
    assert!(
        matches!(answered, Ok(true)),
        "{answered:?}\n{as_nobody:?}\n{log}"
    );
    assert!(
        by_root.stdout.contains("an untrusted process") && !by_root.stdout.contains("\"pid\": "),
        "{by_root:?}"
    );
    assert!(!log.contains("cannot make the control socket"), "{log}");
    assert!(!socket_left, "the proxy removed its socket:\n{log}");
}

/// `check NODE` in the client host, asking the test's control socket.
fn check(
    cli: &RedirectCli,
    hosts: &TwoHosts,
    node: &str,
    extra: &[&str],
) -> bip324_e2e::testbed::Run {
    let control = control_socket(&hosts.client);
    let mut args = vec![
        "check",
        node,
        "--timeout",
        "5s",
        "--control",
        control.to_str().unwrap(),
    ];
    args.extend(extra);
    cli.run(&args)
}

/// `check` is the one command a user runs after installing: against a v2 node it proves the
/// connection encrypted with the node's own session id (exit 0); against a v1-only node the
/// proxy's account of the connection (a failed handshake) says the node does not speak v2 and
/// what to do, pointing to the hand-run proxy's own output rather than a unit's journal.
#[test]
fn check_proves_encryption_and_flags_a_v1_only_node() {
    let target = format!("{REMOTE_V4}:{NODE_PORT}");
    for v2 in [true, false] {
        let hosts = TwoHosts::create();
        let node = v2.then(|| RemoteNode::start(&hosts.remote, noisy_responder));
        let _v1_only = (!v2).then(|| RemoteNode::v1_only(&hosts.remote));
        let cli = RedirectCli::new(&hosts);
        cli.enable_tagged("nftables", &NODE_PORT.to_string());
        let proxy = Proxy::start(&hosts.client, &[]);
        let run = check(&cli, &hosts, &target, &["--network", "regtest"]);
        if let Some(node) = node {
            assert_eq!(run.code, 0, "{run:?}");
            let report = node.responder.wait_for_reports(1, Duration::from_secs(10))[0].clone();
            let session = hex::encode(report.session_id.expect("a v2 session"));
            assert!(
                run.stdout
                    .contains(&format!("encrypted (v2), session id {session}")),
                "{run:?}"
            );
        } else {
            assert_eq!(run.code, 6, "{run:?}\n{}", proxy.log());
            assert!(
                run.stdout.contains("FAILED (failure=handshake_")
                    && run.stdout.contains("does not speak v2")
                    && run.stdout.contains("--v1-fallback")
                    && run.stdout.contains("started by hand")
                    && !run.stdout.contains("journalctl"),
                "{run:?}\n{}",
                proxy.log()
            );
        }
    }
}

/// With the redirect on and the node down, the proxy's `connect_error` reaches `check`: it
/// blames the node's reachability, not v2. A bare address takes mainnet's port.
#[test]
fn check_says_the_node_is_unreachable_when_the_proxy_could_not_connect() {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", &NODE_PORT.to_string());
    let proxy = Proxy::start(&hosts.client, &[]);
    let run = check(&cli, &hosts, REMOTE_V4, &[]);
    assert_eq!(run.code, 6, "{run:?}\n{}", proxy.log());
    assert!(
        run.stdout.contains(&format!(
            "check: {REMOTE_V4}:{NODE_PORT} (mainnet) through the proxy: FAILED \
             (failure=connect_error)"
        )) && run.stdout.contains("check the address, the port")
            && !run.stdout.contains("v2"),
        "{run:?}\n{}",
        proxy.log()
    );
}

/// With the proxy down, `check` does not blame the node: it says the proxy does not answer
/// and how to start it, without connecting. Names and this host's addresses are refused with
/// an example of what to type.
#[test]
fn check_blames_a_stopped_proxy_not_the_node() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", &NODE_PORT.to_string());
    let target = format!("{REMOTE_V4}:{NODE_PORT}");
    let run = check(&cli, &hosts, &target, &["--network", "regtest"]);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stdout
            .contains("check: not tried: the proxy does not answer")
            && run
                .stdout
                .contains("fix:   the proxy does not answer on 127.0.0.1:324")
            && run.stdout.contains("bip324-proxy")
            && !run.stdout.contains("cannot connect to")
            && !run.stderr.contains("cannot connect to"),
        "{run:?}"
    );
    for refused in ["localhost:8333", "127.0.0.1:8333", "10.32.4.1"] {
        let run = check(&cli, &hosts, refused, &[]);
        assert_eq!(run.code, 4, "{refused}: {run:?}");
        assert!(
            run.stderr
                .contains("`bip324-redirect check 203.0.113.7:8333`"),
            "{refused}: {run:?}"
        );
    }
}

/// A port the policy does not redirect, or a ruleset flushed under the redirect: `check`
/// says why the connection would go direct and the command that fixes it.
#[test]
fn check_names_a_port_outside_the_policy_and_a_flushed_ruleset() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", "18444");
    let _proxy = Proxy::start(&hosts.client, &[]);
    let target = format!("{REMOTE_V4}:{NODE_PORT}");
    let run = check(&cli, &hosts, &target, &["--network", "regtest"]);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "check: not tried: port {NODE_PORT} is not one the policy redirects"
        )) && run.stdout.contains(&format!("--ports 18444,{NODE_PORT}"))
            && !run.stdout.contains("did NOT go through the proxy"),
        "{run:?}"
    );
    cli.enable_tagged("nftables", &NODE_PORT.to_string());
    let flushed = hosts
        .client
        .command("nft", None)
        .args(["flush", "ruleset"])
        .status()
        .unwrap();
    assert!(flushed.success());
    let run = check(&cli, &hosts, &target, &["--network", "regtest"]);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stdout
            .contains("check: not tried: the redirect is not in place as enabled")
            && run.stdout.contains("PLAINTEXT")
            && run.stdout.contains("bip324-redirect enable --group"),
        "{run:?}"
    );
}

/// The ready line names every place the proxy answers: redirected, SOCKS5 and inbound
/// listeners, the control socket (or why there is none) and the metrics.
#[test]
fn the_ready_line_names_every_listener_and_the_control_socket() {
    let hosts = TwoHosts::create();
    let proxy = Proxy::start(
        &hosts.client,
        &[
            "--listen",
            "127.0.0.1:324",
            "--socks5",
            "127.0.0.1:1080",
            "--metrics",
            METRICS,
        ],
    );
    let control = control_socket(&hosts.client);
    let log = proxy.log();
    let ready = log
        .lines()
        .find(|l| l.contains(" ready"))
        .unwrap_or_default();
    assert!(
        ready.contains("listen=[127.0.0.1:324]")
            && ready.contains("socks5=[127.0.0.1:1080]")
            && ready.contains("inbound=[]")
            && ready.contains(&format!("control={}", control.display()))
            && ready.contains(&format!("metrics={METRICS}")),
        "{log}"
    );
    drop(proxy);
    let binary = bip324_e2e::testbed::workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
    let mut command = hosts.client.command(&binary, None);
    command.args(["--no-control", "--listen", "127.0.0.1:1325"]);
    let log = log_until_ready(command);
    assert!(
        log.contains("control=none (--no-control)") && log.contains("metrics=none"),
        "{log}"
    );
}

/// Starts the proxy, reads its log until it is ready (10 s at most), then stops it.
fn log_until_ready(mut command: std::process::Command) -> String {
    let mut proxy = command
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = proxy.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.contains(" ready") {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    log
}

/// A proxy run by hand by a user without XDG_RUNTIME_DIR cannot make its default control
/// socket: one warning says why and what to give instead, and the ready line says
/// control=none. `status` with nothing running prints one short connections line.
#[test]
fn a_user_proxy_without_a_runtime_dir_says_it_has_no_control_socket() {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    let status = cli.run(&["status"]);
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("connections:"))
        .unwrap_or_default();
    assert!(
        line.starts_with("connections: none (the proxy is not running") && line.len() < 120,
        "{status:?}"
    );
    let binary = bip324_e2e::testbed::workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
    let mut command = hosts.client.command("setpriv", None);
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .args(["--listen", "127.0.0.1:1325"])
        .env_remove("XDG_RUNTIME_DIR");
    let log = log_until_ready(command);
    assert!(
        log.contains("XDG_RUNTIME_DIR is not set")
            && log.contains("--control PATH")
            && log.contains("control=none"),
        "{log}"
    );
}
