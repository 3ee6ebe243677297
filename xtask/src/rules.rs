//! Boundaries the compiler cannot see, checked by `cargo xtask lint`: what each crate may
//! depend on.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, root};

/// I/O a sans-IO protocol must never do, by crate and by module path (addresses come from
/// `core::net`, which has no sockets).
const PROTOCOL_FORBIDDEN_CRATES: [&str; 5] = ["tokio", "mio", "socket2", "getrandom", "nix"];
const PROTOCOL_FORBIDDEN_PATHS: [&str; 5] = [
    "std::net",
    "std::fs",
    "std::process",
    "std::thread",
    "std::time",
];

/// What `cargo xtask` runs as binaries and must never build into itself: the runtime, the
/// daemon and the test peers. Without them a fresh machine builds only the command lines and
/// what they need before xtask can set anything up.
const XTASK_FORBIDDEN_CRATES: [&str; 3] = ["tokio", "bip324-proxy", "bip324-e2e"];

pub(crate) fn check() -> Result {
    let xtask = dependencies("xtask")?;
    xtask_needs_no_system_library(&xtask)?;
    xtask_builds_no_runtime(&xtask)?;
    protocol_does_no_io()
}

/// The crates `package` depends on (normal and build dependencies), one name per line.
fn dependencies(package: &str) -> Result<Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    let tree = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || tree.is_empty() {
        return Err(format!("`cargo tree -p {package}` failed"));
    }
    Ok(tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// `cargo xtask` installs the system libraries, so it must build without them: nothing in its
/// dependency tree may look for one with pkg-config (the fresh-machine test proves the rest).
fn xtask_needs_no_system_library(dependencies: &[String]) -> Result {
    if dependencies.iter().any(|d| d == "pkg-config") {
        return Err(
            "xtask depends on a crate that links a system library through pkg-config: \
             `cargo xtask` could not build on a fresh machine (see `cargo tree -p xtask -i pkg-config`)"
                .into(),
        );
    }
    Ok(())
}

/// `cargo xtask` renders man pages and completions from the `*-args` crates and runs the
/// proxy and the test peers as binaries: it never links tokio, the daemon or the peers.
fn xtask_builds_no_runtime(dependencies: &[String]) -> Result {
    match dependencies
        .iter()
        .find(|d| XTASK_FORBIDDEN_CRATES.contains(&d.as_str()))
    {
        Some(bad) => Err(format!(
            "xtask depends on {bad} (see `cargo tree -p xtask -e normal,build -i {bad}`): \
             xtask takes command lines from bip324-proxy-args and bip324-redirect-args and runs \
             the proxy and the test peers as binaries, so that it builds before anything else"
        )),
        None => Ok(()),
    }
}

/// bip324-protocol takes and returns bytes: no runtime, socket, file, clock or randomness.
fn protocol_does_no_io() -> Result {
    let dependencies = dependencies("bip324-protocol")?;
    if let Some(bad) = dependencies
        .iter()
        .find(|d| PROTOCOL_FORBIDDEN_CRATES.contains(&d.as_str()))
    {
        return Err(format!(
            "bip324-protocol depends on {bad} (see `cargo tree -p bip324-protocol -i {bad}`): \
             the protocol crate does no I/O; drive it from the daemon instead"
        ));
    }
    for path in rust_files(&root().join("proxy/protocol/src"))? {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            if let Some(bad) = PROTOCOL_FORBIDDEN_PATHS.iter().find(|p| line.contains(**p)) {
                return Err(format!(
                    "{}:{}: uses {bad}: the protocol crate does no I/O",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    eprintln!(
        "==> dependency rules hold (xtask: no system library, no tokio, daemon or test peers; \
         bip324-protocol: no I/O)"
    );
    Ok(())
}

/// The `.rs` files under `dir`, in its subdirectories too.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtask_may_not_build_the_runtime_the_daemon_or_the_peers() {
        let tree = |names: &[&str]| names.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(xtask_builds_no_runtime(&tree(&["clap", "bip324-proxy-args"])).is_ok());
        for bad in XTASK_FORBIDDEN_CRATES {
            let error = xtask_builds_no_runtime(&tree(&["clap", bad])).expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
        // A crate whose name starts like a forbidden one is not it.
        assert!(xtask_builds_no_runtime(&tree(&["bip324-proxy-args", "tokio-macros"])).is_ok());
    }

    #[test]
    fn rust_files_are_found_in_subdirectories_too() {
        let files = rust_files(&root().join("xtask/src")).expect("listed");
        assert!(files.iter().any(|f| f.ends_with("package/man.rs")));
        assert!(
            files
                .iter()
                .all(|f| f.extension().is_some_and(|e| e == "rs"))
        );
    }
}
