//! Builds the eBPF programs into the committed object `redirector-ebpf/prebuilt/`, or checks
//! that the committed object is what this source builds (`--check`, run by `cargo xtask test`).
//!
//! The build needs the installed nightly (never updated here), its `rust-src` component, and a
//! `bpf-linker` built against that nightly's own libLLVM: `toolchain()` sets both up.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, root, step};

const BPF_LINKER_VERSION: &str = "0.13.0";
const OBJECT: &str = "redirector-ebpf/prebuilt/redirector-ebpf.bpf.o";

/// `cargo xtask ebpf [--check]`.
pub(crate) fn run(args: &[String]) -> Result {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask ebpf [--check]".into()),
    };
    toolchain()?;
    let built = build()?;
    let committed = root().join(OBJECT);
    if check {
        let same = std::fs::read(&built).ok() == std::fs::read(&committed).ok();
        if !same {
            return Err(format!(
                "{OBJECT} is not what the eBPF source builds: run `cargo xtask ebpf` and commit it"
            ));
        }
        eprintln!("==> {OBJECT} is current");
    } else {
        std::fs::copy(&built, &committed).map_err(|e| format!("copy to {OBJECT}: {e}"))?;
        eprintln!("==> wrote {OBJECT}; commit it");
    }
    Ok(())
}

/// A command for the nightly toolchain, free of the variables `cargo xtask` runs under.
pub(crate) fn nightly(program: &str) -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", "nightly", program]);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO",
    ] {
        command.env_remove(var);
    }
    command.current_dir(root());
    command
}

fn target_dir() -> PathBuf {
    root().join("target/ebpf")
}

/// `cargo +nightly <subcommand>` of the eBPF binary for the BPF target.
fn nightly_cargo(subcommand: &str, extra: &[&str]) -> Result {
    eprintln!("==> cargo +nightly {subcommand} redirector-ebpf (bpfel-unknown-none)");
    let status = nightly("cargo")
        .args([
            subcommand,
            "--locked",
            "-p",
            "redirector-ebpf",
            "--bin",
            "redirector-ebpf",
        ])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--profile",
            "bpf",
        ])
        .arg("--target-dir")
        .arg(target_dir())
        .args(extra)
        .status()
        .map_err(|e| format!("cannot run the nightly cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo +nightly {subcommand} of the eBPF programs failed"
        ))
    }
}

fn build() -> Result<PathBuf> {
    nightly_cargo("build", &[])?;
    Ok(target_dir().join("bpfel-unknown-none/bpf/redirector-ebpf"))
}

/// Clippy on the eBPF programs, which a host build leaves out.
pub(crate) fn clippy() -> Result {
    nightly_cargo("clippy", &["--", "-D", "warnings"])
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure nightly has `rust-src` and that a `bpf-linker` built against nightly's LLVM is
/// installed; never installs or updates nightly itself.
pub(crate) fn toolchain() -> Result {
    let version = output(nightly("rustc").arg("-vV")).ok_or(
        "no nightly toolchain: the eBPF programs need one (install it once with \
         `rustup toolchain install nightly`; this task never changes it)",
    )?;
    let field = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_string)
    };
    let llvm_major = field("LLVM version:")
        .and_then(|v| v.split('.').next().map(str::to_string))
        .ok_or("cannot read nightly's LLVM version")?;
    let commit = field("commit-hash:").unwrap_or_default();

    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !components.lines().any(|c| c.starts_with("rust-src")) {
        step(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }

    // bpf-linker loads nightly's libLLVM through a prefix of symlinks; the marker records
    // which nightly it was built for, so a changed nightly gets a matching linker.
    let prefix = cargo_home().join("bpf-linker-llvm");
    let marker = prefix.join("built-for");
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION} llvm {llvm_major} nightly {commit}\n");
    let works = output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if works && std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let sysroot = output(nightly("rustc").args(["--print", "sysroot"]))
        .ok_or("cannot find nightly's sysroot")?;
    link_llvm(Path::new(sysroot.trim()), &prefix)?;
    eprintln!(
        "==> building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} (about a minute)"
    );
    let status = Command::new(env!("CARGO"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !status.success() {
        return Err("installing bpf-linker failed".into());
    }
    std::fs::write(&marker, wanted).map_err(|e| format!("{}: {e}", marker.display()))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    )
}

/// `prefix/lib` with nightly's libLLVM under its own names and as plain `libLLVM.so`.
fn link_llvm(sysroot: &Path, prefix: &Path) -> Result {
    let lib = prefix.join("lib");
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::create_dir_all(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    let entries =
        std::fs::read_dir(sysroot.join("lib")).map_err(|e| format!("nightly sysroot: {e}"))?;
    let mut versioned = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") {
            std::os::unix::fs::symlink(entry.path(), lib.join(&name)).map_err(|e| e.to_string())?;
            if name.starts_with("libLLVM.so.") {
                versioned = Some(entry.path());
            }
        }
    }
    let versioned = versioned.ok_or("nightly ships no libLLVM.so.*: cannot build bpf-linker")?;
    std::os::unix::fs::symlink(versioned, lib.join("libLLVM.so")).map_err(|e| e.to_string())
}
