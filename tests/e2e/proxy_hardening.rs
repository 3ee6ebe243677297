//! The proxy's own hardening, end to end: privileges given up before serving, a control socket
//! nobody else can take, systemd's descriptors checked before they are taken, one pool per
//! front, and no relay to this host. Needs root; fails (never skips) without it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bip324_e2e::netns::Netns;
use bip324_e2e::responder::Transport;
use bip324_e2e::socks5_client::{self, To};
use bip324_e2e::testbed::{
    CLIENT_V4, NODE_PORT, Proxy, RemoteNode, TAGGED_GID, TwoHosts, nft_redirect, noisy_responder,
    run_client, workspace_binary,
};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
const NOBODY: u32 = 65534;

fn proxy_binary() -> std::path::PathBuf {
    workspace_binary("bip324-proxy", "BIP324_PROXY_BIN")
}

/// The capability sets of every thread of `pid`, as `(thread, field, mask)`.
fn thread_capabilities(pid: u32) -> Vec<(String, String, u64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        for line in status.lines() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if field.starts_with("Cap") {
                let mask = u64::from_str_radix(value.trim(), 16).unwrap();
                found.push((task.display().to_string(), field.to_string(), mask));
            }
        }
    }
    assert!(!found.is_empty(), "no thread of {pid}");
    found
}

fn no_new_privs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["NoNewPrivs:", "1"])
}

/// A proxy child with its stderr in a file, stopped (and its file removed) when dropped.
struct Started {
    child: Child,
    log: std::path::PathBuf,
}

impl Started {
    fn spawn(mut command: Command, label: &str) -> Started {
        let log = std::env::temp_dir().join(format!("bip324-hardening-{label}.log"));
        command
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Started {
            child: command.spawn().expect("start the proxy"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains("ready") {
            assert!(Instant::now() < deadline, "not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the proxy to exit; its exit code (`None`: killed by a signal).
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Started as root, the proxy becomes its user with every capability set empty, bounding set
/// included, in every thread, and cannot gain any back through exec.
#[test]
fn a_proxy_started_as_root_keeps_no_capability() {
    let hosts = TwoHosts::create();
    let proxy = Proxy::start(&hosts.client, &[]);
    for (thread, field, mask) in thread_capabilities(proxy.pid()) {
        assert_eq!(mask, 0, "{thread} {field}:\n{}", proxy.log());
    }
    assert!(no_new_privs(proxy.pid()));
}

/// Started as a user given ambient CAP_NET_BIND_SERVICE (what the proxy's own error message
/// for a privileged port suggests), it binds port 324, then no thread keeps the capability.
/// The bounding set needs CAP_SETPCAP to shrink, which such a user lacks: it is not checked.
#[test]
fn a_proxy_given_an_ambient_capability_drops_it_from_every_thread() {
    let hosts = TwoHosts::create();
    let mut command = hosts.client.command("setpriv", None);
    command
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--inh-caps=+net_bind_service",
            "--ambient-caps=+net_bind_service",
            "--",
        ])
        .arg(proxy_binary())
        .args(["--listen", "127.0.0.1:324", "--no-control"]);
    let proxy = Started::spawn(command, &format!("{}-ambient", hosts.client.name()));
    proxy.wait_for_ready();
    let pid = proxy.child.id();
    for (thread, field, mask) in thread_capabilities(pid) {
        if field != "CapBnd" {
            assert_eq!(mask, 0, "{thread} {field}:\n{}", proxy.log());
        }
    }
    assert!(no_new_privs(pid));
}

/// A control socket in a directory any user may write could be bound first by anyone, who
/// would then answer `status`: the proxy refuses such a path and says where to put it.
#[test]
fn a_control_socket_in_a_directory_others_may_write_is_refused() {
    let hosts = TwoHosts::create();
    let shared = std::env::temp_dir().join(format!("{}-shared.sock", hosts.client.name()));
    let mut command = hosts.client.command(proxy_binary(), None);
    command
        .args(["--listen", "127.0.0.1:324", "--control"])
        .arg(&shared);
    let mut proxy = Started::spawn(command, &format!("{}-shared", hosts.client.name()));
    assert_eq!(proxy.exit_code(), Some(1), "{}", proxy.log());
    let log = proxy.log();
    assert!(
        log.contains("any user may write its directory") && log.contains("/run/bip324-proxy/"),
        "{log}"
    );
    assert!(!shared.exists());
}

/// Runs the proxy as `sh` would under a `LISTEN_PID`/`LISTEN_FDS` of `count`, with
/// `passed` placed at descriptors 3, 4, ...
fn with_listen_fds(host: &Netns, count: &str, passed: Vec<std::os::fd::OwnedFd>) -> Started {
    use std::os::fd::AsRawFd;
    let mut command = host.command("sh", None);
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=$1 exec \"$0\" --no-control",
            proxy_binary().to_str().unwrap(),
            count,
        ])
        .env("RUST_LOG", "info");
    // Copies far above 3, 4, ... first, so that placing one never overwrites another.
    let raw: Vec<i32> = passed
        .iter()
        // SAFETY: duplicates an open descriptor; the copy is closed on exec.
        .map(|fd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) })
        .collect();
    assert!(raw.iter().all(|fd| *fd >= 100));
    // SAFETY: only dup2, which is async-signal-safe, runs between fork and exec.
    let placed = raw.clone();
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in placed.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let started = Started::spawn(command, &format!("{}-fds{count}", host.name()));
    for fd in raw {
        // SAFETY: our own copies, closed once.
        unsafe { libc::close(fd) };
    }
    drop(passed);
    started
}

/// A `LISTEN_FDS` that is not systemd's never makes the proxy take or close descriptors it
/// does not own: a count beyond any socket unit's, or a descriptor that is no listening
/// socket, stops it with a sentence (not an abort), and a real one is served.
#[test]
fn descriptors_from_the_environment_are_checked_before_they_are_taken() {
    let hosts = TwoHosts::create();
    let mut huge = with_listen_fds(&hosts.client, "5000", Vec::new());
    assert_eq!(huge.exit_code(), Some(1), "{}", huge.log());
    assert!(huge.log().contains("LISTEN_FDS=\"5000\""), "{}", huge.log());

    let listener = hosts
        .client
        .run(|| TcpListener::bind("127.0.0.1:324").unwrap());
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let mut mixed = with_listen_fds(
        &hosts.client,
        "2",
        vec![
            std::os::fd::OwnedFd::from(listener.try_clone().unwrap()),
            file.into(),
        ],
    );
    assert_eq!(mixed.exit_code(), Some(1), "{}", mixed.log());
    assert!(
        mixed
            .log()
            .contains("file descriptor 4 named by LISTEN_FDS"),
        "{}",
        mixed.log()
    );

    let good = with_listen_fds(&hosts.client, "1", vec![listener.into()]);
    good.wait_for_ready();
    assert!(
        good.log().contains("listen=[127.0.0.1:324]"),
        "{}",
        good.log()
    );
}

/// Clients of the SOCKS5 front end that hold every slot of their pool leave the redirected
/// clients theirs: each front has a pool of its own.
#[test]
fn socks5_clients_cannot_take_the_redirected_clients_slots() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    nft_redirect(&hosts.client, TAGGED_GID);
    let socks: SocketAddr = "127.0.0.1:1080".parse().unwrap();
    let proxy = Proxy::start(
        &hosts.client,
        &[
            "--max-connections",
            "2",
            "--listen",
            "127.0.0.1:324",
            "--socks5",
            "127.0.0.1:1080",
            "--socks5-network",
            "regtest",
        ],
    );
    let remote = hosts.remote_v4();
    // Two relayed SOCKS5 connections, kept open: the SOCKS5 pool is full.
    let held: Vec<TcpStream> = hosts.client.run(move || {
        (0..2)
            .map(|_| {
                let (stream, code) = socks5_client::connect(socks, To::Ip(remote), false).unwrap();
                assert_eq!(code, 0);
                stream
            })
            .collect()
    });
    node.responder.wait_for_reports(2, Duration::from_secs(10));
    let started = Instant::now();
    let run = run_client(
        CLIENT,
        &hosts.client,
        Some(TAGGED_GID),
        &[&remote.to_string(), "--large", "1000", "--small", "10"],
    );
    assert!(run.success, "{run:?}\n{}", proxy.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the redirected client waited {:?}",
        started.elapsed()
    );
    let reports = node.responder.wait_for_reports(3, Duration::from_secs(10));
    assert_eq!(reports[2].transport, Transport::V2);
    drop(held);
}

/// A redirect rule that sends this host's own destinations to the proxy (a hand-written one,
/// or one from before the rules skipped them) never makes the proxy reach this host: such
/// connections are refused, and a service listening here receives nothing.
#[test]
fn a_redirected_connection_to_this_host_is_refused() {
    let hosts = TwoHosts::create();
    nft_redirect(&hosts.client, TAGGED_GID);
    let proxy = Proxy::start(&hosts.client, &[]);
    for ip in [CLIENT_V4, "127.0.0.1"] {
        let addr = SocketAddr::new(ip.parse().unwrap(), NODE_PORT);
        let service = hosts.client.run(move || {
            let listener = TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            listener
        });
        let run = run_client(
            CLIENT,
            &hosts.client,
            Some(TAGGED_GID),
            &[&addr.to_string(), "--large", "10", "--small", "1"],
        );
        assert!(!run.success, "{addr}: {run:?}");
        assert!(
            proxy.wait_for_log("forbidden_destination", Duration::from_secs(5)),
            "{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            service.accept().is_err(),
            "{addr} received a connection:\n{}",
            proxy.log()
        );
    }
    assert_eq!(proxy.log().matches("forbidden_destination").count(), 2);
}
