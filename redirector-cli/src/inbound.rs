//! `bip324-redirect inbound enable|disable|restore`: the prerouting redirect of peers'
//! connections to the proxy (its own nftables table) and the policy route of the node's
//! replies, installed and removed together. `status` reports them (status/inbound.rs).

use bip324_redirect_args::{Command, InboundCommand, InboundEnableArgs};

use crate::backend::nftables::inbound as table;
use crate::error::{Error, exit};
use crate::policy::InboundPolicy;
use crate::policy_route;
use crate::state::{self, InboundEnabled};
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
pub(crate) fn configured() -> Result<Option<InboundPolicy>, Error> {
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

/// For `disable`, which removes the outbound redirect only: a sentence when inbound mode is
/// still enabled (its record) or still in the kernel (its table or policy route), with the
/// command that removes it. Reading the kernel fails without privileges: then the record
/// alone tells.
pub(crate) fn left_enabled() -> Option<String> {
    let recorded = state::load_inbound().ok().flatten().map(|e| e.policy);
    let in_kernel = table::inspect(None).is_ok_and(|i| i.present)
        || policy_route::inspect().is_ok_and(|r| r != policy_route::Installed::default());
    left_enabled_note(recorded.as_ref(), in_kernel)
}

fn left_enabled_note(recorded: Option<&InboundPolicy>, in_kernel: bool) -> Option<String> {
    const REMOVE: &str = "`bip324-redirect inbound disable` removes it";
    match (recorded, in_kernel) {
        (Some(policy), _) => {
            let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
            Some(format!(
                "inbound mode is still enabled (peers' connections to port{} {} of this host \
                 go to the proxy's port {}); {REMOVE}",
                if ports.len() == 1 { "" } else { "s" },
                ports.join(","),
                policy.proxy_port
            ))
        }
        (None, true) => Some(format!(
            "inbound mode's redirect is still in the kernel (without a record of enabling \
             it); {REMOVE}"
        )),
        (None, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `disable` leaves inbound mode alone, and says so when it is there.
    #[test]
    fn disable_names_an_inbound_mode_left_enabled() {
        let policy = InboundPolicy::new(&[8333], 325).unwrap();
        let note = left_enabled_note(Some(&policy), true).unwrap();
        assert!(
            note.contains("port 8333 of this host go to the proxy's port 325")
                && note.ends_with("`bip324-redirect inbound disable` removes it"),
            "{note}"
        );
        assert_eq!(left_enabled_note(Some(&policy), false), Some(note));
        let unrecorded = left_enabled_note(None, true).unwrap();
        assert!(unrecorded.contains("inbound disable"), "{unrecorded}");
        assert_eq!(left_enabled_note(None, false), None);
    }
}
