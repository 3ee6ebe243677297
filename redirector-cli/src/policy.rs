//! The redirect policy: who is redirected (a group's local processes, and in gateway mode the
//! connections a router forwards from its LAN), which ports, to which proxy port, and who is
//! exempt. Every backend implements this same value, or says it cannot.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// More ports than any set of Bitcoin networks needs; keeps the rule set small.
const MAX_PORTS: usize = 32;

/// A group or user, by number, with the name it had when the policy was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Id {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Policy {
    /// Connections of sockets whose owner's primary group is this one are redirected.
    pub group: Option<Id>,
    /// Gateway mode: connections forwarded from these interfaces or prefixes are redirected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    /// Destination TCP ports that are redirected, sorted, without duplicates.
    pub ports: Vec<u16>,
    /// Where the proxy listens, on 127.0.0.1 and [::1].
    pub proxy_port: u16,
    /// Users never redirected, whatever their group (the proxy's own user, typically).
    pub exempt_users: Vec<Id>,
}

impl Policy {
    pub(crate) fn new(
        group: impl Into<Option<Id>>,
        ports: &[u16],
        proxy_port: u16,
        exempt_users: Vec<Id>,
    ) -> Result<Policy, Error> {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            return Err(Error::Config("--ports needs at least one port".into()));
        }
        if ports.len() > MAX_PORTS {
            return Err(Error::Config(format!(
                "at most {MAX_PORTS} ports can be redirected"
            )));
        }
        if ports.contains(&0) || proxy_port == 0 {
            return Err(Error::Config(
                "port 0 cannot be redirected or proxied to".into(),
            ));
        }
        if ports.contains(&proxy_port) {
            return Err(Error::Config(format!(
                "--proxy-port {proxy_port} is also in --ports: the proxy's connections to that \
                 port would be redirected back to it; choose a proxy port outside --ports"
            )));
        }
        Ok(Policy {
            group: group.into(),
            sources: Vec::new(),
            ports,
            proxy_port,
            exempt_users,
        })
    }

    /// Adds gateway mode's sources; a policy redirects a group, sources, or both.
    pub(crate) fn with_sources(mut self, sources: Vec<Source>) -> Result<Policy, Error> {
        if self.group.is_none() && sources.is_empty() {
            return Err(Error::Config(
                "say whose connections to redirect: --group (local processes), or \
                 --from-interface / --from (what a router forwards from its LAN)"
                    .into(),
            ));
        }
        self.sources = sources;
        Ok(self)
    }

    /// The command that (re)installs this policy.
    pub(crate) fn enable_command(&self, backend: &str) -> String {
        format!("bip324-redirect enable {}", self.options(backend).join(" "))
    }

    /// The options of `enable` that make this policy, one word each (as the configuration
    /// file holds them).
    pub(crate) fn options(&self, backend: &str) -> Vec<String> {
        let name = |id: &Id| id.name.clone().unwrap_or_else(|| id.id.to_string());
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut words = Vec::new();
        if let Some(group) = &self.group {
            words.extend(["--group".to_string(), name(group)]);
        }
        for source in &self.sources {
            words.extend(source.option().split(' ').map(str::to_string));
        }
        words.extend([
            "--ports".to_string(),
            ports.join(","),
            "--proxy-port".to_string(),
            self.proxy_port.to_string(),
        ]);
        for user in &self.exempt_users {
            words.extend(["--exempt-user".to_string(), name(user)]);
        }
        words.extend(["--backend".to_string(), backend.to_string()]);
        words
    }

    /// One sentence for humans.
    pub(crate) fn describe(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let ports = format!(
            "port{} {}",
            if ports.len() == 1 { "" } else { "s" },
            ports.join(",")
        );
        let mut parts = Vec::new();
        if let Some(group) = &self.group {
            let mut text = format!(
                "TCP connections to {ports} from processes whose primary group is {group} go \
                 to the proxy on 127.0.0.1/[::1] port {}",
                self.proxy_port
            );
            if !self.exempt_users.is_empty() {
                let users: Vec<String> = self.exempt_users.iter().map(Id::to_string).collect();
                text.push_str(&format!(", except those of user {}", users.join(", ")));
            }
            parts.push(text);
        }
        if !self.sources.is_empty() {
            let sources: Vec<String> = self.sources.iter().map(Source::to_string).collect();
            parts.push(format!(
                "TCP connections to {ports} forwarded from {} go to the proxy on this \
                 router's address, port {}",
                sources.join(", "),
                self.proxy_port
            ));
        }
        parts.join("; ")
    }
}

/// Inbound mode: peers' connections to these ports of this host go to the proxy's inbound
/// listener, which relays them to the local node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InboundPolicy {
    /// The node's listening ports, sorted, without duplicates.
    pub ports: Vec<u16>,
    /// The proxy's inbound port (`bip324-proxy --inbound [::]:PORT`).
    pub proxy_port: u16,
}

impl InboundPolicy {
    pub(crate) fn new(ports: &[u16], proxy_port: u16) -> Result<InboundPolicy, Error> {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() || ports.len() > MAX_PORTS {
            return Err(Error::Config(format!(
                "--ports takes 1 to {MAX_PORTS} of the node's listening ports"
            )));
        }
        if ports.contains(&0) || proxy_port == 0 {
            return Err(Error::Config(
                "port 0 cannot be redirected or proxied to".into(),
            ));
        }
        if ports.contains(&proxy_port) {
            return Err(Error::Config(format!(
                "--proxy-port {proxy_port} is also a node port in --ports; choose another"
            )));
        }
        Ok(InboundPolicy { ports, proxy_port })
    }

    /// The command that (re)installs this policy.
    pub(crate) fn enable_command(&self) -> String {
        format!(
            "bip324-redirect inbound enable {}",
            self.options().join(" ")
        )
    }

    /// The options of `inbound enable` that make this policy.
    pub(crate) fn options(&self) -> Vec<String> {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        vec![
            "--ports".into(),
            ports.join(","),
            "--proxy-port".into(),
            self.proxy_port.to_string(),
        ]
    }

    /// One sentence for humans.
    pub(crate) fn describe(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        format!(
            "TCP connections from other hosts to port{} {} of this host go to the proxy's \
             inbound port {}, which relays them to the node on loopback as the peer itself",
            if ports.len() == 1 { "" } else { "s" },
            ports.join(","),
            self.proxy_port
        )
    }
}

/// Gateway mode: where forwarded connections come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    /// Arriving on this interface.
    Interface(String),
    /// From this source prefix (host bits zero).
    Prefix { addr: IpAddr, len: u8 },
}

impl Source {
    pub(crate) fn interface(name: &str) -> Result<Source, Error> {
        // IFNAMSIZ - 1, and no characters the kernel refuses.
        let valid = !name.is_empty()
            && name.len() < 16
            && !name.contains(['/', ':'])
            && !name.chars().any(char::is_whitespace);
        if !valid {
            return Err(Error::Config(format!(
                "--from-interface {name:?} is not an interface name"
            )));
        }
        Ok(Source::Interface(name.to_string()))
    }

    /// `192.168.1.0/24`, `fd00:1::/64`; an address alone is a host.
    pub(crate) fn prefix(text: &str) -> Result<Source, Error> {
        let bad = || {
            Error::Config(format!(
                "--from {text:?} is not a prefix (192.168.1.0/24, fd00:1::/64)"
            ))
        };
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Source::Prefix {
            addr: masked(addr, len),
            len,
        })
    }

    /// How `enable` is told about it.
    fn option(&self) -> String {
        match self {
            Source::Interface(name) => format!("--from-interface {name}"),
            Source::Prefix { .. } => format!("--from {self}"),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Interface(name) => write!(f, "interface {name}"),
            Source::Prefix { addr, len } => write!(f, "{addr}/{len}"),
        }
    }
}

/// `addr` with every bit past `len` cleared.
fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Resolves a group given by name or number.
pub(crate) fn resolve_group(group: &str) -> Result<Id, Error> {
    use nix::unistd::{Gid, Group};
    let found = |g: Option<Group>| g.map(|g| (g.gid.as_raw(), g.name));
    resolve(
        "group",
        group,
        |gid| Group::from_gid(Gid::from_raw(gid)).map(found),
        |name| Group::from_name(name).map(found),
        &format!(": create it with `groupadd --system {group}`"),
    )
}

/// Resolves a user given by name or number.
pub(crate) fn resolve_user(user: &str) -> Result<Id, Error> {
    use nix::unistd::{Uid, User};
    let found = |u: Option<User>| u.map(|u| (u.uid.as_raw(), u.name));
    resolve(
        "user",
        user,
        |uid| User::from_uid(Uid::from_raw(uid)).map(found),
        |name| User::from_name(name).map(found),
        "",
    )
}

/// A name is looked up; a number is looked up too, but a number without a name (in
/// /etc/group or /etc/passwd) still names an id the kernel can match.
fn resolve(
    kind: &str,
    text: &str,
    by_id: impl FnOnce(u32) -> nix::Result<Option<(u32, String)>>,
    by_name: impl FnOnce(&str) -> nix::Result<Option<(u32, String)>>,
    missing_hint: &str,
) -> Result<Id, Error> {
    let number = text.parse::<u32>().ok();
    let lookup = match number {
        Some(id) => by_id(id),
        None => by_name(text),
    };
    match (lookup, number) {
        (Ok(Some((id, name))), _) => Ok(Id {
            id,
            name: Some(name),
        }),
        (Ok(None), Some(id)) => Ok(Id { id, name: None }),
        (Ok(None), None) => Err(Error::Config(format!(
            "{kind} '{text}' does not exist{missing_hint}"
        ))),
        (Err(e), _) => Err(Error::Config(format!(
            "cannot look up {kind} '{text}': {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Id {
        Id {
            id: 1001,
            name: Some("btc".into()),
        }
    }

    #[test]
    fn sources_are_checked_and_normalised() {
        assert_eq!(
            Source::prefix("192.168.1.77/24").unwrap(),
            Source::Prefix {
                addr: "192.168.1.0".parse().unwrap(),
                len: 24
            }
        );
        assert_eq!(
            Source::prefix("fd00:1::5").unwrap().to_string(),
            "fd00:1::5/128"
        );
        assert_eq!(
            Source::prefix("10.0.0.0/0").unwrap().to_string(),
            "0.0.0.0/0"
        );
        for bad in ["192.168.1.0/33", "lan", "fd00::/129", "1.2.3.4/x"] {
            assert!(Source::prefix(bad).is_err(), "{bad}");
        }
        assert!(Source::interface("br-lan").is_ok());
        for bad in ["", "a/b", "sixteen-chars-xx", "a b"] {
            assert!(Source::interface(bad).is_err(), "{bad:?}");
        }
        let gateway = Policy::new(None, &[8333], 324, vec![])
            .unwrap()
            .with_sources(vec![Source::interface("br-lan").unwrap()])
            .unwrap();
        assert_eq!(
            gateway.enable_command("nftables"),
            "bip324-redirect enable --from-interface br-lan --ports 8333 --proxy-port 324 --backend nftables"
        );
        assert!(
            Policy::new(None, &[8333], 324, vec![])
                .unwrap()
                .with_sources(vec![])
                .is_err()
        );
    }

    #[test]
    fn ports_are_normalised() {
        let policy = Policy::new(group(), &[18333, 8333, 8333], 1324, vec![]).unwrap();
        assert_eq!(policy.ports, vec![8333, 18333]);
    }

    #[test]
    fn invalid_policies_say_why() {
        for (ports, proxy, needle) in [
            (&[][..], 1324, "at least one"),
            (&[8333, 1324][..], 1324, "also in --ports"),
            (&[0][..], 1324, "port 0"),
            (&[8333][..], 0, "port 0"),
        ] {
            let error = Policy::new(group(), ports, proxy, vec![])
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn unknown_group_says_how_to_create_it() {
        let error = resolve_group("no-such-group-b324").unwrap_err().to_string();
        assert!(
            error.contains("groupadd --system no-such-group-b324"),
            "{error}"
        );
    }

    #[test]
    fn groups_and_users_resolve_by_name_and_number() {
        assert_eq!(resolve_group("0").unwrap().id, 0);
        assert_eq!(resolve_group("root").unwrap().id, 0);
        assert_eq!(resolve_user("root").unwrap().id, 0);
        assert_eq!(resolve_user("0").unwrap().name.as_deref(), Some("root"));
        for unnamed in [resolve_group("54321"), resolve_user("54321")] {
            assert_eq!(
                unnamed.unwrap(),
                Id {
                    id: 54321,
                    name: None
                }
            );
        }
        assert_eq!(
            resolve_user("no-such-user-b324").unwrap_err().to_string(),
            Error::Config("user 'no-such-user-b324' does not exist".into()).to_string()
        );
    }

    #[test]
    fn enable_command_reproduces_the_policy() {
        let root = Id {
            id: 0,
            name: Some("root".into()),
        };
        let policy = Policy::new(group(), &[8333, 18444], 1330, vec![root]).unwrap();
        assert_eq!(
            policy.enable_command("nftables"),
            "bip324-redirect enable --group btc --ports 8333,18444 --proxy-port 1330 \
             --exempt-user root --backend nftables"
        );
    }

    #[test]
    fn description_names_everything() {
        let root = Id {
            id: 0,
            name: Some("root".into()),
        };
        let text = Policy::new(group(), &[8333, 18333, 48333, 38333], 1324, vec![root])
            .unwrap()
            .describe();
        assert!(text.contains("8333,18333,38333,48333"), "{text}");
        assert!(text.contains("btc (1001)"), "{text}");
        assert!(text.contains("except those of user root (0)"), "{text}");
    }
}
