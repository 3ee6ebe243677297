//! Where the cgroup v2 hierarchy and the BPF filesystem are.

use std::path::{Path, PathBuf};

use nix::sys::statfs::{BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use crate::error::Error;

/// The standard mount point of the BPF filesystem.
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// The root of the cgroup v2 hierarchy, from `/proc/self/mountinfo` (`/sys/fs/cgroup` on a
/// systemd host, `/sys/fs/cgroup/unified` in hybrid layouts).
pub(crate) fn cgroup2_root() -> Result<PathBuf, Error> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("cannot read /proc/self/mountinfo", e))?;
    cgroup2_mount_point(&mountinfo).ok_or_else(|| {
        Error::Unsupported(
            "no cgroup v2 hierarchy is mounted (needed by the eBPF backend): mount one with \
             `mount -t cgroup2 none /sys/fs/cgroup`, or use --backend nftables"
                .into(),
        )
    })
}

/// Mount point (field 5) of the first line whose filesystem type (after " - ") is cgroup2.
fn cgroup2_mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next()? == "cgroup2")
            .then(|| mount.split_whitespace().nth(4).map(unescape))?
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Checks that `path` is a cgroup v2 directory.
pub(crate) fn require_cgroup2(path: &Path) -> Result<(), Error> {
    match statfs(path) {
        Ok(fs) if fs.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(()),
        Ok(_) => Err(Error::Config(format!(
            "{} is not a cgroup v2 directory",
            path.display()
        ))),
        Err(e) => Err(Error::Config(format!(
            "cannot use cgroup {}: {e}",
            path.display()
        ))),
    }
}

/// Makes sure `dir`'s parent is on a BPF filesystem, mounting one at the standard place
/// when nothing is mounted there (systemd hosts mount it at boot; minimal systems may not).
pub(crate) fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    let parent = dir.parent().unwrap_or(dir);
    if is_bpffs(parent) {
        return Ok(());
    }
    if parent != Path::new(BPFFS) {
        return Err(Error::Config(format!(
            "{} is not on a BPF filesystem (mount -t bpf bpf {})",
            parent.display(),
            parent.display()
        )));
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::kernel(format!("mount the BPF filesystem on {BPFFS}"), e, |_| None))
}

pub(crate) fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount_point(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "29 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            cgroup2_mount_point(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_point("1 2 0:1 / / rw - ext4 /dev/vda rw"),
            None
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(
            unescape("/mnt/with\\040space"),
            PathBuf::from("/mnt/with space")
        );
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
    }
}
