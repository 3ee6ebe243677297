//! The redirect policy: who is redirected (a group's local processes, and in gateway mode the
//! connections a router forwards from its LAN), which ports, to which proxy port, and who is
//! exempt. Every backend implements this same value, or says it cannot. Gateway mode's
//! sources are in `source`, the users and groups it names in `accounts`, inbound mode's
//! policy in `inbound`.

mod accounts;
mod inbound;
mod source;

use serde::{Deserialize, Serialize};

pub(crate) use self::accounts::{Id, resolve_group, resolve_user};
pub(crate) use self::inbound::InboundPolicy;
pub(crate) use self::source::Source;
use crate::error::Error;

/// More ports than any set of Bitcoin networks needs; keeps the rule set small.
const MAX_PORTS: usize = 32;

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
