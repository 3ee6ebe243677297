//! `bip324-proxy`: gives unmodified v1 Bitcoin P2P clients BIP-324 encrypted transport.
//!
//! The protocol itself (BIP-324 and v1 framing, sans-IO) is the `bip324-protocol` crate, the
//! command line the `bip324-proxy-args` crate; [`daemon`] is the tokio proxy that accepts
//! redirected connections, finds their original destination with `SO_ORIGINAL_DST`, and drives
//! the protocol between the two sockets.

mod daemon;

use std::process::ExitCode;

use clap::Parser;
use daemon::{Config, logging};

/// Buffers of this size and above are mapped on their own and unmapped when freed. glibc
/// otherwise raises this threshold as large blocks come and go, and keeps the memory of
/// finished connections: a busy hour would leave the proxy large for good. Each connection
/// reuses its buffers while it is busy, so this costs no mapping per message.
#[cfg(target_env = "gnu")]
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(target_env = "gnu"))]
fn return_large_buffers_to_the_system() {}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let config = Config::parse();
    if let Err(e) = logging::init(&config.log_level) {
        eprintln!("bip324-proxy: {e:#}");
        return ExitCode::from(2);
    }
    daemon::fault::log_panics();
    // Inbound mode's binding helper is forked while this is the only thread: a process of
    // its own keeps CAP_NET_RAW, and this one drops it at once.
    let binder = if daemon::listeners::inbound_wanted(&config.inbound) {
        match daemon::transparent::Binder::start(&config.inbound_ports) {
            Ok(binder) => Some(binder),
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    // Sockets opened and privileges given up while this is the only thread.
    let prepared = match daemon::startup::prepare(&config, binder) {
        Ok(prepared) => prepared,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config, prepared)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
