//! A client host and a remote host joined by a veth link, with the proxy on the client host
//! and a v2 node (responder + v1 echo node) on the remote host.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup::{BpfMount, Cgroup};
use crate::echo::spawn_echo_node;
use crate::netns::{self, Netns};
use crate::responder::{Responder, ResponderOptions};
use crate::server::Server;
use crate::v1::REGTEST_MAGIC;

pub const CLIENT_V4: &str = "10.32.4.1";
pub const REMOTE_V4: &str = "10.32.4.2";
pub const CLIENT_V6: &str = "fd32:4::1";
pub const REMOTE_V6: &str = "fd32:4::2";
/// The port the remote node listens on: the redirect matches it.
pub const NODE_PORT: u16 = 8333;
pub const PROXY_PORT: u16 = 324;
/// The group whose connections are redirected in tests, and one that is not.
pub const TAGGED_GID: u32 = 32324;
pub const OTHER_GID: u32 = 32325;

/// Fails the test, loudly, when it cannot do what it must: never a silent skip.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root (network namespaces, nftables): run `cargo xtask test` as root"
    );
}

/// The hosts, plus what the eBPF backend needs to stay within the test: a cgroup holding
/// every process started on the client host, and a BPF filesystem of its own.
pub struct TwoHosts {
    pub client: Netns,
    pub remote: Netns,
    pub cgroup: Cgroup,
    pub bpffs: BpfMount,
}

impl TwoHosts {
    pub fn create() -> TwoHosts {
        require_root();
        let cgroup = Cgroup::create("client");
        let bpffs = BpfMount::create();
        let mut client = Netns::create("client");
        client.place_processes_in(&cgroup);
        let remote = Netns::create("remote");
        netns::link(&client, &remote);
        netns::address(&client, &format!("{CLIENT_V4}/24"));
        netns::address(&remote, &format!("{REMOTE_V4}/24"));
        netns::address(&client, &format!("{CLIENT_V6}/64"));
        netns::address(&remote, &format!("{REMOTE_V6}/64"));
        TwoHosts {
            client,
            remote,
            cgroup,
            bpffs,
        }
    }

    pub fn remote_v4(&self) -> SocketAddr {
        SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT)
    }

    pub fn remote_v6(&self) -> SocketAddr {
        SocketAddr::new(REMOTE_V6.parse().unwrap(), NODE_PORT)
    }
}

/// The remote host's node: a v2 responder on `NODE_PORT` (both families) in front of a v1
/// echo node on its loopback.
pub struct RemoteNode {
    pub responder: Responder,
    _echo: Server,
}

impl RemoteNode {
    pub fn start(
        host: &Netns,
        options: impl FnOnce(SocketAddr) -> ResponderOptions + Send + 'static,
    ) -> RemoteNode {
        host.run(move || {
            let echo = spawn_echo_node(TcpListener::bind("127.0.0.1:0")?, REGTEST_MAGIC)?;
            let options = options(echo.addr());
            // [::] accepts IPv4 too (v4-mapped), as a dual-stack node does.
            let listener = TcpListener::bind(("::", NODE_PORT))?;
            let responder = Responder::spawn(listener, options)?;
            io::Result::Ok(RemoteNode {
                responder,
                _echo: echo,
            })
        })
        .expect("start the remote node")
    }
}

impl RemoteNode {
    /// A node that only speaks v1, on `NODE_PORT`. Like Bitcoin Core, it drops a peer whose
    /// first 24 bytes are not a v1 header of its network.
    pub fn v1_only(host: &Netns) -> Server {
        host.run(|| spawn_echo_node(TcpListener::bind(("::", NODE_PORT))?, REGTEST_MAGIC))
            .expect("start the v1-only node")
    }
}

/// Responder settings that exercise garbage and decoys everywhere they may appear.
pub fn noisy_responder(upstream: SocketAddr) -> ResponderOptions {
    ResponderOptions {
        magic: REGTEST_MAGIC,
        garbage_len: 1000,
        decoys_before_version: 2,
        decoys_after_version: 2,
        decoy_every: 1000,
        upstream,
        keep_received: true,
    }
}

/// Installs, in the client host, an nftables redirect of the tagged group's TCP connections
/// to `NODE_PORT` towards the proxy (with the `nft` command; the product's CLI does this
/// through netlink).
pub fn nft_redirect(host: &Netns, gid: u32) {
    let ruleset = format!(
        "table inet b324test {{
           chain output {{
             type nat hook output priority -100; policy accept;
             meta l4proto tcp tcp dport {NODE_PORT} meta skgid {gid} redirect to :{PROXY_PORT}
           }}
         }}"
    );
    let mut nft = host
        .command("nft", None)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (apt-get install nftables)");
    nft.stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    let output = nft.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A workspace binary next to the test executable (target/<profile>/), or `$env_var`.
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --workspace --bins`; `cargo xtask test` does) or set {env_var}",
        path.display()
    );
    path
}

/// A `bip324-proxy` process, killed on drop; its log goes to a file.
pub struct Proxy {
    child: Child,
    log_path: PathBuf,
}

impl Proxy {
    /// Starts the proxy as root on its default addresses (127.0.0.1:324, [::1]:324) unless
    /// `extra_args` give `--listen`; it switches to an unprivileged user once they are open.
    pub fn start(host: &Netns, extra_args: &[&str]) -> Proxy {
        Proxy::start_with_fd_limit(host, extra_args, None)
    }

    /// Starts the proxy with at most `fd_limit` open files (soft and hard), when given.
    pub fn start_with_fd_limit(host: &Netns, extra_args: &[&str], fd_limit: Option<u64>) -> Proxy {
        let binary = workspace_binary("bip324-proxy", "BIP324_PROXY_BIN");
        let log_path = std::env::temp_dir().join(format!("{}-proxy.log", host.name()));
        let log = std::fs::File::create(&log_path).expect("proxy log file");
        let mut command = host.command(&binary, None);
        command
            .arg("--control")
            .arg(control_socket(host))
            .args(extra_args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(limit) = fd_limit {
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    use nix::sys::resource::{Resource, setrlimit};
                    setrlimit(Resource::RLIMIT_NOFILE, limit, limit)?;
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("start bip324-proxy");
        let proxy = Proxy { child, log_path };
        assert!(
            proxy.wait_for_log("ready", Duration::from_secs(10)),
            "proxy did not start:\n{}",
            proxy.log()
        );
        proxy
    }

    /// Whether the proxy process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the proxy process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, std::iter::Iterator::count)
    }

    /// A `/proc/<pid>/status` figure in KiB (VmRSS, VmHWM, ...).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Kills the proxy at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where the log ends now: [`Proxy::wait_for_end_of`] looks only past it.
    pub fn log_mark(&self) -> usize {
        std::fs::metadata(&self.log_path).map_or(0, |m| m.len() as usize)
    }

    /// The line that ends the connection from `client` (closed, failed or refused), once it
    /// is logged past `mark`. Before the mark, an earlier connection that happened to use the
    /// same client port may have ended.
    pub fn wait_for_end_of(
        &self,
        client: SocketAddr,
        mark: usize,
        timeout: Duration,
    ) -> Option<String> {
        let needle = format!("client={client}");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let log = std::fs::read(&self.log_path).unwrap_or_default();
            let since = String::from_utf8_lossy(log.get(mark..).unwrap_or_default());
            let ended = since.lines().find(|l| {
                l.contains(&needle)
                    && [
                        "connection closed",
                        "connection failed",
                        "refused connection",
                    ]
                    .iter()
                    .any(|end| l.contains(end))
            });
            if let Some(line) = ended {
                return Some(line.to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until `needle` appears `count` times in the log.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Every `session_id=` the proxy logged.
    pub fn session_ids(&self) -> Vec<String> {
        self.log()
            .split("session_id=")
            .skip(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// The control socket of the proxy on `host`: one per test, as tests share a filesystem.
pub fn control_socket(host: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("{}-control.sock", host.name()))
}

/// What the v1 client program reported.
#[derive(Debug)]
pub struct ClientRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// A `key=value` line of the client's report.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
    }
}

/// Runs the unmodified v1 client program in `host`, as `gid` when given.
pub fn run_client(client_binary: &str, host: &Netns, gid: Option<u32>, args: &[&str]) -> ClientRun {
    run_client_as(client_binary, host, gid, &[], args)
}

/// Like `run_client`, with supplementary groups.
pub fn run_client_as(
    client_binary: &str,
    host: &Netns,
    gid: Option<u32>,
    supplementary: &[u32],
    args: &[&str],
) -> ClientRun {
    let output = host
        .command_as(client_binary, gid, supplementary)
        .args(args)
        .output()
        .expect("run the v1 client");
    ClientRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `bip324-redirect` command, run inside a host, with its record of enabled policies in
/// a directory of its own (removed on drop).
pub struct RedirectCli<'a> {
    hosts: &'a TwoHosts,
    state_dir: PathBuf,
}

/// What a command printed and returned.
#[derive(Debug)]
pub struct CommandRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl<'a> RedirectCli<'a> {
    pub fn new(hosts: &'a TwoHosts) -> RedirectCli<'a> {
        let state_dir =
            std::env::temp_dir().join(format!("{}-redirect-state", hosts.client.name()));
        RedirectCli { hosts, state_dir }
    }

    /// Runs the command on the client host, keeping its state and pins within the test.
    pub fn run(&self, args: &[&str]) -> CommandRun {
        // Attached anywhere else, eBPF programs would reach the host's processes.
        assert!(
            !(args.first() == Some(&"enable")
                && args.contains(&"ebpf")
                && !args.contains(&"--cgroup")),
            "eBPF tests attach to their own cgroup: use RedirectCli::enable"
        );
        let binary = workspace_binary("bip324-redirect", "BIP324_REDIRECT_BIN");
        let output = self
            .hosts
            .client
            .command(&binary, None)
            .args(args)
            .env("BIP324_REDIRECT_STATE_DIR", &self.state_dir)
            .env(
                "BIP324_REDIRECT_BPF_DIR",
                self.hosts.bpffs.path().join("bip324-redirect"),
            )
            .output()
            .expect("run bip324-redirect");
        CommandRun {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> CommandRun {
        let run = self.run(args);
        assert_eq!(run.code, 0, "bip324-redirect {args:?} failed: {run:?}");
        run
    }

    /// `enable` for `backend`: the eBPF backend attaches to the test's cgroup.
    pub fn enable(&self, backend: &str, extra: &[&str]) -> CommandRun {
        let cgroup = self.hosts.cgroup.path().to_string_lossy().into_owned();
        let mut args = vec!["enable", "--backend", backend];
        if backend == "ebpf" {
            args.extend(["--cgroup", cgroup.as_str()]);
        }
        args.extend(extra);
        self.run(&args)
    }

    /// `enable` for the test's tagged group on `ports` (comma-separated), which must succeed.
    pub fn enable_tagged(&self, backend: &str, ports: &str) -> CommandRun {
        let run = self.enable(
            backend,
            &["--group", &TAGGED_GID.to_string(), "--ports", ports],
        );
        assert_eq!(run.code, 0, "enable failed: {run:?}");
        assert!(run.stdout.contains("enabled"), "{run:?}");
        run
    }

    /// `status --json`: the exit code and the report.
    pub fn status(&self) -> (i32, serde_json::Value) {
        let control = control_socket(&self.hosts.client);
        let run = self.run(&["status", "--json", "--control", control.to_str().unwrap()]);
        let report = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {run:?}"));
        (run.code, report)
    }
}

impl Drop for RedirectCli<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
