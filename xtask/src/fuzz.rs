//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the fuzz targets of `fuzz/` with
//! cargo-fuzz (nightly, AddressSanitizer) and prints one line of figures per target.

use std::process::Command;

use crate::{Result, ebpf, root};

const CARGO_FUZZ_VERSION: &str = "0.13.2";
pub(crate) const TARGETS: [&str; 11] = [
    "v2_decoder_raw",
    "v2_decoder_packets",
    "initiator_handshake",
    "v1_encoder",
    "message_type",
    "v1_rewrite",
    "responder_handshake",
    "peer_hello",
    "socks5_negotiation",
    "key_prefix",
    "resume",
];

pub(crate) fn run(args: &[String]) -> Result {
    let mut seconds = 30u64;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            seconds = args
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or("--seconds needs a number")?;
        } else if TARGETS.contains(&arg.as_str()) {
            targets.push(arg.as_str());
        } else {
            return Err(format!(
                "unknown fuzz target {arg}; targets: {}",
                TARGETS.join(", ")
            ));
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    install_cargo_fuzz()?;
    let mut summary = Vec::new();
    for target in targets {
        eprintln!("==> fuzzing {target} for {seconds}s");
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        let out = ebpf::nightly("cargo")
            .current_dir(root().join("fuzz"))
            .args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .output()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("    {line}");
            }
            return Err(format!(
                "fuzz target {target} failed: the crashing input is in fuzz/artifacts/{target}/"
            ));
        }
        // libFuzzer's last status line: "#N DONE cov: C ft: F corp: ... exec/s: E ...".
        let done = log
            .lines()
            .rev()
            .find(|l| l.contains("DONE"))
            .unwrap_or("(no summary)");
        summary.push(format!("{target:<20} {done}"));
    }
    eprintln!("==> fuzzing summary (runs, edge coverage, features, corpus, speed):");
    for line in summary {
        eprintln!("    {line}");
    }
    Ok(())
}

fn install_cargo_fuzz() -> Result {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if installed {
        return Ok(());
    }
    crate::step(
        env!("CARGO"),
        &[
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ],
    )
}
