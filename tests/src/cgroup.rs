//! A cgroup v2 directory per test, and a BPF filesystem mount per test: eBPF programs are
//! attached there, so tests never touch the host's processes and never see each other.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Each test's cgroup and bpffs are named `PREFIX<pid>-<n>`.
const PREFIX: &str = "b324e2e-";

fn unique(label: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{label}", std::process::id())
}

/// The cgroup v2 mount point, from /proc/self/mountinfo (never hard-coded: it is
/// /sys/fs/cgroup/unified on hybrid hosts).
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mount_point = mount.split_whitespace().nth(4)?;
            (fs.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// A child cgroup of the cgroup v2 root, removed on drop once its processes are gone.
pub struct Cgroup {
    path: PathBuf,
    procs: CString,
}

impl Cgroup {
    pub fn create(label: &str) -> Cgroup {
        let root = cgroup2_root();
        remove_stale(&root);
        let path = root.join(unique(label));
        if let Err(e) = std::fs::create_dir(&path) {
            // A test process of the same pid left it (pids are reused): empty, it goes.
            let taken_over = e.kind() == std::io::ErrorKind::AlreadyExists
                && std::fs::remove_dir(&path).is_ok()
                && std::fs::create_dir(&path).is_ok();
            assert!(taken_over, "create cgroup {}: {e}", path.display());
        }
        let procs = CString::new(
            path.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        Cgroup { path, procs }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling process into this cgroup. Only system calls: safe between fork
    /// and exec.
    pub fn join_from_child(procs: &CString) -> std::io::Result<()> {
        // SAFETY: `procs` is a valid C string; open/write/close are async-signal-safe.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn procs_file(&self) -> CString {
        self.procs.clone()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes killed a moment ago may still be leaving.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes the cgroups of test processes that no longer run. A cgroup whose processes were
/// still leaving when its test ended outlives it; only an empty one can be removed, and a
/// live test's never is.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// A BPF filesystem mounted on a directory of its own; unmounting it drops every pin in it.
pub struct BpfMount {
    path: PathBuf,
}

impl BpfMount {
    pub fn create() -> BpfMount {
        let path = std::env::temp_dir().join(unique("bpffs"));
        std::fs::create_dir(&path).expect("bpffs mount point");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t bpf failed");
        BpfMount { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}
