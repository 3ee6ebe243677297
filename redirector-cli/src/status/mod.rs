//! `bip324-redirect status`: is the redirect in place, does it match what was asked, does
//! the proxy answer, and what to do when something is wrong. Gathered from the kernel, the
//! records, the configuration files and the proxy (`gather`), judged (`judge`, and inbound
//! mode's part in `inbound`), then shown (`render`, or JSON).

mod gather;
mod inbound;
mod judge;
mod render;

use bip324_control::StatusDocument;
use serde::Serialize;

pub(crate) use self::gather::report;
pub(crate) use self::inbound::InboundView;
pub(crate) use self::render::render;
use crate::backend::{BackendKind, Inspection};
use crate::error::exit;
use crate::policy::Policy;
use crate::problem::Problem;
use crate::proxy_listener::Probe;

/// What `status` concludes about a redirect (the local one, or inbound mode's) from the
/// kernel and the record of enabling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// Enabled, in the kernel, exactly as asked.
    Active,
    /// Not enabled, nothing in the kernel.
    Disabled,
    /// Enabled, but the kernel objects are gone: clients go out directly, in plaintext.
    Vanished,
    /// Enabled, but the kernel objects differ from what was asked.
    Modified,
    /// Kernel objects exist without a record of enabling them.
    Unrecorded,
    /// The kernel could not be read.
    Unknown,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub state: Verdict,
    pub backend: Option<BackendKind>,
    pub policy: Option<Policy>,
    /// Where the eBPF backend attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<std::path::PathBuf>,
    /// What each backend found in the kernel.
    pub kernel: Vec<BackendView>,
    pub proxy: Vec<Probe>,
    /// The proxy's own report (live connections, totals), from its control socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status: Option<StatusDocument>,
    /// Why the proxy's report is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status_error: Option<String>,
    /// No proxy behind the control socket path: no socket there, or a stale one that nobody
    /// listens on (then nothing may be running).
    #[serde(skip)]
    pub control_absent: Option<std::path::PathBuf>,
    /// Inbound mode, when enabled or present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundView>,
    /// The inbound proxy's report, when it is another process (bip324-proxy-inbound.socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_proxy_status: Option<StatusDocument>,
    /// What is wrong, each with what to do (in JSON, its sentence).
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BackendView {
    pub backend: BackendKind,
    #[serde(flatten)]
    pub inspection: Inspection,
}

impl Report {
    pub(crate) fn exit_code(&self) -> u8 {
        match self.state {
            Verdict::Disabled if self.inbound.is_none() => exit::NOT_ENABLED,
            Verdict::Unknown => exit::PRIVILEGES,
            _ if !self.problems.is_empty() => exit::DEGRADED,
            _ => exit::OK,
        }
    }
}

/// Reports for the judgement's and the rendering's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::policy::Id;
    use crate::proxy_listener::ListenerView;
    use crate::state::Enabled;

    pub(crate) fn enabled() -> Enabled {
        Enabled {
            backend: BackendKind::Nftables,
            policy: Policy::new(
                Id {
                    id: 997,
                    name: Some("btc".into()),
                },
                &[8333],
                324,
                vec![],
            )
            .unwrap(),
            cgroup: None,
        }
    }

    pub(crate) fn listening(trusted: bool) -> Vec<Probe> {
        ["127.0.0.1:324", "[::1]:324"]
            .iter()
            .map(|a| Probe {
                address: a.parse().unwrap(),
                answering: trusted,
                listeners: vec![ListenerView {
                    local: a.parse().unwrap(),
                    uid: if trusted { 0 } else { 65534 },
                    user: None,
                    holders: Vec::new(),
                    trusted,
                }],
                error: None,
            })
            .collect()
    }

    /// The proxy's addresses with nobody listening or answering there.
    pub(crate) fn nobody_listening() -> Vec<Probe> {
        listening(true)
            .into_iter()
            .map(|p| Probe {
                listeners: Vec::new(),
                answering: false,
                ..p
            })
            .collect()
    }

    /// A report as `gather` makes it, from what each backend found.
    pub(crate) fn report(nftables: Option<bool>, ebpf: bool, proxy: Vec<Probe>) -> Report {
        let view = |backend, present: bool, matches: Option<bool>| BackendView {
            backend,
            inspection: Inspection {
                present,
                matches,
                details: vec!["rule 1 differs".into()],
                ..Inspection::default()
            },
        };
        Report {
            state: Verdict::Unknown,
            backend: None,
            policy: None,
            cgroup: None,
            kernel: vec![
                view(BackendKind::Nftables, nftables.is_some(), nftables),
                view(BackendKind::Ebpf, ebpf, None),
            ],
            proxy,
            proxy_status: None,
            proxy_status_error: None,
            control_absent: None,
            inbound: None,
            inbound_proxy_status: None,
            problems: Vec::new(),
        }
    }

    /// `report` judged against `enabled`.
    pub(crate) fn judged(mut report: Report, enabled: Option<&Enabled>) -> Report {
        super::judge::judge(&mut report, enabled);
        report
    }
}
