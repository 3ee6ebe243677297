//! Inbound mode's table: peers' connections to the node's ports, arriving from other hosts
//! for an address of this host, go to the proxy's inbound listener. A table of its own, so
//! that the outbound backends (which replace or remove `bip324_redirect`) never touch it.
//!
//! ```text
//! table inet bip324_inbound {
//!   chain prerouting {
//!     type nat hook prerouting priority -100; policy accept;
//!     iifname != "lo" meta l4proto tcp tcp dport 8333 fib daddr type local redirect to :325
//!   }
//! }
//! ```
//!
//! `fib daddr type local` leaves forwarded traffic alone (a router's LAN clients reaching
//! other nodes); `iifname != "lo"` leaves this host's own connections to its node alone.

use std::ffi::CStr;

use nftnl::expr::CmpOp;
use nftnl::{Chain, ChainType, Hook, MsgType, ProtoFamily, Rule, Table};

use super::{netlink, rule_text, ruleset};
use crate::backend::Inspection;
use crate::error::Error;
use crate::policy::InboundPolicy;
use crate::privileges;

pub(crate) const TABLE: &CStr = c"bip324_inbound";
const CHAIN: &CStr = c"prerouting";
/// dstnat: where NAT on the prerouting hook belongs.
const PRIORITY: i32 = -100;

fn table() -> Table {
    Table::new(TABLE, ProtoFamily::Inet)
}

fn chain(table: &Table) -> Chain<'_> {
    let mut chain = Chain::new(CHAIN, table);
    chain.set_type(ChainType::Nat);
    chain.set_hook(Hook::PreRouting, PRIORITY);
    chain.set_policy(nftnl::Policy::Accept);
    chain
}

/// One rule per node port, with what it is for.
fn rules<'a>(chain: &'a Chain<'a>, policy: &InboundPolicy) -> Vec<(String, Rule<'a>)> {
    policy
        .ports
        .iter()
        .map(|&port| {
            let mut rule = Rule::new(chain);
            ruleset::add_iifname(&mut rule, CmpOp::Neq, "lo");
            ruleset::add_redirect(&mut rule, port, CmpOp::Eq, policy.proxy_port);
            (format!("the inbound rule for port {port}"), rule)
        })
        .collect()
}

/// Replaces any earlier inbound table with `policy`'s, atomically.
pub(crate) fn apply(policy: &InboundPolicy) -> Result<(), Error> {
    privileges::require(&super::NEEDED, "bip324-redirect inbound enable")?;
    let table = table();
    let chain = chain(&table);
    let mut batch = ruleset::replacing(&table);
    batch.add(&chain, MsgType::Add);
    for (_, rule) in rules(&chain, policy) {
        batch.add(&rule, MsgType::Add);
    }
    netlink::send(&batch.finalize(), "install the inbound redirect")
}

/// Removes the inbound table; `Ok(false)` when there was none.
pub(crate) fn remove() -> Result<bool, Error> {
    privileges::require(&super::NEEDED, "removing the inbound redirect")?;
    let existed = netlink::table_exists(TABLE)?;
    netlink::send(&ruleset::removing(&table()), "remove the inbound redirect")?;
    Ok(existed)
}

/// What the kernel holds, compared with what `expected` would install.
pub(crate) fn inspect(expected: Option<&InboundPolicy>) -> Result<Inspection, Error> {
    privileges::require(&super::NEEDED, "reading the inbound redirect")?;
    if !netlink::table_exists(TABLE)? {
        return Ok(Inspection::absent());
    }
    let mut differences = Vec::new();
    let want_chain = netlink::describe_chain(
        "nat".into(),
        libc::NF_INET_PRE_ROUTING as u32,
        PRIORITY,
        libc::NF_ACCEPT as u32,
    );
    match netlink::chain_description(TABLE, CHAIN)? {
        None => differences.push("the chain prerouting is missing".to_string()),
        Some(got) if got != want_chain => {
            differences.push(format!("chain is `{got}`, expected `{want_chain}`"));
        }
        Some(_) => {}
    }
    let got = netlink::rules(TABLE, CHAIN)?;
    if let Some(policy) = expected {
        let table = table();
        let chain = chain(&table);
        let want: Vec<(String, Vec<String>)> = rules(&chain, policy)
            .into_iter()
            .map(|(purpose, rule)| (purpose, netlink::describe_rule(&rule)))
            .collect();
        differences.extend(rule_text::differences(&got, &want));
    }
    Ok(Inspection {
        present: true,
        matches: expected.map(|_| differences.is_empty()),
        details: differences,
        objects: vec![format!(
            "table inet {} ({} rule{})",
            TABLE.to_string_lossy(),
            got.len(),
            if got.len() == 1 { "" } else { "s" }
        )],
        ..Inspection::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_rule_compiles_like_nft() {
        let table = table();
        let chain = chain(&table);
        let policy = InboundPolicy::new(&[18444], 325).unwrap();
        let rules = rules(&chain, &policy);
        // What `nft --debug=netlink` prints for `iifname != "lo" meta l4proto tcp tcp dport
        // 18444 fib daddr type local redirect to :325` (the kernel also reports proto_max).
        assert_eq!(
            netlink::describe_rule(&rules[0].1),
            [
                "[ meta load iifname => reg 1 ]",
                "[ cmp neq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ]",
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ payload load 2b @ transport header + 2 => reg 1 ]",
                "[ cmp eq reg 1 0x00000c48 ]",
                "[ fib daddr type => reg 1 ]",
                "[ cmp eq reg 1 0x00000002 ]",
                "[ immediate reg 1 0x00004501 ]",
                "[ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]",
            ]
        );
        assert_eq!(
            rule_text::rule_text(&netlink::describe_rule(&rules[0].1)),
            "iifname != \"lo\" tcp dport 18444 fib daddr type local redirect to :325"
        );
    }
}
