//! The backends that implement a policy in the kernel. Each has its own kernel objects;
//! `enable` with one removes the other's, so exactly one is ever active.

use serde::{Deserialize, Serialize};

use std::path::Path;

use crate::error::Error;
use crate::policy::Policy;
use crate::{ebpf, nftables};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// One `inet` table with a NAT chain on the output hook (nf_tables, over netlink).
    Nftables,
    /// cgroup eBPF programs that redirect at connect() (no NAT, no conntrack).
    Ebpf,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::Nftables, BackendKind::Ebpf];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Nftables => "nftables",
            BackendKind::Ebpf => "ebpf",
        }
    }

    /// Installs `policy`; `cgroup` is where the eBPF backend attaches.
    pub fn apply(self, policy: &Policy, cgroup: &Path) -> Result<(), Error> {
        match self {
            BackendKind::Nftables => nftables::apply(policy),
            BackendKind::Ebpf => ebpf::apply(policy, cgroup),
        }
    }

    /// Removes this backend's objects; `Ok(false)` when there were none.
    pub fn remove(self) -> Result<bool, Error> {
        match self {
            BackendKind::Nftables => nftables::remove(),
            BackendKind::Ebpf => ebpf::remove(),
        }
    }

    pub fn inspect(self, expected: Option<&Policy>) -> Result<Inspection, Error> {
        match self {
            BackendKind::Nftables => nftables::inspect(expected),
            BackendKind::Ebpf => ebpf::inspect(expected),
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
    /// The policy as read back from the kernel, where the backend stores it whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Kernel ids of the programs and maps found (eBPF), to check what is left behind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub program_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub map_ids: Vec<u32>,
}

impl Inspection {
    pub fn absent() -> Inspection {
        Inspection::default()
    }
}
