//! The policy route of inbound mode, over rtnetlink (rust-netlink, no `ip` binary).
//!
//! The proxy connects to the node on loopback as the peer, so the node answers from
//! 127.0.0.1 (or ::1) and its port to the peer's address. The main table would send that out
//! of the host, and the kernel refuses a loopback source on another device. These rules send
//! exactly those replies to a table whose only route is `local default dev lo`: they are
//! delivered here, to the proxy's socket bound to the peer's address (the kernel's
//! Documentation/networking/tproxy.rst, with the source instead of a mark as the selector).
//! Nothing else sends from loopback to a foreign address, so nothing else changes.
//!
//! ```text
//! ip rule add from 127.0.0.1 ipproto tcp sport 8333 lookup 324 pref 324
//! ip -6 rule add from ::1 ipproto tcp sport 8333 lookup 324 pref 324
//! ip route add local 0.0.0.0/0 dev lo table 324;  ip -6 route add local ::/0 dev lo table 324
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::Error;

/// The routing table, and the rules' preference (before `main`, 32766).
pub(crate) const TABLE: u32 = 324;
const PREFERENCE: u32 = 324;

const FAMILIES: [(AddressFamily, IpAddr); 2] = [
    (AddressFamily::Inet, IpAddr::V4(Ipv4Addr::LOCALHOST)),
    (AddressFamily::Inet6, IpAddr::V6(Ipv6Addr::LOCALHOST)),
];

/// What the kernel holds of ours.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Installed {
    /// Node ports with a rule, per family (IPv4 first), sorted.
    pub v4_ports: Vec<u16>,
    pub v6_ports: Vec<u16>,
    /// Whether table 324 has its `local default dev lo` route, per family.
    pub v4_route: bool,
    pub v6_route: bool,
}

/// Whether this host has IPv6 on its loopback (`ipv6.disable=1` removes it, and
/// `disable_ipv6` on `lo` refuses its routes): where it has not, IPv4 alone is routed.
pub(crate) fn ipv6_available() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
        && std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
            .map_or(true, |value| value.trim() != "1")
}

/// Replaces our rules and routes with those for `ports`.
pub(crate) fn apply(ports: &[u16]) -> Result<(), Error> {
    remove()?;
    let lo = loopback_index()?;
    let families = if ipv6_available() {
        &FAMILIES[..]
    } else {
        &FAMILIES[..1]
    };
    for &(family, source) in families {
        request(
            RouteNetlinkMessage::NewRoute(local_route(family, lo)),
            CREATE,
        )?;
        for &port in ports {
            request(
                RouteNetlinkMessage::NewRule(rule(family, source, port)),
                CREATE,
            )?;
        }
    }
    Ok(())
}

/// Removes every rule and route of ours; `Ok(true)` when there was any.
pub(crate) fn remove() -> Result<bool, Error> {
    let mut removed = false;
    for (family, _) in FAMILIES {
        for found in dump_rules(family)? {
            request(RouteNetlinkMessage::DelRule(found), 0)?;
            removed = true;
        }
        for found in dump_routes(family)? {
            request(RouteNetlinkMessage::DelRoute(found), 0)?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Our rules and routes as the kernel has them.
pub(crate) fn inspect() -> Result<Installed, Error> {
    let mut installed = Installed::default();
    for (family, source) in FAMILIES {
        let mut ports: Vec<u16> = dump_rules(family)?
            .iter()
            .filter(|rule| rule.attributes.contains(&RuleAttribute::Source(source)))
            .filter_map(|rule| {
                rule.attributes.iter().find_map(|a| match a {
                    RuleAttribute::SourcePortRange(r) if r.start == r.end => Some(r.start),
                    _ => None,
                })
            })
            .collect();
        ports.sort_unstable();
        let route = !dump_routes(family)?.is_empty();
        match family {
            AddressFamily::Inet => (installed.v4_ports, installed.v4_route) = (ports, route),
            _ => (installed.v6_ports, installed.v6_route) = (ports, route),
        }
    }
    Ok(installed)
}

const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

fn rule(family: AddressFamily, source: IpAddr, port: u16) -> RuleMessage {
    let mut rule = RuleMessage::default();
    rule.header.family = family;
    rule.header.src_len = if source.is_ipv4() { 32 } else { 128 };
    rule.header.action = RuleAction::ToTable;
    rule.attributes = vec![
        RuleAttribute::Source(source),
        RuleAttribute::Priority(PREFERENCE),
        RuleAttribute::Table(TABLE),
        RuleAttribute::IpProtocol(IpProtocol::Tcp),
        RuleAttribute::SourcePortRange(RulePortRange {
            start: port,
            end: port,
        }),
    ];
    rule
}

fn local_route(family: AddressFamily, lo: u32) -> RouteMessage {
    let mut route = RouteMessage::default();
    route.header.address_family = family;
    route.header.protocol = RouteProtocol::Boot;
    route.header.scope = RouteScope::Host;
    route.header.kind = RouteType::Local;
    route.attributes = vec![RouteAttribute::Table(TABLE), RouteAttribute::Oif(lo)];
    route
}

fn loopback_index() -> Result<u32, Error> {
    nix::net::if_::if_nametoindex("lo")
        .map_err(|e| Error::io("cannot find the loopback interface", io::Error::from(e)))
}

/// Rules with our preference and table.
fn dump_rules(family: AddressFamily) -> Result<Vec<RuleMessage>, Error> {
    let mut query = RuleMessage::default();
    query.header.family = family;
    let replies = dump(RouteNetlinkMessage::GetRule(query))?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewRule(rule) => Some(rule),
            _ => None,
        })
        .filter(|rule| {
            rule.attributes
                .contains(&RuleAttribute::Priority(PREFERENCE))
                && rule.attributes.contains(&RuleAttribute::Table(TABLE))
        })
        .collect())
}

/// Routes of our table. The kernel filters the dump by table (strict checking), so a router
/// with full routing tables is not read whole.
fn dump_routes(family: AddressFamily) -> Result<Vec<RouteMessage>, Error> {
    let mut query = RouteMessage::default();
    query.header.address_family = family;
    query.attributes = vec![RouteAttribute::Table(TABLE)];
    let replies = dump(RouteNetlinkMessage::GetRoute(query))?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(route) => Some(route),
            _ => None,
        })
        .filter(|route| {
            route.header.kind == RouteType::Local
                && route.attributes.contains(&RouteAttribute::Table(TABLE))
        })
        .collect())
}

fn socket() -> Result<Socket, Error> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| explain(&e))?;
    // Dumps honour their filters (a table); kernels without it ignore them, and the results
    // are filtered here anyway.
    let _ = socket.set_netlink_get_strict_chk(true);
    socket.bind_auto().map_err(|e| explain(&e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| explain(&e))?;
    Ok(socket)
}

fn send(socket: &Socket, message: RouteNetlinkMessage, flags: u16) -> Result<(), Error> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| explain(&e))?;
    Ok(())
}

/// Sends one change and waits for the kernel's answer.
fn request(message: RouteNetlinkMessage, flags: u16) -> Result<(), Error> {
    let socket = socket()?;
    send(&socket, message, NLM_F_ACK | flags)?;
    for reply in receive(&socket)? {
        if let NetlinkPayload::Error(error) = reply {
            return match error.code {
                None => Ok(()),
                Some(_) => Err(explain(&error.to_io())),
            };
        }
    }
    Ok(())
}

/// Runs a dump request; returns every message of the answer.
fn dump(query: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Error> {
    let socket = socket()?;
    send(&socket, query, NLM_F_DUMP)?;
    let mut found = Vec::new();
    loop {
        for reply in receive(&socket)? {
            match reply {
                NetlinkPayload::InnerMessage(message) => found.push(message),
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(error) if error.code.is_some() => {
                    return Err(explain(&error.to_io()));
                }
                _ => {}
            }
        }
    }
}

/// The messages of one datagram from the kernel.
fn receive(socket: &Socket) -> Result<Vec<NetlinkPayload<RouteNetlinkMessage>>, Error> {
    let mut buf = vec![0u8; 64 * 1024];
    let size = socket.recv(&mut &mut buf[..], 0).map_err(|e| explain(&e))?;
    let mut payloads = Vec::new();
    let mut offset = 0;
    while offset < size {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..size])
            .map_err(|e| Error::kernel("read the routing rules", e.to_string(), |_| None))?;
        let length = message.header.length as usize;
        payloads.push(message.payload);
        if length == 0 {
            break;
        }
        offset += length;
    }
    Ok(payloads)
}

fn explain(error: &io::Error) -> Error {
    let copy = error.raw_os_error().map_or_else(
        || io::Error::other(error.to_string()),
        io::Error::from_raw_os_error,
    );
    Error::kernel(
        "change the inbound policy route",
        copy,
        |errno| match errno {
            libc::EPERM | libc::EACCES => {
                Some("CAP_NET_ADMIN is needed in this network namespace: run with sudo")
            }
            libc::EINVAL | libc::EOPNOTSUPP => {
                Some("this kernel's policy routing lacks ipproto/sport rules (Linux 4.17 or later)")
            }
            _ => None,
        },
    )
}
