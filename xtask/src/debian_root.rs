//! Debian bookworm roots made with debootstrap, kept pristine under `target/` and copied for
//! each run, so a run never sees what an earlier one installed.

use std::path::{Path, PathBuf};

use crate::{Result, step};

const MIRROR: &str = "http://deb.debian.org/debian";

/// A minbase bookworm root with `include` (comma-separated packages), made once and kept as
/// `work/bookworm`; `marker` is a file that only a finished root has.
pub(crate) fn pristine(work: &Path, include: &str, marker: &str) -> Result<PathBuf> {
    let pristine = work.join("bookworm");
    if pristine.join(marker).exists() {
        return Ok(pristine);
    }
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let tmp = work.join("bookworm.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    step(
        "debootstrap",
        &[
            "--variant=minbase",
            &format!("--include={include}"),
            "bookworm",
            path(&tmp),
            MIRROR,
        ],
    )?;
    std::fs::rename(&tmp, &pristine).map_err(|e| e.to_string())?;
    Ok(pristine)
}

/// A fresh copy of `pristine` at `work/run`, removed on drop.
pub(crate) fn copy(pristine: &Path, work: &Path) -> Result<Scratch> {
    let run = work.join("run");
    Scratch::remove(&run);
    step("cp", &["-a", path(pristine), path(&run)])?;
    Ok(Scratch(run))
}

/// A copied root, deleted on drop unless something is still mounted inside it (deleting
/// through a bind mount would delete the mounted files).
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    fn remove(dir: &Path) {
        if !dir.exists() {
            return;
        }
        if let Some(mount) = mounted_under(dir) {
            eprintln!(
                "warning: {} is not removed: {mount} is still mounted inside it",
                dir.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        Scratch::remove(&self.0);
    }
}

/// A mount point at or below `dir`, in this process's mount namespace.
fn mounted_under(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .find(|point| Path::new(point).starts_with(&dir))
        .map(str::to_string)
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
