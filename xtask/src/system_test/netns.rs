//! Network namespaces made with `ip netns`, deleted on drop: the container's, the remote
//! host's and the LAN host's. Processes run in them through `ip netns exec`.

use std::process::{Command, Stdio};

use crate::Result;

/// Named `PREFIX<pid>-<label>`, so that leftovers of a killed run can be recognised.
const PREFIX: &str = "b324sys-";

pub(super) struct Netns {
    name: String,
}

impl Netns {
    pub(super) fn create(label: &str) -> Result<Netns> {
        remove_stale();
        let name = format!("{PREFIX}{}-{label}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`, which must succeed.
    pub(super) fn ip(&self, args: &[&str]) -> Result {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside the namespace.
    pub(super) fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Connects this namespace's `name` to `other`'s `other_name` with a veth pair.
    pub(super) fn link(&self, name: &str, (other, other_name): (&Netns, &str)) -> Result {
        run(Command::new("ip").args([
            "link",
            "add",
            name,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            other_name,
            "netns",
            &other.name,
        ]))?;
        self.ip(&["link", "set", name, "up"])?;
        other.ip(&["link", "set", other_name, "up"])
    }

    /// An IPv4 address on interface `dev`.
    pub(super) fn address(&self, dev: &str, cidr: &str) -> Result {
        self.ip(&["addr", "add", cidr, "dev", dev])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes namespaces left by system tests that no longer run.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

fn run(command: &mut Command) -> Result {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
