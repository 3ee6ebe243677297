//! The answer to `status`: the live connections, totals, recent ends, tallies and traffic
//! of the answering proxy. The dashboard's `/status.json` is this document too.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::vocabulary::{
    self, CloseKind, Direction, FailureReason, Front, RefusalKind, TransportKind,
};

/// The proxy's answer to a status request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub version: u32,
    pub proxy: ProxyInfo,
    /// Live connections, oldest first.
    pub connections: Vec<ConnectionStatus>,
    /// Since the proxy started, closed connections included.
    pub totals: Counts,
    /// The last few connections that ended, newest last, with how each ended: what
    /// `bip324-redirect check` asks after its probe. Absent from older proxies.
    #[serde(default)]
    pub recent: Vec<EndedConnection>,
    /// Connections, refusals, failures and bytes by kind since the proxy started. Absent from
    /// older proxies: empty.
    #[serde(default)]
    pub tallies: Tallies,
    /// Bytes by wire in the last hour, oldest first: one sample per [`TRAFFIC_SAMPLE_SECONDS`],
    /// then the span in progress, up to the document's making. Absent from older proxies: empty.
    #[serde(default)]
    pub traffic: Vec<TrafficSample>,
}

/// Counts by the words of the vocabulary, as the metrics have them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tallies {
    /// Connections opened, by transport.
    pub opened: BTreeMap<TransportKind, u64>,
    /// Connections refused before anything was read, by reason.
    pub refused: BTreeMap<RefusalKind, u64>,
    /// Connections that ended before they were relayed, by reason.
    pub failed: BTreeMap<FailureReason, u64>,
    /// Bytes on both sockets, both ways, by wire.
    pub wire: ByWire,
}

/// Bytes by wire: plaintext (v1, or passed through unchanged) and v2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByWire {
    pub v1: u64,
    pub v2: u64,
}

/// How long one [`TrafficSample`] spans.
pub const TRAFFIC_SAMPLE_SECONDS: u64 = 10;
/// How many samples a proxy keeps: one hour.
pub const TRAFFIC_SAMPLES: usize = 360;

/// Bytes that moved in one span: from the sample before (or the proxy's start) to `at`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// The span's end, Unix time, seconds.
    pub at: f64,
    #[serde(flatten)]
    pub bytes: ByWire,
}

/// How many ended connections a proxy remembers for `recent`.
pub const RECENT: usize = 16;

/// A connection that ended, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndedConnection {
    pub id: u64,
    #[serde(default)]
    pub direction: Direction,
    /// Absent from older proxies: unknown.
    #[serde(default)]
    pub front: Front,
    pub client: SocketAddr,
    pub destination: SocketAddr,
    /// Unix time, seconds.
    pub ended: f64,
    /// "v2", "v1_fallback", ... once it opened; `null` when it failed before.
    pub transport: Option<TransportKind>,
    pub outcome: Outcome,
}

/// How a connection ended, in the proxy's vocabulary (its log's `failure=` and `close=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It ended before it was relayed: connect_error, connect_timeout, handshake_closed, ...
    Failed(FailureReason),
    /// It was relayed, then closed: remote_closed, client_closed, ...
    Closed(CloseKind),
    /// The proxy did not say (a front that does not record outcomes).
    Unknown,
}

/// The answering proxy itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Its package version.
    pub version: String,
    pub pid: u32,
    /// Unix time, seconds.
    pub started: f64,
    /// Where it accepts redirected connections.
    pub listen: Vec<SocketAddr>,
    /// Where it accepts peers' connections to the local node (inbound mode).
    #[serde(default)]
    pub inbound: Vec<SocketAddr>,
    /// The SOCKS5 proxy every upstream connection goes through (`--upstream-socks5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_socks5: Option<SocketAddr>,
    /// Where it answers SOCKS5 clients. Absent from older proxies: empty.
    #[serde(default)]
    pub socks5: Vec<SocketAddr>,
    /// Its `--shaping` strategy: "none", "buckets" or "cover". Absent from older proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaping: Option<String>,
    /// Whether a v1-only node gets plaintext v1 (`--v1-fallback`). Absent from older
    /// proxies: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1_fallback: Option<bool>,
}

/// A live connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    pub id: u64,
    /// Absent from proxies older than inbound mode: outbound.
    #[serde(default)]
    pub direction: Direction,
    /// Absent from older proxies: unknown.
    #[serde(default)]
    pub front: Front,
    pub client: SocketAddr,
    pub destination: SocketAddr,
    /// `null` until the client's first bytes tell.
    pub network: Option<String>,
    /// `None` until the connection opens: "connecting" on the wire; then "v2",
    /// "v1_fallback", "passthrough" or (inbound) "v1".
    #[serde(with = "vocabulary::connecting")]
    pub transport: Option<TransportKind>,
    /// Hex, for v2 connections.
    pub session_id: Option<String>,
    /// Unix time, seconds.
    pub started: f64,
    pub duration_seconds: f64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Bytes and messages moved, for one connection or in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// v1 bytes from the client.
    pub client_in: u64,
    /// v1 bytes to the client.
    pub client_out: u64,
    /// Bytes from the remote (v2 unless the transport is plaintext).
    pub remote_in: u64,
    /// Bytes to the remote.
    pub remote_out: u64,
    pub messages_from_client: u64,
    pub messages_to_client: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.client_in += other.client_in;
        self.client_out += other.client_out;
        self.remote_in += other.remote_in;
        self.remote_out += other.remote_out;
        self.messages_from_client += other.messages_from_client;
        self.messages_to_client += other.messages_to_client;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::VERSION;

    pub(crate) fn document() -> StatusDocument {
        StatusDocument {
            version: VERSION,
            proxy: ProxyInfo {
                version: "0.2.0".into(),
                pid: 42,
                started: 1_700_000_000.5,
                listen: vec![
                    "127.0.0.1:324".parse().unwrap(),
                    "[::1]:324".parse().unwrap(),
                ],
                inbound: vec!["[::]:325".parse().unwrap()],
                upstream_socks5: None,
                socks5: vec!["127.0.0.1:1080".parse().unwrap()],
                shaping: Some("buckets".into()),
                v1_fallback: Some(false),
            },
            connections: vec![ConnectionStatus {
                id: 7,
                direction: Direction::Inbound,
                front: Front::Inbound,
                client: "10.0.0.1:40000".parse().unwrap(),
                destination: "10.0.0.2:8333".parse().unwrap(),
                network: Some("mainnet".into()),
                transport: Some(TransportKind::V2),
                session_id: Some("ab".repeat(32)),
                started: 1_700_000_001.0,
                duration_seconds: 2.5,
                counts: Counts {
                    client_in: 100,
                    remote_out: 140,
                    ..Counts::default()
                },
            }],
            totals: Counts {
                client_in: 1000,
                ..Counts::default()
            },
            recent: vec![EndedConnection {
                id: 6,
                direction: Direction::Outbound,
                front: Front::Socks5,
                client: "10.0.0.1:39999".parse().unwrap(),
                destination: "10.0.0.2:8333".parse().unwrap(),
                ended: 1_700_000_000.75,
                transport: None,
                outcome: Outcome::Failed(FailureReason::ConnectError),
            }],
            tallies: Tallies {
                opened: BTreeMap::from([(TransportKind::V2, 9), (TransportKind::V1Fallback, 1)]),
                refused: BTreeMap::from([(RefusalKind::Loop, 2)]),
                failed: BTreeMap::from([(FailureReason::ConnectError, 1)]),
                wire: ByWire { v1: 1000, v2: 1400 },
            },
            traffic: vec![TrafficSample {
                at: 1_700_000_010.0,
                bytes: ByWire { v1: 10, v2: 14 },
            }],
        }
    }

    #[test]
    fn documents_round_trip() {
        let status = document();
        let text = serde_json::to_string(&status).unwrap();
        assert_eq!(
            serde_json::from_str::<StatusDocument>(&text).unwrap(),
            status
        );
    }

    /// The wire keeps a connection's counts beside its other fields, as version 1 has them.
    #[test]
    fn counts_are_flattened_into_each_connection() {
        let json = serde_json::to_value(document()).unwrap();
        let connection = &json["connections"][0];
        assert_eq!(connection["client_in"], 100);
        assert_eq!(connection["remote_out"], 140);
        assert_eq!(connection["transport"], "v2");
        assert_eq!(json["totals"]["client_in"], 1000);
        assert_eq!(json["proxy"]["listen"][0], "127.0.0.1:324");
        assert_eq!(json["recent"][0]["outcome"]["failed"], "connect_error");
        assert_eq!(json["recent"][0]["front"], "socks5");
        assert_eq!(json["tallies"]["opened"]["v1_fallback"], 1);
        assert_eq!(json["tallies"]["refused"]["loop"], 2);
        assert_eq!(json["tallies"]["wire"]["v2"], 1400);
        assert_eq!(json["traffic"][0]["v1"], 10);
        assert_eq!(json["proxy"]["shaping"], "buckets");
    }

    /// Every word of the vocabulary a document carries, and "connecting", read back as
    /// written.
    #[test]
    fn every_word_round_trips_in_a_document() {
        let mut status = document();
        let live = status.connections[0].clone();
        let ended = status.recent[0].clone();
        let transports = std::iter::once(None).chain(TransportKind::ALL.iter().copied().map(Some));
        status.connections = transports
            .zip(Front::ALL.iter().cycle())
            .zip(Direction::ALL.iter().cycle())
            .map(|((transport, &front), &direction)| ConnectionStatus {
                transport,
                front,
                direction,
                ..live.clone()
            })
            .collect();
        let failed = FailureReason::ALL.iter().copied().map(Outcome::Failed);
        let closed = CloseKind::ALL.iter().copied().map(Outcome::Closed);
        status.recent = failed
            .chain(closed)
            .chain([Outcome::Unknown])
            .map(|outcome| EndedConnection {
                outcome,
                transport: Some(TransportKind::V1Fallback),
                ..ended.clone()
            })
            .collect();
        let every = |count| {
            let opened = TransportKind::ALL.iter().map(|&k| (k, count));
            let refused = RefusalKind::ALL.iter().map(|&k| (k, count));
            let failed = FailureReason::ALL.iter().map(|&k| (k, count));
            (opened.collect(), refused.collect(), failed.collect())
        };
        (
            status.tallies.opened,
            status.tallies.refused,
            status.tallies.failed,
        ) = every(3);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["tallies"]["refused"]["port_not_served"], 3);
        assert_eq!(json["connections"][0]["transport"], "connecting");
        assert_eq!(json["connections"][1]["transport"], "v2");
        assert_eq!(json["recent"][0]["outcome"]["failed"], "client_timeout");
        assert_eq!(
            json["recent"].as_array().unwrap().last().unwrap()["outcome"],
            "unknown"
        );
        let read: StatusDocument = serde_json::from_value(json).unwrap();
        assert_eq!(read, status);
    }

    /// A newer proxy's words read as `Unknown` instead of failing the whole document; an
    /// older proxy's document without `front` reads as unknown fronts.
    #[test]
    fn newer_words_and_older_documents_read() {
        let mut json = serde_json::to_value(document()).unwrap();
        json["connections"][0]["transport"] = "v3".into();
        json["connections"][0]["front"] = "tor".into();
        json["recent"][0]["outcome"]["failed"] = "dns_error".into();
        json["tallies"]["refused"] = serde_json::json!({"too_fast": 4});
        let read: StatusDocument = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read.tallies.refused[&RefusalKind::Unknown], 4);
        assert_eq!(read.connections[0].transport, Some(TransportKind::Unknown));
        assert_eq!(read.connections[0].front, Front::Unknown);
        assert_eq!(
            read.recent[0].outcome,
            Outcome::Failed(FailureReason::Unknown)
        );
        json["connections"][0]
            .as_object_mut()
            .unwrap()
            .remove("front");
        json["recent"][0].as_object_mut().unwrap().remove("front");
        let read: StatusDocument = serde_json::from_value(json).unwrap();
        assert_eq!(read.connections[0].front, Front::Unknown);
        assert_eq!(read.recent[0].front, Front::Unknown);
    }

    /// A document from a proxy that keeps no list of ended connections, no tallies and no
    /// traffic history, and says nothing of its SOCKS5 listeners or options, still reads.
    #[test]
    fn a_document_of_an_older_proxy_reads() {
        let mut json = serde_json::to_value(document()).unwrap();
        for field in ["recent", "tallies", "traffic"] {
            json.as_object_mut().unwrap().remove(field);
        }
        for field in ["socks5", "shaping", "v1_fallback"] {
            json["proxy"].as_object_mut().unwrap().remove(field);
        }
        let read: StatusDocument = serde_json::from_value(json).unwrap();
        assert!(read.recent.is_empty() && read.traffic.is_empty());
        assert_eq!(read.tallies, Tallies::default());
        assert_eq!((read.proxy.shaping, read.proxy.v1_fallback), (None, None));
    }
}
