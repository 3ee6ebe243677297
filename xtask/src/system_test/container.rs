//! A booted Debian root: systemd-nspawn in a network namespace made by the test, and shell
//! command lines run inside it with nsenter.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::expect;
use super::netns::Netns;
use crate::Result;
use crate::debian_root::path;

/// A booted container; powered off (or killed) on drop.
pub(super) struct Container {
    nspawn: Child,
    leader: u32,
}

impl Container {
    pub(super) fn boot(rootfs: &Path, netns: &Netns) -> Result<Container> {
        eprintln!("==> booting {} with systemd-nspawn", rootfs.display());
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "-D",
                path(rootfs),
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=passive",
            ])
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                netns.name()
            ))
            // nspawn grants CAP_NET_ADMIN only with a private network of its own making.
            .arg("--capability=CAP_NET_ADMIN,CAP_BPF")
            .arg(format!("--machine=b324sys{}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run systemd-nspawn (apt-get install systemd-container): {e}")
            })?;
        let mut container = Container { nspawn, leader: 0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        while container.leader == 0 {
            if Instant::now() > deadline {
                return Err("the container's init did not start".into());
            }
            container.leader = init_of(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        // Until its bus exists, systemctl answers nothing at once: wait for the bus first (a
        // loaded machine boots slowly).
        let state = container.run(
            "for i in $(seq 600); do test -S /run/systemd/private && break; sleep 0.1; \
             done; timeout 120 systemctl is-system-running --wait",
        )?;
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        if state != "running" {
            container.ok(
                "systemctl --failed --no-pager; journalctl -b -p warning --no-pager | tail -40",
            )?;
        }
        expect(
            state == "running",
            &format!("systemd is running in the container ({state})"),
        )?;
        Ok(container)
    }

    /// Runs a shell command line inside the container.
    pub(super) fn run(&self, command: &str) -> Result<Output> {
        Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-a",
                "/bin/sh",
                "-c",
                command,
            ])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env_remove("RUST_LOG")
            .output()
            .map_err(|e| format!("nsenter: {e}"))
    }

    /// Runs a command that must succeed; prints it with its output; returns stdout.
    pub(super) fn ok(&self, command: &str) -> Result<String> {
        let out = self.run(command)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("container# {command}");
        for line in stdout.lines().chain(stderr.lines()).take(60) {
            eprintln!("    {line}");
        }
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`{command}` failed in the container ({})",
                out.status
            ))
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.leader != 0 {
            let _ = self.run("systemctl poweroff");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.nspawn.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The child of systemd-nspawn that is PID 1 of the container's PID namespace.
fn init_of(nspawn: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1"))
            })
        })
}
