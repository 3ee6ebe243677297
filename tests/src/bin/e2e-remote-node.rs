//! The system test's remote host as a process of its own: an independent v2 responder
//! (rust-bitcoin's `bip324` crate, garbage and decoys everywhere they may appear) on
//! [::]:8333, relaying to a v1 echo node on loopback. `cargo xtask system-test` runs it in a
//! network namespace, so that xtask links neither the peers nor tokio.
//!
//! Usage: e2e-remote-node. Prints `listening=ADDR` once it accepts, then a line
//! `transport=v1|v2 session=HEX|- peer=ADDR` for each connection the responder has seen, in
//! order, as each ends.

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use bip324_e2e::echo::spawn_echo_node;
use bip324_e2e::responder::{Responder, Transport};
use bip324_e2e::testbed::{NODE_PORT, noisy_responder};
use bip324_e2e::v1::REGTEST_MAGIC;

fn main() -> ExitCode {
    let started = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| spawn_echo_node(l, REGTEST_MAGIC))
        .and_then(|echo| {
            // [::] accepts IPv4 too (v4-mapped), as a dual-stack node does.
            let listener = TcpListener::bind(("::", NODE_PORT))?;
            let responder = Responder::spawn(listener, noisy_responder(echo.addr()))?;
            Ok((echo, responder))
        });
    let (_echo, responder) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("e2e-remote-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening=[::]:{NODE_PORT}");
    let _ = stdout.flush();
    let mut printed = 0;
    loop {
        let reports = responder.wait_for_reports(printed + 1, Duration::from_secs(1));
        for report in reports.iter().skip(printed) {
            let transport = match report.transport {
                Transport::V1 => "v1",
                Transport::V2 => "v2",
            };
            let session = report.session_id.map_or("-".to_string(), hex::encode);
            let line = format!(
                "transport={transport} session={session} peer={}",
                report.peer
            );
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // Whoever reads the reports is gone.
                return ExitCode::SUCCESS;
            }
        }
        printed = reports.len().max(printed);
    }
}
