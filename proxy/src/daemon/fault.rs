//! Faults stay local: a bug that panics while handling one connection closes that
//! connection only. Its task unwinds (release builds keep `panic = "unwind"`), dropping the
//! connection's sockets, permit and registration; the proxy counts it, logs it with the
//! connection's id, and goes on serving every other connection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tracing::error;

use super::logging::LogSafe;
use super::metrics::Metrics;

/// Logs every panic as one line through the log, inside the span it happened in (so with
/// the connection's id), instead of the default hook's unstructured lines on stderr.
pub(crate) fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        // Our own message, but one that may quote what a peer sent.
        error!(
            "internal error{location}: {} (a bug in bip324-proxy; please report it)",
            LogSafe(message)
        );
    }));
}

/// Runs one connection's future; a panic in it ends that connection alone, counted and logged.
/// A combinator rather than an `async fn`: one taking a future by value would hold it twice
/// (as its argument and as what it awaits), doubling every connection's task.
pub(crate) fn contained(
    connection: impl Future<Output = ()>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = ()> {
    // Unwind safety: what a connection shares with others is atomics and locks that recover
    // from poisoning (the registry's); its own state is dropped with it.
    AssertUnwindSafe(connection)
        .catch_unwind()
        .map(move |result| {
            if result.is_err() {
                metrics.panicked();
                error!("closed this connection after an internal error; the others go on");
            }
        })
}

/// With the `fault-injection` feature: panics on a message named `injectpanic`.
#[cfg(feature = "fault-injection")]
pub(crate) fn inject(command: &bip324_protocol::v1::Command) {
    if command.name() == "injectpanic" {
        panic!("injected fault: a message named injectpanic");
    }
}
