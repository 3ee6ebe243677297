//! Inbound mode's policy: which of the node's ports peers' connections are redirected from,
//! to which inbound port of the proxy.

use serde::{Deserialize, Serialize};

use super::MAX_PORTS;
use crate::error::Error;

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
