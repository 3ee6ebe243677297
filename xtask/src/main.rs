//! Developer tasks: `cargo xtask <setup|test|run|lint>`.
//!
//! Each task sets up what it needs first, so a fresh Debian 12 machine goes from clone to
//! result with one command.

mod bench;
mod debian_root;
mod ebpf;
mod fresh_machine;
mod fuzz;
mod package;
mod rules;
mod setup;
mod system_test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use setup::Need;

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  setup        install what building and testing need: Debian packages (as root), nightly's
               rust-src and a bpf-linker matching nightly's LLVM (nightly itself is never
               installed or updated)
  test         setup, check that the committed eBPF object is current, build, then run every
               tier (root): tier 1, what `cargo test` runs as any user (unit, BIP-324
               vectors, interop); tier 2, the end-to-end tests in network namespaces for both
               redirect backends, the fuzz targets briefly, the package in systemd
  bench        the end-to-end benchmark (release, root): bulk throughput per core, round
               trips, handshakes and memory per idle connection, each beside its bound
               (microbenchmarks: cargo bench -p bip324-protocol)
  fuzz [--seconds N] [TARGET...]
               run the fuzz targets of fuzz/ (cargo-fuzz, nightly) for N seconds each (30)
  package      setup (what a build needs: as run), build the Debian package for this machine's
               architecture (target/debian/bip324-redirect_VERSION_ARCH.deb)
  system-test  the package in a real systemd: debootstrap a bookworm root, boot it with
               systemd-nspawn, install the package, enable the units, run a v1 client in
               group btc against an independent v2 node, then stop, restart and purge (root)
  fresh-machine
               the README's first command, `cargo xtask package`, then `cargo xtask run`, in a
               Debian bookworm root that has only what a fresh machine has (the host's Rust
               mounted read-only): passes when the package is named and labelled for this
               machine's architecture, the proxy listens, and `cargo xtask setup` then
               installs what the tests need (root)
  ebpf [--check]
               rebuild redirector-ebpf/prebuilt/redirector-ebpf.bpf.o from source (nightly,
               bpf-linker), or check that the committed one is what the source builds
  run [ARGS]   setup (what a build needs), build the release proxy, and run it in the foreground
               (ARGS go to bip324-proxy; try `cargo xtask run -- --help`)
  lint         rustfmt and clippy, warnings as errors
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run().and_then(|()| ebpf::toolchain()),
        Some("ebpf") => ebpf::run(&args[1..]),
        // The same set-up as `run`: a fresh machine goes from clone to package in one command.
        Some("package") => setup::run_for(Need::Build).and_then(|()| package::run().map(|_| ())),
        Some("bench") => bench::run(),
        Some("fuzz") => ebpf::toolchain().and_then(|()| fuzz::run(&args[1..])),
        Some("system-test") => setup::run().and_then(|()| system_test::run()),
        Some("fresh-machine") => setup::run().and_then(|()| fresh_machine::run()),
        Some("test") => test(),
        Some("run") => run_proxy(&args[1..]),
        Some("lint") => lint(),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it first.
pub fn step(program: &str, args: &[&str]) -> Result {
    eprintln!("==> {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn cargo(args: &[&str]) -> Result {
    step(env!("CARGO"), args)
}

/// Every test tier (docs/development.md, "Test tiers"): tier 1 is what a plain `cargo test`
/// at the root runs as any user; tier 2 the suites that need root, which live outside the
/// workspace's default members so that `cargo test` never meets them, and which fail rather
/// than skip when run without root.
fn test() -> Result {
    setup::run()?;
    if !setup::is_root() {
        return Err(
            "tier 2 (the end-to-end tests, the package in systemd) creates network \
             namespaces, nftables rules and containers: run as root (tier 1 alone, as any \
             user: `cargo test`)"
                .into(),
        );
    }
    // The CLI embeds the committed eBPF object: it must be what this source builds.
    ebpf::run(&["--check".to_string()])?;
    // The end-to-end tests run the real binaries: build them before the tests. The fault
    // test's proxy first, as a binary of its own, then the real one over it.
    fault_injection_proxy()?;
    cargo(&["build", "--workspace", "--bins"])?;

    tier(
        1,
        "units, BIP-324 vectors, interop, the proxy's own binaries: `cargo test`, as any user",
    );
    // The BIP-324 vector test prints how many rows of each file ran.
    cargo(&[
        "test",
        "-p",
        "bip324-protocol",
        "--test",
        "bip324_vectors",
        "--",
        "--nocapture",
    ])?;
    // The workspace's default members: exactly what `cargo test` at the root runs.
    cargo(&["test", "--no-fail-fast"])?;

    tier(
        2,
        "end to end in network namespaces, both redirect backends; fuzzing; the package (root)",
    );
    cargo(&["test", "-p", "bip324-e2e", "--no-fail-fast"])?;
    // A short run of every fuzz target; longer runs are documented in fuzz/README.md.
    fuzz::run(&[])?;
    // The package in a real systemd: about a minute, a little more the first time.
    system_test::run()?;
    // The README's first command where nothing was installed by hand: a few minutes.
    fresh_machine::run()
}

/// `target/debug/bip324-proxy-fault-injection`: the proxy with its `fault-injection` feature,
/// for the test that shows a panic stays in its connection. No package ever holds it.
fn fault_injection_proxy() -> Result {
    cargo(&[
        "build",
        "-p",
        "bip324-proxy",
        "--features",
        "fault-injection",
    ])?;
    let debug = root().join("target/debug");
    std::fs::copy(
        debug.join("bip324-proxy"),
        debug.join("bip324-proxy-fault-injection"),
    )
    .map(drop)
    .map_err(|e| format!("cannot copy the fault-injection proxy: {e}"))
}

/// Says which tier the steps below belong to.
fn tier(n: u8, what: &str) {
    eprintln!("\n==== test tier {n}: {what}\n");
}

fn run_proxy(args: &[String]) -> Result {
    setup::run_for(Need::Build)?;
    cargo(&["build", "--release", "-p", "bip324-proxy"])?;
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--")
        .collect();
    let binary = root().join("target/release/bip324-proxy");
    step(binary.to_str().expect("UTF-8 path"), &args)
}

fn lint() -> Result {
    rules::check()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The eBPF programs only exist for the BPF target: a host build leaves them out.
    ebpf::toolchain()?;
    ebpf::clippy()
}
