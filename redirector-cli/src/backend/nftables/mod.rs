//! The nftables backend: the policy as one `inet` table, written and read over netlink
//! (nftnl + mnl), with no `nft` binary at run time.

mod fib_expr;
pub(crate) mod inbound;
pub(crate) mod netlink;
mod redirect_expr;
mod rule_text;
pub(crate) mod ruleset;

use caps::Capability;

use super::Inspection;
use crate::error::Error;
use crate::policy::Policy;
use crate::privileges;

pub(crate) const NEEDED: [Capability; 1] = [Capability::CAP_NET_ADMIN];

/// Replaces any earlier table of ours with `policy`'s, atomically.
pub(crate) fn apply(policy: &Policy) -> Result<(), Error> {
    privileges::require(&NEEDED, "bip324-redirect enable --backend nftables")?;
    netlink::send(
        &ruleset::apply_batch(policy),
        "install the nftables redirect",
    )
}

/// Removes our table; `Ok(false)` when there was none.
pub(crate) fn remove() -> Result<bool, Error> {
    privileges::require(&NEEDED, "removing the nftables redirect")?;
    let existed = netlink::table_exists(ruleset::TABLE)?;
    netlink::send(&ruleset::remove_batch(), "remove the nftables redirect")?;
    Ok(existed)
}

/// What the kernel holds, compared with what `expected` would install.
pub(crate) fn inspect(expected: Option<&Policy>) -> Result<Inspection, Error> {
    privileges::require(&NEEDED, "reading the nftables redirect")?;
    if !netlink::table_exists(ruleset::TABLE)? {
        return Ok(Inspection::absent());
    }
    let chain = netlink::chain_description(ruleset::TABLE, ruleset::CHAIN)?;
    let rules = netlink::rules(ruleset::TABLE, ruleset::CHAIN)?;
    let mut differences = Vec::new();
    let table = ruleset::table();
    let want_chain = ruleset::chain(&table);
    let want_chain_text = netlink::describe_chain(
        "nat".into(),
        libc::NF_INET_LOCAL_OUT as u32,
        ruleset::PRIORITY,
        libc::NF_ACCEPT as u32,
    );
    match &chain {
        None => differences.push(format!(
            "chain {} is missing from table {}",
            ruleset::CHAIN.to_string_lossy(),
            ruleset::TABLE.to_string_lossy()
        )),
        Some(got) if *got != want_chain_text => {
            differences.push(format!("chain is `{got}`, expected `{want_chain_text}`"));
        }
        Some(_) => {}
    }
    if let Some(policy) = expected {
        let want: Vec<(String, Vec<String>)> = ruleset::rules(&want_chain, policy)
            .into_iter()
            .map(|(purpose, rule)| (purpose, netlink::describe_rule(&rule)))
            .collect();
        differences.extend(rule_text::differences(&rules, &want));
        differences.extend(gateway_differences(&table, policy)?);
    }
    let gateway_rules = netlink::rules(ruleset::TABLE, ruleset::GATEWAY_CHAIN)?.len();
    let mut objects = vec![format!(
        "table inet {} ({} rule{})",
        ruleset::TABLE.to_string_lossy(),
        rules.len(),
        if rules.len() == 1 { "" } else { "s" }
    )];
    if gateway_rules > 0 {
        objects.push(format!("gateway chain prerouting ({gateway_rules} rules)"));
    }
    Ok(Inspection {
        present: true,
        matches: expected.map(|_| differences.is_empty()),
        details: differences,
        objects,
        ..Inspection::default()
    })
}

/// Gateway mode's chain against the policy: there exactly when the policy has sources.
fn gateway_differences(table: &nftnl::Table, policy: &Policy) -> Result<Vec<String>, Error> {
    let got_chain = netlink::chain_description(ruleset::TABLE, ruleset::GATEWAY_CHAIN)?;
    if policy.sources.is_empty() {
        return Ok(match got_chain {
            Some(_) => vec!["a gateway chain prerouting the policy does not have".into()],
            None => Vec::new(),
        });
    }
    let want_chain = netlink::describe_chain(
        "nat".into(),
        libc::NF_INET_PRE_ROUTING as u32,
        ruleset::PRIORITY,
        libc::NF_ACCEPT as u32,
    );
    let mut differences = Vec::new();
    match got_chain {
        None => differences.push(
            "the gateway chain prerouting is missing: the LAN's connections are forwarded \
             in PLAINTEXT"
                .to_string(),
        ),
        Some(got) if got != want_chain => {
            differences.push(format!("gateway chain is `{got}`, expected `{want_chain}`"));
        }
        Some(_) => {}
    }
    let chain = ruleset::gateway_chain(table);
    let want: Vec<(String, Vec<String>)> = ruleset::gateway_rules(&chain, policy)
        .into_iter()
        .map(|(purpose, rule)| (purpose, netlink::describe_rule(&rule)))
        .collect();
    let got = netlink::rules(ruleset::TABLE, ruleset::GATEWAY_CHAIN)?;
    differences.extend(rule_text::differences(&got, &want));
    Ok(differences)
}
