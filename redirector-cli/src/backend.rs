//! The backends that implement a policy in the kernel. Each has its own kernel objects;
//! `enable` with one removes the other's, so exactly one is ever active.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::nftables;
use crate::policy::Policy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// One `inet` table with a NAT chain on the output hook (nf_tables, over netlink).
    Nftables,
}

impl BackendKind {
    pub const ALL: [BackendKind; 1] = [BackendKind::Nftables];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
        }
    }

    pub fn apply(self, policy: &Policy) -> Result<(), Error> {
        match self {
            BackendKind::Nftables => nftables::apply(policy),
        }
    }

    /// Removes this backend's objects; `Ok(false)` when there were none.
    pub fn remove(self) -> Result<bool, Error> {
        match self {
            BackendKind::Nftables => nftables::remove(),
        }
    }

    pub fn inspect(self, expected: Option<&Policy>) -> Result<Inspection, Error> {
        match self {
            BackendKind::Nftables => nftables::inspect(expected),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a backend found in the kernel.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inspection {
    /// Its objects exist.
    pub present: bool,
    /// They implement the expected policy exactly (`None`: nothing to compare with).
    pub matches: Option<bool>,
    /// What differs, in words.
    pub details: Vec<String>,
    /// The objects found, in words.
    pub objects: Vec<String>,
}

impl Inspection {
    pub fn absent() -> Inspection {
        Inspection::default()
    }
}
