//! The nftables objects of a policy: one `inet` table (IPv4 and IPv6) with one NAT chain on
//! the output hook, exemptions first, then one redirect rule per port.
//!
//! ```text
//! table inet bip324_redirect {
//!   chain output {
//!     type nat hook output priority -100; policy accept;
//!     meta skuid 105 accept
//!     meta l4proto tcp tcp dport 8333 meta skgid 1001 redirect to :1324
//!     ...
//!   }
//! }
//! ```

use std::ffi::CStr;

use nftnl::expr::Register;
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, ProtoFamily, Rule, Table, nft_expr,
};

use super::redirect_expr::Redirect;
use crate::policy::Policy;

pub(crate) const TABLE: &CStr = c"bip324_redirect";
pub(crate) const CHAIN: &CStr = c"output";
/// NAT on the output hook is accepted at -100 (dstnat); -200 and -300 are refused.
pub(crate) const PRIORITY: i32 = -100;

pub(crate) fn table() -> Table {
    Table::new(TABLE, ProtoFamily::Inet)
}

pub(crate) fn chain(table: &Table) -> Chain<'_> {
    let mut chain = Chain::new(CHAIN, table);
    chain.set_type(ChainType::Nat);
    chain.set_hook(Hook::Out, PRIORITY);
    chain.set_policy(nftnl::Policy::Accept);
    chain
}

/// The rules of `policy`, in order, each with what it is for in a user's words.
pub(crate) fn rules<'a>(chain: &'a Chain<'a>, policy: &Policy) -> Vec<(String, Rule<'a>)> {
    let exemptions = policy.exempt_users.iter().map(|user| {
        (
            format!("the exemption of user {user}"),
            exemption(chain, user.id),
        )
    });
    let redirects = policy.ports.iter().map(|&port| {
        (
            format!("the rule for port {port}"),
            redirect(chain, policy.group.id, port, policy.proxy_port),
        )
    });
    exemptions.chain(redirects).collect()
}

/// `meta skuid UID accept`: the user's connections are left alone.
fn exemption<'a>(chain: &'a Chain<'a>, uid: u32) -> Rule<'a> {
    let mut rule = Rule::new(chain);
    rule.add_expr(&nft_expr!(meta skuid));
    rule.add_expr(&nft_expr!(cmp == uid));
    rule.add_expr(&nft_expr!(verdict accept));
    rule
}

/// `meta l4proto tcp tcp dport PORT meta skgid GID redirect to :PROXY`. In an inet table
/// `tcp dport` does not imply the protocol check: it is explicit.
fn redirect<'a>(chain: &'a Chain<'a>, gid: u32, port: u16, proxy_port: u16) -> Rule<'a> {
    let mut rule = Rule::new(chain);
    rule.add_expr(&nft_expr!(meta l4proto));
    rule.add_expr(&nft_expr!(cmp == libc::IPPROTO_TCP as u8));
    rule.add_expr(&nft_expr!(payload tcp dport));
    rule.add_expr(&nft_expr!(cmp == port.to_be()));
    // The socket's filesystem gid: the primary group, never a supplementary one.
    rule.add_expr(&nft_expr!(meta skgid));
    rule.add_expr(&nft_expr!(cmp == gid));
    rule.add_expr(&nft_expr!(immediate data proxy_port.to_be()));
    rule.add_expr(&Redirect {
        port_register: Register::Reg1,
    });
    rule
}

/// Replaces whatever table of ours exists with `policy`'s, in one atomic batch: adding the
/// table first makes the delete never fail, and the kernel applies all or nothing.
pub(crate) fn apply_batch(policy: &Policy) -> FinalizedBatch {
    let table = table();
    let chain = chain(&table);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.add(&table, MsgType::Add);
    batch.add(&chain, MsgType::Add);
    for (_, rule) in rules(&chain, policy) {
        batch.add(&rule, MsgType::Add);
    }
    batch.finalize()
}

/// Removes our table; not an error when it is absent.
pub(crate) fn remove_batch() -> FinalizedBatch {
    let table = table();
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.finalize()
}

#[cfg(test)]
mod tests {
    use super::super::netlink::describe_rule;
    use super::*;
    use crate::policy::Id;

    fn policy(exempt: Vec<u32>) -> Policy {
        let exempt = exempt.into_iter().map(|id| Id { id, name: None }).collect();
        let group = Id {
            id: 1001,
            name: None,
        };
        Policy::new(group, &[8333, 18444], 1324, exempt).unwrap()
    }

    #[test]
    fn redirect_rule_compiles_like_nft() {
        let table = table();
        let chain = chain(&table);
        let rules: Vec<Rule<'_>> = rules(&chain, &policy(vec![]))
            .into_iter()
            .map(|(_, rule)| rule)
            .collect();
        assert_eq!(rules.len(), 2);
        // What `nft --debug=netlink list table` prints for `meta l4proto tcp tcp dport 8333
        // meta skgid 1001 redirect to :1324`.
        assert_eq!(
            describe_rule(&rules[0]),
            [
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ payload load 2b @ transport header + 2 => reg 1 ]",
                "[ cmp eq reg 1 0x00008d20 ]",
                "[ meta load skgid => reg 1 ]",
                "[ cmp eq reg 1 0x000003e9 ]",
                "[ immediate reg 1 0x00002c05 ]",
                "[ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]",
            ]
        );
        assert_eq!(
            describe_rule(&rules[1])[3],
            "[ cmp eq reg 1 0x00000c48 ]",
            "port 18444 = 0x480c"
        );
    }

    #[test]
    fn exemptions_come_before_redirects() {
        let table = table();
        let chain = chain(&table);
        let rules: Vec<Rule<'_>> = rules(&chain, &policy(vec![105, 0]))
            .into_iter()
            .map(|(_, rule)| rule)
            .collect();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            describe_rule(&rules[0]),
            [
                "[ meta load skuid => reg 1 ]",
                "[ cmp eq reg 1 0x00000069 ]",
                "[ immediate reg 0 accept ]",
            ]
        );
        assert_eq!(describe_rule(&rules[1])[1], "[ cmp eq reg 1 0x00000000 ]");
        assert_eq!(
            describe_rule(&rules[2])[0],
            "[ meta load l4proto => reg 1 ]"
        );
    }
}
