//! `bip324-redirect inbound enable|disable`, and inbound mode's part of `status`: the
//! prerouting redirect (its own nftables table) and the policy route, checked together.

use std::path::Path;

use bip324_control::{INBOUND_SOCKET, StatusDocument};
use bip324_redirect_args::{Command, InboundCommand, InboundEnableArgs};
use serde::Serialize;

use crate::backend::Inspection;
use crate::backend::nftables::inbound as table;
use crate::error::{Error, exit};
use crate::policy::InboundPolicy;
use crate::policy_route::{self, Installed};
use crate::proxy_control;
use crate::state::{self, InboundEnabled};
use crate::status::State;
use crate::{Origin, config};

pub(crate) fn enable(args: &InboundEnableArgs) -> Result<u8, Error> {
    enable_as(args, Origin::ByHand)
}

fn parse(file: &config::ConfigFile, words: &[String]) -> Result<InboundEnableArgs, Error> {
    crate::parse_options(
        file,
        words,
        |c| match c {
            Command::Inbound(InboundCommand::Enable(args)) => Some(args),
            _ => None,
        },
        &["inbound", "enable"],
    )
}

/// `inbound restore`: applies exactly /etc/bip324/inbound.conf's policy.
pub(crate) fn restore() -> Result<u8, Error> {
    let file = config::inbound();
    let Some(words) = file.options()? else {
        return Err(Error::Config(format!(
            "{} does not exist: nothing to restore (`bip324-redirect inbound enable ...` writes it)",
            file.path.display()
        )));
    };
    enable_as(&parse(&file, &words)?, Origin::Restore)
}

/// The configuration file's inbound policy; `None` without a file.
fn configured() -> Result<Option<InboundPolicy>, Error> {
    let file = config::inbound();
    let Some(words) = file.options()? else {
        return Ok(None);
    };
    let args = parse(&file, &words)?;
    InboundPolicy::new(&args.ports, args.proxy_port).map(Some)
}

fn enable_as(args: &InboundEnableArgs, origin: Origin) -> Result<u8, Error> {
    let policy = InboundPolicy::new(&args.ports, args.proxy_port)?;
    // The route first: redirected peers are then served from their first connection.
    policy_route::apply(&policy.ports)?;
    table::apply(&policy)?;
    state::save_inbound(&InboundEnabled {
        policy: policy.clone(),
    })?;
    println!("bip324-redirect: inbound enabled: {}", policy.describe());
    if origin == Origin::ByHand {
        crate::save(&config::inbound(), &policy.options(), args.no_save)?;
    }
    println!(
        "the proxy must listen there: `bip324-proxy --inbound [::]:{}` (or \
         `systemctl start bip324-proxy-inbound.socket`); check with `bip324-redirect status`",
        policy.proxy_port
    );
    Ok(exit::OK)
}

pub(crate) fn disable() -> Result<u8, Error> {
    let was_enabled = matches!(state::load_inbound(), Ok(Some(_)));
    // The redirect first: no peer is sent to the proxy once its route is gone.
    let table = table::remove()?;
    let route = policy_route::remove()?;
    state::clear_inbound()?;
    let message = match (table || route, was_enabled) {
        (true, _) => "inbound disabled: peers reach the node directly again",
        (false, true) => "inbound disabled (its kernel objects had already been removed)",
        (false, false) => "nothing to remove; inbound mode was not enabled",
    };
    println!("bip324-redirect: {message}");
    Ok(exit::OK)
}

/// Inbound mode as the kernel has it, beside what was asked.
#[derive(Debug, Serialize)]
pub(crate) struct InboundView {
    pub state: State,
    pub policy: Option<InboundPolicy>,
    pub kernel: Inspection,
    pub route: Installed,
}

impl InboundView {
    /// `None` when inbound mode is neither enabled nor present.
    pub(crate) fn gather(problems: &mut Vec<String>) -> Result<Option<InboundView>, Error> {
        let policy = state::load_inbound()?.map(|e| e.policy);
        let kernel = table::inspect(policy.as_ref())?;
        let route = policy_route::inspect()?;
        let route_present = route != Installed::default();
        let state = match &policy {
            None if !kernel.present && !route_present => return Ok(None),
            None => {
                problems.push(
                    "inbound redirect objects exist without a record of enabling them: \
                     `bip324-redirect inbound disable` removes them, `inbound enable` owns them"
                        .into(),
                );
                State::Unrecorded
            }
            Some(policy) => judge(policy, &kernel, &route, problems),
        };
        if let Some(policy) = &policy {
            if let Some(problem) = differs_from_file(policy, configured()) {
                problems.push(problem);
            }
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
) -> Option<String> {
    let path = config::inbound().path;
    match configured {
        Ok(None) => None,
        Ok(Some(file)) if &file == policy => None,
        Ok(Some(file)) => Some(format!(
            "the inbound policy applied (`{}`) is not the one in {} (`{}`), which \
             bip324-redirect-inbound.service applies after a reload of nftables.service or a \
             reboot: run `{0}` again to save it there, or `bip324-redirect inbound restore`",
            policy.enable_command(),
            path.display(),
            file.enable_command()
        )),
        Err(e) => Some(format!(
            "cannot tell whether the inbound policy is the configured one: {e}"
        )),
    }
}

fn judge(
    policy: &InboundPolicy,
    kernel: &Inspection,
    route: &Installed,
    problems: &mut Vec<String>,
) -> State {
    let again = format!("run `{}` again", policy.enable_command());
    if !kernel.present {
        problems.push(format!(
            "the inbound redirect was removed from the kernel (`nft flush ruleset`, a reload of \
             nftables.service): peers reach the node directly, in v1 only; {again}"
        ));
        return State::Vanished;
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
        return State::Active;
    }
    problems.push(format!(
        "inbound mode differs from its policy ({}): peers' connections may fail; {again}",
        differences.join("; ")
    ));
    State::Modified
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
    problems: &mut Vec<String>,
) -> Option<StatusDocument> {
    if status.is_some_and(|s| serves(s, policy.proxy_port)) {
        return None;
    }
    let separate = proxy_control::status(Path::new(INBOUND_SOCKET))
        .ok()
        .filter(|s| serves(s, policy.proxy_port));
    if separate.is_none() {
        problems.push(format!(
            "no proxy serves inbound port {0} (neither the one on the control socket nor \
             {INBOUND_SOCKET}): peers' connections to the node are refused; `systemctl start \
             bip324-proxy-inbound.socket`, or run `bip324-proxy --inbound [::]:{0}`",
            policy.proxy_port
        ));
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
            problem.contains("--ports 8333,18444") && problem.contains("inbound restore"),
            "{problem}"
        );
    }
}
