//! Errors as sentences, and the exit codes they map to (documented in `--help`).

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
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Privileges(String),
    #[error("{0}")]
    Kernel(String),
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Privileges(_) => exit::PRIVILEGES,
            Error::Kernel(_) | Error::Io(_) => exit::FAILURE,
        }
    }
}
