//! The real `bip324-proxy` binary as a child process, with its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

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
        "{} not found: `cargo xtask test` builds it (by hand: `cargo build --workspace --bins`; bip324-proxy-fault-injection is `cargo build -p bip324-proxy --features fault-injection`, copied under that name) or set {env_var}",
        path.display()
    );
    path
}

/// A `bip324-proxy` process, killed on drop; its log goes to a file.
pub struct Proxy {
    child: Child,
    log_path: PathBuf,
    control: PathBuf,
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
        Proxy::start_binary(&binary, host, extra_args, fd_limit)
    }

    /// Starts the proxy built with its `fault-injection` feature (`cargo xtask test` builds
    /// it as target/debug/bip324-proxy-fault-injection): a v1 message named `injectpanic`
    /// panics its connection's task.
    pub fn start_with_fault_injection(host: &Netns, extra_args: &[&str]) -> Proxy {
        let binary = workspace_binary(
            "bip324-proxy-fault-injection",
            "BIP324_PROXY_FAULT_INJECTION_BIN",
        );
        Proxy::start_binary(&binary, host, extra_args, None)
    }

    fn start_binary(
        binary: &Path,
        host: &Netns,
        extra_args: &[&str],
        fd_limit: Option<u64>,
    ) -> Proxy {
        // One log each: a successor (--take-over) runs beside its predecessor.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = std::env::temp_dir().join(format!("{}-proxy-{n}.log", host.name()));
        let log = std::fs::File::create(&log_path).expect("proxy log file");
        let control = control_socket(host);
        let mut command = host.command(binary, None);
        command
            .arg("--control")
            .arg(&control)
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
        let proxy = Proxy {
            child,
            log_path,
            control,
        };
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

    /// Stops the proxy as systemd would (SIGTERM) and waits for it; true if it exited 0.
    pub fn stop(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().is_ok_and(|status| status.success())
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
        if let Some(dir) = self.control.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The control socket of the proxy on `host`: one per test, as tests share a filesystem, in a
/// directory of its own that the proxy makes for its user (it refuses a directory others may
/// write, such as /tmp itself). Removed with the proxy.
pub fn control_socket(host: &Netns) -> PathBuf {
    std::env::temp_dir()
        .join(format!("{}-control", host.name()))
        .join("control.sock")
}
