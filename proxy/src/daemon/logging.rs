//! Log output: plain lines on a terminal; under journald, no timestamps (the journal has
//! them) and a `<N>` priority prefix so `journalctl -p warning` works.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber. `level` applies to this crate; RUST_LOG overrides it.
pub fn init(level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(format!("warn,bip324_proxy={level}")).map_err(|_| {
            anyhow::anyhow!("invalid --log-level {level:?}: use error, warn, info, debug or trace")
        })?,
    };
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if under_journald {
        let format = Format::default()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            // The priority prefix says it, and journalctl shows it.
            .with_level(false);
        let format = JournalPriority(format);
        builder.with_ansi(false).event_format(format).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    Ok(())
}

/// Prefixes each line with its syslog priority, which journald reads from stderr.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
