//! Inbound mode's part of `status`: the prerouting redirect (its own nftables table) and the
//! policy route, read and judged together against the record of `inbound enable`, the
//! configuration file and the proxy that serves the inbound port.

use std::path::Path;

use bip324_control::{INBOUND_SOCKET, StatusDocument};
use serde::Serialize;

use super::Verdict;
use crate::backend::Inspection;
use crate::backend::nftables::inbound as table;
use crate::error::Error;
use crate::policy::InboundPolicy;
use crate::policy_route::{self, Installed};
use crate::problem::Problem;
use crate::{config, proxy_control, state};

/// Inbound mode as the kernel has it, beside what was asked.
#[derive(Debug, Serialize)]
pub(crate) struct InboundView {
    pub state: Verdict,
    pub policy: Option<InboundPolicy>,
    pub kernel: Inspection,
    pub route: Installed,
}

impl InboundView {
    /// `None` when inbound mode is neither enabled nor present.
    pub(crate) fn gather(problems: &mut Vec<Problem>) -> Result<Option<InboundView>, Error> {
        let policy = state::load_inbound()?.map(|e| e.policy);
        let kernel = table::inspect(policy.as_ref())?;
        let route = policy_route::inspect()?;
        let route_present = route != Installed::default();
        let state = match &policy {
            None if !kernel.present && !route_present => return Ok(None),
            None => {
                problems.push(Problem::InboundUnrecorded);
                Verdict::Unrecorded
            }
            Some(policy) => judge(policy, &kernel, &route, problems),
        };
        if let Some(policy) = &policy {
            problems.extend(differs_from_file(policy, crate::inbound::configured()));
        }
        Ok(Some(InboundView {
            state,
            policy,
            kernel,
            route,
        }))
    }
}

/// A problem when the policy applied is not the configuration file's, which the unit
/// re-applies after an nftables reload or a reboot.
fn differs_from_file(
    policy: &InboundPolicy,
    configured: Result<Option<InboundPolicy>, Error>,
) -> Option<Problem> {
    match configured {
        Ok(None) => None,
        Ok(Some(file)) if &file == policy => None,
        Ok(Some(file)) => Some(Problem::NotTheFilesPolicy {
            inbound: true,
            applied: policy.enable_command(),
            path: config::inbound().path,
            file: file.enable_command(),
        }),
        Err(e) => Some(Problem::ConfigUnreadable {
            inbound: true,
            why: e.to_string(),
        }),
    }
}

fn judge(
    policy: &InboundPolicy,
    kernel: &Inspection,
    route: &Installed,
    problems: &mut Vec<Problem>,
) -> Verdict {
    let enable = policy.enable_command();
    if !kernel.present {
        problems.push(Problem::InboundVanished { enable });
        return Verdict::Vanished;
    }
    let mut differences = kernel.details.clone();
    let mut families = vec![("IPv4", &route.v4_ports, route.v4_route)];
    if policy_route::ipv6_available() {
        families.push(("IPv6", &route.v6_ports, route.v6_route));
    }
    for (family, ports, has_route) in families {
        if *ports != policy.ports || !has_route {
            differences.push(format!(
                "the {family} policy route for the node's replies is {}",
                if has_route { "incomplete" } else { "missing" }
            ));
        }
    }
    if differences.is_empty() {
        return Verdict::Active;
    }
    problems.push(Problem::InboundModified {
        differences,
        enable,
    });
    Verdict::Modified
}

fn serves(status: &StatusDocument, port: u16) -> bool {
    status.proxy.inbound.iter().any(|addr| addr.port() == port)
}

/// The inbound proxy's report: the one of `status` when that proxy serves the policy's port
/// (a proxy run by hand with --inbound), else the inbound unit's own control socket. `None`
/// and a problem when no proxy serves it.
pub(crate) fn proxy_status(
    policy: &InboundPolicy,
    status: Option<&StatusDocument>,
    problems: &mut Vec<Problem>,
) -> Option<StatusDocument> {
    if status.is_some_and(|s| serves(s, policy.proxy_port)) {
        return None;
    }
    let separate = proxy_control::status(Path::new(INBOUND_SOCKET))
        .ok()
        .filter(|s| serves(s, policy.proxy_port));
    if separate.is_none() {
        problems.push(Problem::NoInboundProxy {
            port: policy.proxy_port,
            socket: INBOUND_SOCKET,
        });
    }
    separate
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inbound policy applied is compared with /etc/bip324/inbound.conf's, which the unit
    /// re-applies after a reload of nftables or a reboot.
    #[test]
    fn an_inbound_policy_other_than_the_files_is_a_problem() {
        let applied = InboundPolicy::new(&[8333, 18444], 325).unwrap();
        let file = InboundPolicy::new(&[8333], 325).unwrap();
        assert_eq!(differs_from_file(&applied, Ok(None)), None);
        assert_eq!(differs_from_file(&applied, Ok(Some(applied.clone()))), None);
        let problem = differs_from_file(&applied, Ok(Some(file))).unwrap();
        assert!(
            matches!(&problem, Problem::NotTheFilesPolicy { inbound: true, applied, .. }
                if applied.contains("--ports 8333,18444")),
            "{problem}"
        );
        assert!(problem.to_string().contains("inbound restore"), "{problem}");
    }
}
