//! The product's `bip324-redirect` command, run inside the client host.

use std::path::PathBuf;

use super::{Run, TAGGED_GID, TwoHosts, control_socket, workspace_binary};

/// The `bip324-redirect` command, run inside a host, with its record of enabled policies in
/// a directory of its own (removed on drop).
pub struct RedirectCli<'a> {
    hosts: &'a TwoHosts,
    state_dir: PathBuf,
}

impl<'a> RedirectCli<'a> {
    pub fn new(hosts: &'a TwoHosts) -> RedirectCli<'a> {
        let state_dir =
            std::env::temp_dir().join(format!("{}-redirect-state", hosts.client.name()));
        RedirectCli { hosts, state_dir }
    }

    /// Runs the command on the client host, keeping its state and pins within the test.
    pub fn run(&self, args: &[&str]) -> Run {
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
            // Never the host's /etc/bip324: absent unless a test makes it.
            .env("BIP324_REDIRECT_CONFIG_DIR", self.config_dir())
            .env(
                "BIP324_REDIRECT_BPF_DIR",
                self.hosts.bpffs.path().join("bip324-redirect"),
            )
            .output()
            .expect("run bip324-redirect");
        Run::of(&output)
    }

    /// Where `enable` saves its policy and `restore` reads it (the test's own /etc/bip324;
    /// it does not exist until the test creates it).
    pub fn config_dir(&self) -> PathBuf {
        self.state_dir.join("etc")
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "bip324-redirect {args:?} failed: {run:?}");
        run
    }

    /// `enable` for `backend`: the eBPF backend attaches to the test's cgroup.
    pub fn enable(&self, backend: &str, extra: &[&str]) -> Run {
        let cgroup = self.hosts.cgroup.path().to_string_lossy().into_owned();
        let mut args = vec!["enable", "--backend", backend];
        if backend == "ebpf" {
            args.extend(["--cgroup", cgroup.as_str()]);
        }
        args.extend(extra);
        self.run(&args)
    }

    /// `enable` for the test's tagged group on `ports` (comma-separated), which must succeed.
    pub fn enable_tagged(&self, backend: &str, ports: &str) -> Run {
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
