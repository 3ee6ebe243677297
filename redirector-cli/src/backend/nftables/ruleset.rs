//! The nftables objects of a policy: one `inet` table (IPv4 and IPv6) with one NAT chain on
//! the output hook, exemptions first, then one redirect rule per port; in gateway mode a
//! second NAT chain on the prerouting hook, one rule per source and port.
//!
//! ```text
//! table inet bip324_redirect {
//!   chain output {
//!     type nat hook output priority -100; policy accept;
//!     meta skuid 105 accept
//!     meta l4proto tcp tcp dport 8333 meta skgid 1001 fib daddr type != local redirect to :324
//!     ...
//!   }
//!   chain prerouting {
//!     type nat hook prerouting priority -100; policy accept;
//!     iifname "br-lan" tcp dport 8333 fib daddr type != local redirect to :324
//!     ip saddr 192.168.1.0/24 tcp dport 8333 fib daddr type != local redirect to :324
//!   }
//! }
//! ```
//!
//! `fib daddr type != local`: only what leaves this host (what it sends out, what the router
//! forwards), never connections to itself, which no one on the way can read.
//! While the proxy is down, a redirected connection meets a closed port and is refused: the
//! LAN's clients are never forwarded in plaintext.

use std::ffi::CStr;

use std::net::IpAddr;

use nftnl::expr::{CmpOp, Register};
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, ProtoFamily, Rule, Table, nft_expr,
};

use super::fib_expr::{FibDaddrType, RTN_LOCAL};
use super::redirect_expr::Redirect;
use crate::policy::{Policy, Source};

pub(crate) const TABLE: &CStr = c"bip324_redirect";
pub(crate) const CHAIN: &CStr = c"output";
pub(crate) const GATEWAY_CHAIN: &CStr = c"prerouting";
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

/// Gateway mode's chain, where forwarded connections are redirected.
pub(crate) fn gateway_chain(table: &Table) -> Chain<'_> {
    let mut chain = Chain::new(GATEWAY_CHAIN, table);
    chain.set_type(ChainType::Nat);
    chain.set_hook(Hook::PreRouting, PRIORITY);
    chain.set_policy(nftnl::Policy::Accept);
    chain
}

/// The output chain's rules of `policy`, in order, each with what it is for in a user's
/// words (none without a group).
pub(crate) fn rules<'a>(chain: &'a Chain<'a>, policy: &Policy) -> Vec<(String, Rule<'a>)> {
    let Some(group) = &policy.group else {
        return Vec::new();
    };
    let exemptions = policy.exempt_users.iter().map(|user| {
        (
            format!("the exemption of user {user}"),
            exemption(chain, user.id),
        )
    });
    let redirects = policy.ports.iter().map(|&port| {
        (
            format!("the rule for port {port}"),
            redirect(chain, group.id, port, policy.proxy_port),
        )
    });
    exemptions.chain(redirects).collect()
}

/// The prerouting chain's rules: one per source and port.
pub(crate) fn gateway_rules<'a>(chain: &'a Chain<'a>, policy: &Policy) -> Vec<(String, Rule<'a>)> {
    let mut rules = Vec::new();
    for source in &policy.sources {
        for &port in &policy.ports {
            let mut rule = Rule::new(chain);
            match source {
                Source::Interface(name) => add_iifname(&mut rule, CmpOp::Eq, name),
                Source::Prefix { addr, len } => add_prefix(&mut rule, *addr, *len),
            }
            let forwarded = CmpOp::Neq;
            add_redirect(&mut rule, port, forwarded, policy.proxy_port);
            rules.push((format!("the gateway rule for {source}, port {port}"), rule));
        }
    }
    rules
}

/// `iifname == NAME` or `!=`, compared over the whole interface-name field as nft does.
pub(super) fn add_iifname(rule: &mut Rule<'_>, op: CmpOp, name: &str) {
    let mut padded = [0u8; libc::IFNAMSIZ];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    rule.add_expr(&nft_expr!(meta iifname));
    rule.add_expr(&nftnl::expr::Cmp::new(op, &padded[..]));
}

/// `tcp dport PORT fib daddr type [!=] local redirect to :PROXY`: `to_this_host` is `Eq` for
/// connections to this host (inbound), `Neq` for those it forwards (gateway).
pub(super) fn add_redirect(rule: &mut Rule<'_>, port: u16, to_this_host: CmpOp, proxy_port: u16) {
    rule.add_expr(&nft_expr!(meta l4proto));
    rule.add_expr(&nft_expr!(cmp == libc::IPPROTO_TCP as u8));
    rule.add_expr(&nft_expr!(payload tcp dport));
    rule.add_expr(&nft_expr!(cmp == port.to_be()));
    rule.add_expr(&FibDaddrType {
        register: Register::Reg1,
    });
    rule.add_expr(&nftnl::expr::Cmp::new(to_this_host, RTN_LOCAL));
    rule.add_expr(&nft_expr!(immediate data proxy_port.to_be()));
    rule.add_expr(&Redirect {
        port_register: Register::Reg1,
    });
}

/// `ip saddr PREFIX` (or `ip6`), as nft compiles it: the family, then the prefix's bytes
/// when it ends on a byte, else the whole address under a mask.
fn add_prefix(rule: &mut Rule<'_>, addr: IpAddr, len: u8) {
    let (family, offset, octets) = match addr {
        IpAddr::V4(v4) => (libc::NFPROTO_IPV4 as u8, 12, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::NFPROTO_IPV6 as u8, 8, v6.octets().to_vec()),
    };
    rule.add_expr(&nft_expr!(meta nfproto));
    rule.add_expr(&nft_expr!(cmp == family));
    let len = usize::from(len);
    if len == 0 {
        return;
    }
    let bytes = if len % 8 == 0 { len / 8 } else { octets.len() };
    rule.add_expr(&nft_expr!(payload_raw nh offset, bytes as u32));
    if len % 8 != 0 {
        let mask: Vec<u8> = (0..bytes)
            .map(|i| match (i * 8, len) {
                (start, len) if start + 8 <= len => 0xff,
                (start, len) if start < len => 0xff << (8 - (len - start)),
                _ => 0,
            })
            .collect();
        rule.add_expr(&nftnl::expr::Bitwise::new(&mask[..], &vec![0u8; bytes][..]));
    }
    rule.add_expr(&nftnl::expr::Cmp::new(CmpOp::Eq, &octets[..bytes]));
}

/// `meta skuid UID accept`: the user's connections are left alone.
fn exemption<'a>(chain: &'a Chain<'a>, uid: u32) -> Rule<'a> {
    let mut rule = Rule::new(chain);
    rule.add_expr(&nft_expr!(meta skuid));
    rule.add_expr(&nft_expr!(cmp == uid));
    rule.add_expr(&nft_expr!(verdict accept));
    rule
}

/// `meta l4proto tcp tcp dport PORT meta skgid GID fib daddr type != local redirect to
/// :PROXY`. In an inet table `tcp dport` does not imply the protocol check: it is explicit.
fn redirect<'a>(chain: &'a Chain<'a>, gid: u32, port: u16, proxy_port: u16) -> Rule<'a> {
    let mut rule = Rule::new(chain);
    rule.add_expr(&nft_expr!(meta l4proto));
    rule.add_expr(&nft_expr!(cmp == libc::IPPROTO_TCP as u8));
    rule.add_expr(&nft_expr!(payload tcp dport));
    rule.add_expr(&nft_expr!(cmp == port.to_be()));
    // The socket's filesystem gid: the primary group, never a supplementary one.
    rule.add_expr(&nft_expr!(meta skgid));
    rule.add_expr(&nft_expr!(cmp == gid));
    // A node on this host (loopback or one of its own addresses) is reached directly: no
    // encryption is needed on the way, and the proxy refuses this host as a destination.
    rule.add_expr(&FibDaddrType {
        register: Register::Reg1,
    });
    rule.add_expr(&nftnl::expr::Cmp::new(CmpOp::Neq, RTN_LOCAL));
    rule.add_expr(&nft_expr!(immediate data proxy_port.to_be()));
    rule.add_expr(&Redirect {
        port_register: Register::Reg1,
    });
    rule
}

/// A batch that starts by replacing `table` with an empty one: adding it first makes the
/// delete never fail, and the kernel applies the whole batch or nothing.
pub(crate) fn replacing(table: &Table) -> Batch {
    let mut batch = Batch::new();
    batch.add(table, MsgType::Add);
    batch.add(table, MsgType::Del);
    batch.add(table, MsgType::Add);
    batch
}

/// Removes `table`; not an error when it is absent.
pub(crate) fn removing(table: &Table) -> FinalizedBatch {
    let mut batch = Batch::new();
    batch.add(table, MsgType::Add);
    batch.add(table, MsgType::Del);
    batch.finalize()
}

/// Replaces whatever table of ours exists with `policy`'s, in one atomic batch.
pub(crate) fn apply_batch(policy: &Policy) -> FinalizedBatch {
    let table = table();
    let chain = chain(&table);
    let mut batch = replacing(&table);
    batch.add(&chain, MsgType::Add);
    for (_, rule) in rules(&chain, policy) {
        batch.add(&rule, MsgType::Add);
    }
    let gateway = gateway_chain(&table);
    if !policy.sources.is_empty() {
        batch.add(&gateway, MsgType::Add);
        for (_, rule) in gateway_rules(&gateway, policy) {
            batch.add(&rule, MsgType::Add);
        }
    }
    batch.finalize()
}

/// Removes our table; not an error when it is absent.
pub(crate) fn remove_batch() -> FinalizedBatch {
    removing(&table())
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
        // What `nft --debug=netlink -f` prints for `meta l4proto tcp tcp dport 8333 meta
        // skgid 1001 fib daddr type != local redirect to :1324` (nft leaves out proto_max).
        assert_eq!(
            describe_rule(&rules[0]),
            [
                "[ meta load l4proto => reg 1 ]",
                "[ cmp eq reg 1 0x00000006 ]",
                "[ payload load 2b @ transport header + 2 => reg 1 ]",
                "[ cmp eq reg 1 0x00008d20 ]",
                "[ meta load skgid => reg 1 ]",
                "[ cmp eq reg 1 0x000003e9 ]",
                "[ fib daddr type => reg 1 ]",
                "[ cmp neq reg 1 0x00000002 ]",
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
    fn gateway_rules_compile_like_nft() {
        let table = table();
        let chain = gateway_chain(&table);
        let sources = ["br-lan", "192.168.1.0/24", "10.16.0.0/12", "fd00:1::/64"];
        let sources = vec![
            Source::interface(sources[0]).unwrap(),
            Source::prefix(sources[1]).unwrap(),
            Source::prefix(sources[2]).unwrap(),
            Source::prefix(sources[3]).unwrap(),
        ];
        let policy = Policy::new(None, &[8333], 324, vec![])
            .unwrap()
            .with_sources(sources)
            .unwrap();
        let rules: Vec<Vec<String>> = gateway_rules(&chain, &policy)
            .iter()
            .map(|(_, rule)| describe_rule(rule))
            .collect();
        // What `nft --debug=netlink` prints for `iifname "br-lan"`, `ip saddr 192.168.1.0/24`,
        // `ip saddr 10.16.0.0/12` and `ip6 saddr fd00:1::/64`, each followed by
        // `meta l4proto tcp tcp dport 8333 fib daddr type != local redirect to :324`.
        let tail = [
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x00008d20 ]",
            "[ fib daddr type => reg 1 ]",
            "[ cmp neq reg 1 0x00000002 ]",
            "[ immediate reg 1 0x00004401 ]",
            "[ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]",
        ];
        let heads: [&[&str]; 4] = [
            &[
                "[ meta load iifname => reg 1 ]",
                "[ cmp eq reg 1 0x6c2d7262 0x00006e61 0x00000000 0x00000000 ]",
            ],
            &[
                "[ meta load nfproto => reg 1 ]",
                "[ cmp eq reg 1 0x00000002 ]",
                "[ payload load 3b @ network header + 12 => reg 1 ]",
                "[ cmp eq reg 1 0x0001a8c0 ]",
            ],
            &[
                "[ meta load nfproto => reg 1 ]",
                "[ cmp eq reg 1 0x00000002 ]",
                "[ payload load 4b @ network header + 12 => reg 1 ]",
                "[ bitwise reg 1 = ( reg 1 & 0x0000f0ff ) ^ 0x00000000 ]",
                "[ cmp eq reg 1 0x0000100a ]",
            ],
            &[
                "[ meta load nfproto => reg 1 ]",
                "[ cmp eq reg 1 0x0000000a ]",
                "[ payload load 8b @ network header + 8 => reg 1 ]",
                "[ cmp eq reg 1 0x010000fd 0x00000000 ]",
            ],
        ];
        for (rule, head) in rules.iter().zip(heads) {
            let want: Vec<&str> = head.iter().chain(&tail).copied().collect();
            assert_eq!(rule, &want);
        }
        assert!(
            super::rules(&chain, &policy).is_empty(),
            "no group: no output rules"
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
