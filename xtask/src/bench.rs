//! `cargo xtask bench`: the end-to-end benchmark (root), in release builds; prints one table.
//! The microbenchmarks are `cargo bench -p bip324-protocol`.

use crate::{Result, root, setup, step};

pub(crate) fn run() -> Result {
    setup::run()?;
    if !setup::is_root() {
        return Err(
            "the end-to-end benchmark makes a network namespace and nftables rules: run as root"
                .into(),
        );
    }
    step(
        env!("CARGO"),
        &[
            "build",
            "--release",
            "-p",
            "bip324-proxy",
            "-p",
            "bip324-redirect",
            "-p",
            "bip324-e2e",
            "--bin",
            "bip324-proxy",
            "--bin",
            "bip324-redirect",
            "--bin",
            "e2e-bench",
        ],
    )?;
    let bench = root().join("target/release/e2e-bench");
    step(bench.to_str().expect("UTF-8 path"), &[])
}
