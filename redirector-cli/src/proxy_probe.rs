//! Whether the proxy answers where the redirect sends connections.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub address: SocketAddr,
    pub answering: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Connects to the proxy's port on both loopback addresses (the redirect targets both).
pub fn probe(port: u16) -> Vec<Probe> {
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ]
    .into_iter()
    .map(
        |address| match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Ok(_) => Probe {
                address,
                answering: true,
                error: None,
            },
            Err(e) => Probe {
                address,
                answering: false,
                error: Some(e.to_string()),
            },
        },
    )
    .collect()
}

/// "127.0.0.1:1324 and [::1]:1324", for sentences.
pub fn addresses(probes: &[Probe]) -> String {
    let list: Vec<String> = probes.iter().map(|p| p.address.to_string()).collect();
    list.join(" and ")
}
