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
pub(crate) fn init(level: &str) -> anyhow::Result<()> {
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

/// Shows text a peer or client chose (a name, a command, an error that quotes their bytes)
/// in a log line without letting it forge one: control characters (a newline would start a
/// fake line), non-ASCII, backslashes and double quotes (which delimit tracing's quoted values)
/// come out as Rust escapes (`\n`, `\u{e9}`, `\\`, `\"`), printable ASCII as it is. An
/// apostrophe stays: our own messages have them, and nothing in a line is quoted with it.
pub(crate) struct LogSafe<T>(pub T);

impl<T: fmt::Display> fmt::Display for LogSafe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    // Printable ASCII but for the two that escapes and quoting use.
                    if matches!(c, ' '..='~') && !matches!(c, '\\' | '"') {
                        self.0.write_char(c)?;
                    } else {
                        write!(self.0, "{}", c.escape_default())?;
                    }
                }
                Ok(())
            }
        }
        fmt::write(&mut Escaping(f), format_args!("{}", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::LogSafe;

    #[test]
    fn log_safe_escapes_what_could_forge_or_hide_a_line() {
        let forged = "node.test\n2026-12-03T05:00:00Z INFO connection opened session_id=00";
        let shown = LogSafe(forged).to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert_eq!(
            shown,
            "node.test\\n2026-12-03T05:00:00Z INFO connection opened session_id=00"
        );
        assert_eq!(
            LogSafe("a\r\t\x1b[31m\0\u{7f}é\u{202e}\\\"'z").to_string(),
            "a\\r\\t\\u{1b}[31m\\u{0}\\u{7f}\\u{e9}\\u{202e}\\\\\\\"'z"
        );
        // Hostnames, addresses and our own messages pass unchanged.
        for plain in [
            "seed.bitcoin.sipa.be:8333",
            "[2001:db8::7]:8333",
            "/Satoshi:27.0.0/",
            "the peer's v1 'tx' message",
        ] {
            assert_eq!(LogSafe(plain).to_string(), plain);
        }
        assert_eq!(LogSafe(format_args!("{}", 7)).to_string(), "7");
    }
}
