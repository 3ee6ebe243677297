//! Network namespaces that tests create as hosts, and always delete again.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, setgroups, setresgid};

/// Every namespace a test makes is named `PREFIX<pid>-<n>`, so leftovers of a killed run can
/// be recognised and removed.
const PREFIX: &str = "b324e2e-";

/// A named network namespace (`ip netns add`), deleted on drop, even when a test fails.
pub struct Netns {
    name: String,
    /// Processes started here join this cgroup (its `cgroup.procs`), when set.
    cgroup_procs: Option<std::ffi::CString>,
}

impl Netns {
    pub fn create(label: &str) -> Netns {
        remove_stale();
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{label}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            cgroup_procs: None,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Processes started in this host from now on join `cgroup`.
    pub fn place_processes_in(&mut self, cgroup: &crate::cgroup::Cgroup) {
        self.cgroup_procs = Some(cgroup.procs_file());
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`, panicking with its output on failure.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    fn handle(&self) -> io::Result<File> {
        File::open(format!("/run/netns/{}", self.name))
    }

    /// A command that runs inside the namespace, optionally with `gid` as its only group
    /// (real, effective and filesystem gid; no supplementary groups).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, gid: Option<u32>) -> Command {
        self.command_as(program, gid, &[])
    }

    /// Like `command`, with `supplementary` groups besides the primary `gid`.
    pub fn command_as(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        gid: Option<u32>,
        supplementary: &[u32],
    ) -> Command {
        let handle = self.handle().expect("namespace handle");
        let groups: Vec<Gid> = supplementary.iter().map(|g| Gid::from_raw(*g)).collect();
        let cgroup_procs = self.cgroup_procs.clone();
        let mut command = Command::new(program);
        // SAFETY: only async-signal-safe system calls run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if let Some(procs) = &cgroup_procs {
                    crate::cgroup::Cgroup::join_from_child(procs)?;
                }
                setns(&handle, CloneFlags::CLONE_NEWNET)?;
                if let Some(gid) = gid {
                    setgroups(&groups)?;
                    setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))?;
                }
                Ok(())
            });
        }
        command
    }

    /// Runs `f` on a new thread inside the namespace. Threads it spawns stay there too.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let handle = self.handle().expect("namespace handle");
        std::thread::spawn(move || {
            setns(&handle, CloneFlags::CLONE_NEWNET).expect("enter network namespace");
            f()
        })
    }

    /// Runs `f` on a thread inside the namespace whose only group is `gid`.
    pub fn run_as_group<T: Send + 'static>(
        &self,
        gid: u32,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.run(move || {
            set_thread_ids(gid, None);
            f()
        })
    }

    /// Runs `f` on a thread inside the namespace as an unprivileged user: `uid` and `gid`, no
    /// supplementary groups, and so no capabilities. Sockets it returns keep that owner.
    pub fn run_as_user<T: Send + 'static>(
        &self,
        uid: u32,
        gid: u32,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.run(move || {
            set_thread_ids(gid, Some(uid));
            f()
        })
    }

    /// Runs `f` inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in namespace panicked")
    }
}

/// This thread's only group becomes `gid` (and its user `uid`, when given). The raw system
/// calls change this thread's credentials alone (glibc's wrappers would change every thread
/// of the test process); the thread ends with its task, so root is never needed back.
fn set_thread_ids(gid: u32, uid: Option<u32>) {
    // SAFETY: plain system calls on the current thread's credentials.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
        if let Some(uid) = uid {
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
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

/// Connects two namespaces with a veth pair named `veth0` on both sides.
pub fn link(a: &Netns, b: &Netns) {
    link_named((a, "veth0"), (b, "veth0"));
}

/// A veth pair with the given interface name at each end (a router has several).
pub fn link_named((a, a_name): (&Netns, &str), (b, b_name): (&Netns, &str)) {
    run(Command::new("ip").args([
        "link",
        "add",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]));
    a.ip(&["link", "set", a_name, "up"]);
    b.ip(&["link", "set", b_name, "up"]);
}

/// Assigns an address; IPv6 addresses skip duplicate address detection so they work at once.
pub fn address(ns: &Netns, cidr: &str) {
    address_on(ns, "veth0", cidr);
}

/// Like `address`, on interface `dev`.
pub fn address_on(ns: &Netns, dev: &str, cidr: &str) {
    if cidr.contains(':') {
        ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"]);
    } else {
        ns.ip(&["addr", "add", cidr, "dev", dev]);
    }
}

/// Deletes namespaces left by test processes that no longer run.
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

/// Runs a command to completion, panicking with its output when it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
