//! The local trust boundary, end to end: only the proxy ever receives the group's traffic.
//! Each test has its own namespaces; needs root, fails (never skips) without it.
//!
//! Long because it is one suite of independent cases, most run for both backends.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bip324_e2e::netns::Netns;
use bip324_e2e::responder::{Responder, Transport};
use bip324_e2e::testbed::{
    NODE_PORT, PROXY_PORT, Proxy, REMOTE_V4, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts,
    noisy_responder, run_client, workspace_binary,
};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
/// An unprivileged local user: nobody.
const NOBODY: u32 = 65534;

/// Every address on which a local user could try to catch redirected connections.
fn proxy_addresses(port: u16) -> Vec<SocketAddr> {
    ["127.0.0.1", "::1", "0.0.0.0", "::"]
        .iter()
        .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
        .collect()
}

/// What an unprivileged user gets when binding each address: the listeners it got.
fn impostor_binds(hosts: &TwoHosts, port: u16) -> Vec<TcpListener> {
    let addresses = proxy_addresses(port);
    hosts.client.run_as_user(NOBODY, NOBODY, move || {
        addresses
            .iter()
            .filter_map(|a| TcpListener::bind(a).ok())
            .collect()
    })
}

fn tagged_client_ok(hosts: &TwoHosts, destination: SocketAddr) -> bool {
    let destination = destination.to_string();
    run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&destination, "--large", "1000", "--small", "10"],
    )
    .success
}

/// A tagged client to each of the remote's addresses reaches it through the proxy, in v2.
fn tagged_clients_are_encrypted(hosts: &TwoHosts, node: &RemoteNode, proxy: &Proxy) {
    for (n, destination) in [hosts.remote_v4(), hosts.remote_v6()]
        .into_iter()
        .enumerate()
    {
        assert!(tagged_client_ok(hosts, destination), "{}", proxy.log());
        let reports = node
            .responder
            .wait_for_reports(n + 1, Duration::from_secs(10));
        assert_eq!(reports[n].transport, Transport::V2, "{destination}");
    }
}

/// With the default port, no unprivileged process can take the proxy's place, neither while
/// the proxy is down nor while it runs: the group's connections are refused, then encrypted.
pub fn an_unprivileged_impostor_never_receives_the_groups_traffic(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, &NODE_PORT.to_string());

    let caught = impostor_binds(&hosts, PROXY_PORT);
    assert!(
        caught.is_empty(),
        "nobody bound {caught:?} with the proxy down"
    );
    for destination in [hosts.remote_v4(), hosts.remote_v6()] {
        assert!(
            !tagged_client_ok(&hosts, destination),
            "proxy down: refused"
        );
    }
    assert!(
        node.responder
            .wait_for_reports(1, Duration::from_millis(500))
            .is_empty()
    );

    let proxy = Proxy::start(&hosts.client, &[]);
    let caught = impostor_binds(&hosts, PROXY_PORT);
    assert!(
        caught.is_empty(),
        "nobody bound {caught:?} beside the proxy"
    );
    tagged_clients_are_encrypted(&hosts, &node, &proxy);
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
}

/// An administrator who picks a port any user may bind is warned, and `status` names the
/// user who holds it; the proxy refuses to start beside that user's listener and names it.
pub fn an_impostor_on_an_unprivileged_port_is_named(backend: &str) {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    let run = cli.enable(
        backend,
        &[
            "--group",
            &TAGGED_GID.to_string(),
            "--ports",
            "8333",
            "--proxy-port",
            "1324",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("can be bound by any local user"),
        "{run:?}"
    );

    let held = impostor_binds(&hosts, 1324);
    assert_eq!(held.len(), 2, "nobody can bind port 1324 on both loopbacks");
    let (code, status) = cli.status();
    assert_eq!(code, 6, "{status}");
    let problems = status["problems"].to_string();
    assert!(problems.contains("user nobody (uid 65534)"), "{problems}");
    assert!(problems.contains("PLAINTEXT"), "{problems}");
    assert!(
        status["proxy"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["answering"] == false),
        "{status}"
    );

    let binary = workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
    for listen in ["127.0.0.1:1324", "[::1]:1324"] {
        let output = hosts
            .client
            .command(&binary, None)
            .args(["--no-control", "--listen", listen])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{log}");
        assert!(
            log.contains("it is taken by a socket of uid 65534"),
            "{log}"
        );
    }
    drop(held);
}

/// `--listen [::]:PORT`: IPv4 clients arrive v4-mapped and are served like IPv6 ones.
pub fn a_dual_stack_listener_serves_ipv4_and_ipv6_clients(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, &NODE_PORT.to_string());
    let proxy = Proxy::start(&hosts.client, &["--listen", &format!("[::]:{PROXY_PORT}")]);
    tagged_clients_are_encrypted(&hosts, &node, &proxy);
    assert!(!proxy.log().contains("refused"), "{}", proxy.log());
}

/// A node whose port equals the source port of a live upstream connection of the proxy
/// (testnet4 and signet ports lie in the ephemeral range) is a destination, not a loop.
pub fn a_destination_port_equal_to_an_upstream_source_port_is_served(backend: &str) {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged(backend, &NODE_PORT.to_string());
    let proxy = Proxy::start(&hosts.client, &[]);

    // A tagged client that stays connected: the proxy holds an upstream connection for it.
    let _held = KillOnDrop(
        hosts
            .client
            .command(CLIENT, Some(TAGGED_GID))
            .args([
                &hosts.remote_v4().to_string(),
                "--large",
                "0",
                "--small",
                "1",
            ])
            .args(["--hold-ms", "30000"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the held client"),
    );
    let source_port = upstream_source_port(&hosts)
        .unwrap_or_else(|| panic!("no upstream connection at the remote: {}", proxy.log()));

    // A second node on exactly that port, redirected too.
    let echo = node.responder.upstream();
    let second = hosts
        .remote
        .run(move || {
            let listener = TcpListener::bind(("::", source_port))?;
            Responder::spawn(listener, noisy_responder(echo))
        })
        .expect("second node");
    cli.enable_tagged(backend, &format!("{NODE_PORT},{source_port}"));
    let destination = SocketAddr::new(REMOTE_V4.parse().unwrap(), source_port);
    assert!(tagged_client_ok(&hosts, destination), "{}", proxy.log());
    let reports = second.wait_for_reports(1, Duration::from_secs(10));
    assert_eq!(reports[0].transport, Transport::V2);
    assert!(!proxy.log().contains("loop"), "{}", proxy.log());
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// eBPF programs attached at the cgroup root see every network namespace. A process of the
/// tagged gid in another one (a container with the host's ids) is left alone: it is not
/// sent to its own namespace's loopback, where whatever listens would get its plaintext.
#[test]
fn ebpf_leaves_other_network_namespaces_alone() {
    let hosts = TwoHosts::create();
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("ebpf", &NODE_PORT.to_string());
    let _proxy = Proxy::start(&hosts.client, &[]);
    let mut container = Netns::create("container");
    container.place_processes_in(&hosts.cgroup);
    let traps: Vec<TcpListener> = container.run(|| {
        ["127.0.0.1", "::1"]
            .iter()
            .map(|ip| {
                let trap = TcpListener::bind((*ip, PROXY_PORT)).expect("bind in the container");
                trap.set_nonblocking(true).unwrap();
                trap
            })
            .collect()
    });
    for destination in [hosts.remote_v4(), hosts.remote_v6()] {
        let run = run_client(
            CLIENT,
            &container,
            Some(TAGGED_GID),
            &[&destination.to_string(), "--large", "0", "--small", "1"],
        );
        // The container has no route to the remote: its own connect fails, untouched.
        assert!(!run.success, "{run:?}");
    }
    for trap in &traps {
        assert!(
            trap.accept().is_err(),
            "the container's {} received a tagged connection",
            trap.local_addr().unwrap()
        );
    }
}

/// A redirected socket's records go with it: a `connect()` that fails before any packet (an
/// IPv6-only socket to a v4-mapped address) and a connection that ran and closed leave no
/// entry in the maps.
#[test]
fn ebpf_failed_and_closed_connections_leave_no_map_entries() {
    let hosts = TwoHosts::create();
    let _node = RemoteNode::start(&hosts.remote, noisy_responder);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("ebpf", &NODE_PORT.to_string());
    let proxy = Proxy::start(&hosts.client, &[]);
    let mapped = format!("[::ffff:{REMOTE_V4}]:{NODE_PORT}");
    let run = run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&mapped, "--ipv6-only", "1"],
    );
    assert!(!run.success && run.stderr.contains("connect to"), "{run:?}");
    assert!(
        tagged_client_ok(&hosts, hosts.remote_v4()),
        "{}",
        proxy.log()
    );

    let pins = hosts.bpffs.path().join("bip324-redirect");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = Vec::new();
    while Instant::now() < deadline {
        left = ["BY_COOKIE", "BY_CLIENT_NS"]
            .iter()
            .map(|map| {
                let output = std::process::Command::new("bpftool")
                    .args(["-j", "map", "dump", "pinned"])
                    .arg(pins.join(map))
                    .output()
                    .expect("run bpftool (apt-get install bpftool)");
                assert!(output.status.success(), "{output:?}");
                (
                    map,
                    String::from_utf8_lossy(&output.stdout).trim().to_string(),
                )
            })
            .filter(|(_, dump)| dump != "[]")
            .collect();
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("entries left behind: {left:?}");
}

/// The proxy's upstream connection as the remote sees it: the peer port of the one
/// connection established to the node.
fn upstream_source_port(hosts: &TwoHosts) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let output = hosts
            .remote
            .command("ss", None)
            .args([
                "-tnH",
                "state",
                "established",
                &format!("( sport = :{NODE_PORT} )"),
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        if let Some(peer) = text.split_whitespace().nth(3) {
            return peer.rsplit(':').next()?.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

bip324_e2e::for_each_backend!(
    an_unprivileged_impostor_never_receives_the_groups_traffic,
    an_impostor_on_an_unprivileged_port_is_named,
    a_dual_stack_listener_serves_ipv4_and_ipv6_clients,
    a_destination_port_equal_to_an_upstream_source_port_is_served,
);

/// A fake proxy answering on a control socket: `bind` as root, then `listen` (when
/// `SO_PEERCRED` records who answers) as `uid`, in this thread only; serves `answers`
/// connections with a status naming a connection that does not exist.
fn fake_control_socket(
    path: &std::path::Path,
    uid: u32,
    answers: usize,
) -> std::thread::JoinHandle<()> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
    };
    use std::io::{Read, Write};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(path).unwrap(),
    )
    .unwrap();
    std::thread::spawn(move || {
        // SAFETY: raw set*id syscalls change this thread's credentials only (glibc's wrappers
        // would change every thread of the test process).
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        listen(&fd, Backlog::new(8).unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::from(fd);
        let zeros = "\"client_in\":0,\"client_out\":0,\"remote_in\":0,\"remote_out\":0,\
                     \"messages_from_client\":0,\"messages_to_client\":0";
        let answer = format!(
            "{{\"version\":1,\"proxy\":{{\"version\":\"0.2.0\",\"pid\":1,\"started\":0.0,\
             \"listen\":[\"127.0.0.1:324\"]}},\"connections\":[{{\"id\":1,\
             \"client\":\"203.0.113.99:4242\",\"destination\":\"198.51.100.7:8333\",\
             \"network\":\"mainnet\",\"transport\":\"v2\",\"session_id\":\"{}\",\"started\":0.0,\
             \"duration_seconds\":1.0,{zeros}}}],\"totals\":{{{zeros}}}}}",
            "ab".repeat(32)
        );
        for _ in 0..answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer.as_bytes());
        }
    })
}

/// `status` and `check` believe the control socket only from root or the proxy's user: a
/// socket made by another user (here nobody, in a directory only root may write) is named as
/// untrusted and its fake connections are not shown; a socket in a directory anyone may write
/// is not used at all, whoever answers there.
#[test]
fn status_believes_no_control_socket_of_another_user() {
    let hosts = TwoHosts::create();
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", "8333");
    let dir = std::env::temp_dir().join(format!("{}-fakecontrol", hosts.client.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = scopeguard(dir.clone());
    let status = |path: &std::path::Path| {
        cli.run(&["status", "--json", "--control", path.to_str().unwrap()])
    };

    // Made by nobody, in a directory of root's (mode 0755).
    let fake = dir.join("control.sock");
    let server = fake_control_socket(&fake, NOBODY, 1);
    let run = status(&fake);
    server.join().unwrap();
    assert!(!run.stdout.contains("203.0.113.99"), "{run:?}");
    assert!(
        run.stdout.contains("an untrusted process") && run.stdout.contains("uid 65534"),
        "{run:?}"
    );
    assert_eq!(run.code, 6, "{run:?}");

    // A directory anyone may write: not used, even though root answers.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let fake = open.join("control.sock");
    let server = fake_control_socket(&fake, 0, 1);
    let run = status(&fake);
    assert!(!run.stdout.contains("203.0.113.99"), "{run:?}");
    assert!(run.stdout.contains("any user may write it"), "{run:?}");
    // Unblock the fake server, which nobody asked.
    let _ = std::os::unix::net::UnixStream::connect(&fake);
    server.join().unwrap();
    drop(cleanup);
}

/// Removes a directory when dropped, also when the test fails.
fn scopeguard(dir: std::path::PathBuf) -> impl Drop {
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Remove(dir)
}

/// The eBPF connection maps hold 65,536 records shared by the whole group: a member that keeps
/// more sockets than that in `connect()` pushes other members' records out. `status` counts
/// those evictions and says so (a problem, exit 6) instead of staying silent.
#[test]
fn ebpf_status_reports_records_evicted_from_full_maps() {
    const SOCKETS: usize = 66_000;
    let hosts = TwoHosts::create();
    let _proxy = Proxy::start(&hosts.client, &[]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("ebpf", &NODE_PORT.to_string());
    let (code, status) = cli.status();
    assert_eq!(code, 0, "{status}");
    assert!(
        status["kernel"]
            .to_string()
            .contains("0 evicted since enable"),
        "{status}"
    );
    // Two source ports only: the sockets' connect() fails for want of a port after the
    // programs recorded each one, and every record stays until its socket closes.
    let done = hosts
        .client
        .command("sysctl", None)
        .args(["-qw", "net.ipv4.ip_local_port_range=60000 60001"])
        .status();
    assert!(done.unwrap().success());
    // Four processes: the hard limit of open files here may be as low as 20,000.
    const PROCESSES: usize = 4;
    let script = format!(
        "import socket, sys\n\
         held = []\n\
         for _ in range({n}):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
         \x20   s.setblocking(False)\n\
         \x20   try:\n\
         \x20       s.connect(('{REMOTE_V4}', {NODE_PORT}))\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   held.append(s)\n\
         print('held', len(held), flush=True)\n\
         sys.stdin.read()\n",
        n = SOCKETS / PROCESSES
    );
    let mut floods: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            let mut command = hosts.client.command("python3", Some(TAGGED_GID));
            command
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    let limit = (SOCKETS / PROCESSES + 64) as u64;
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )?;
                    Ok(())
                });
            }
            command
                .spawn()
                .expect("run python3 (apt-get install python3)")
        })
        .collect();
    let lines: Vec<String> = floods
        .iter_mut()
        .map(|flood| {
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(flood.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            line.trim().to_string()
        })
        .collect();
    let (code, status) = cli.status();
    for mut flood in floods {
        drop(flood.stdin.take());
        let _ = flood.wait();
    }
    assert!(
        lines
            .iter()
            .all(|l| *l == format!("held {}", SOCKETS / PROCESSES)),
        "{lines:?}"
    );
    assert_eq!(code, 6, "{status}");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("records were evicted"),
        "{problems}\n{status}"
    );
}
