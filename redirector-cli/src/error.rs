//! What can go wrong, typed so that callers decide by variant (and the kernel's errors by
//! errno), each with the sentence that says what to do and the exit code it maps to
//! (documented in `--help`).

use std::io;

/// Exit codes of `bip324-redirect`.
pub(crate) mod exit {
    pub(crate) const OK: u8 = 0;
    /// The kernel refused a change, or another runtime failure.
    pub(crate) const FAILURE: u8 = 1;
    // 2: wrong command line, reported by clap itself.
    /// Missing privileges (capabilities).
    pub(crate) const PRIVILEGES: u8 = 3;
    /// Bad configuration: unknown group or user, invalid ports.
    pub(crate) const CONFIG: u8 = 4;
    /// `status`: the redirect is not enabled.
    pub(crate) const NOT_ENABLED: u8 = 5;
    /// `status`: enabled, but something is wrong (rules vanished or differ, proxy not answering).
    pub(crate) const DEGRADED: u8 = 6;
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// What was asked cannot be done as asked: the sentence says what to change.
    #[error("{0}")]
    Config(String),
    /// Capabilities are missing (checked before touching the kernel).
    #[error(
        "{action} needs {}: run it with sudo, or give it the capabilit{} (for a systemd \
         service: AmbientCapabilities={})",
        missing.join(" and "),
        if missing.len() == 1 { "y" } else { "ies" },
        missing.join(" ")
    )]
    Privileges {
        action: String,
        missing: Vec<String>,
    },
    /// The kernel refused an operation; `hint` says what to do about its errno.
    #[error("cannot {action}: {source}{hint}")]
    Kernel {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        hint: String,
    },
    /// The kernel lacks something this needs, found without a failed call.
    #[error("{0}")]
    Unsupported(String),
    /// A file or directory of ours could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Privileges { .. } => exit::PRIVILEGES,
            Error::Kernel { .. } | Error::Unsupported(_) | Error::Io { .. } => exit::FAILURE,
        }
    }

    /// A kernel refusal, with a hint chosen by the errno found among its sources.
    pub(crate) fn kernel(
        action: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        hint_for: impl Fn(i32) -> Option<&'static str>,
    ) -> Error {
        let source = source.into();
        let hint = errno(&*source)
            .and_then(hint_for)
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        Error::Kernel {
            action: action.into(),
            source,
            hint,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The errno of the first `io::Error` in `error`'s chain of sources.
pub(crate) fn errno(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(os) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(os);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("load failed")]
    struct Wrapper(#[source] io::Error);

    /// EPERM is recognised by number through the chain of sources, not by message text.
    #[test]
    fn kernel_errors_take_their_hint_from_the_errno() {
        let source = Wrapper(io::Error::from_raw_os_error(libc::EPERM));
        let error = Error::kernel("load the eBPF object", source, |errno| {
            (errno == libc::EPERM).then_some("missing CAP_BPF")
        });
        assert_eq!(
            error.to_string(),
            "cannot load the eBPF object: load failed (missing CAP_BPF)"
        );
        assert_eq!(error.exit_code(), exit::FAILURE);
        let other = Error::kernel(
            "x",
            Wrapper(io::Error::from_raw_os_error(libc::ENOENT)),
            |e| (e == libc::EPERM).then_some("never"),
        );
        assert_eq!(other.to_string(), "cannot x: load failed");
    }

    #[test]
    fn exit_codes_follow_the_variant() {
        let privileges = Error::Privileges {
            action: "enable".into(),
            missing: vec!["CAP_NET_ADMIN".into()],
        };
        assert_eq!(privileges.exit_code(), exit::PRIVILEGES);
        assert!(
            privileges
                .to_string()
                .contains("AmbientCapabilities=CAP_NET_ADMIN")
        );
        assert_eq!(Error::Config("x".into()).exit_code(), exit::CONFIG);
    }
}
