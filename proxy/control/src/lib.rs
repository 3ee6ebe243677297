//! The control socket's wire format. `bip324-proxy` answers on a Unix socket; `bip324-redirect
//! status` asks. One JSON line in, one JSON document out, then the socket closes:
//!
//! ```text
//! -> {"version":1,"request":"status"}
//! <- {"version":1,"proxy":{...},"connections":[...],"totals":{...}}
//!    or {"version":1,"error":"..."}
//! ```
//! Both binaries use these types, so neither can drift from the other; a new field is added
//! with `#[serde(default)]`, a changed meaning takes a new `VERSION`, and a new word of the
//! vocabulary reads as `Unknown` in an older client (see [`vocabulary`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod handover;
mod status;
pub mod vocabulary;

pub use handover::{HandOver, SocketRole};
pub use status::{
    ByWire, ConnectionStatus, Counts, EndedConnection, Outcome, ProxyInfo, RECENT, StatusDocument,
    TRAFFIC_SAMPLE_SECONDS, TRAFFIC_SAMPLES, Tallies, TrafficSample,
};
pub use vocabulary::{CloseKind, Direction, FailureReason, Front, RefusalKind, TransportKind};

/// The version of this format.
pub const VERSION: u32 = 1;
/// Where `bip324-proxy.socket` puts the control socket.
pub const DEFAULT_SOCKET: &str = "/run/bip324-proxy/control.sock";

/// Where a proxy run by hand by an unprivileged user makes its control socket: it may not
/// write under /run, but its runtime directory (`$XDG_RUNTIME_DIR`) is its own.
pub fn user_socket() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
    dir.is_absolute()
        .then(|| dir.join("bip324-proxy").join("control.sock"))
}

/// The socket a client asks when given none: the system proxy's, or else, when only that
/// exists, the caller's own hand-run proxy's.
pub fn find_socket() -> PathBuf {
    first_existing(PathBuf::from(DEFAULT_SOCKET), user_socket())
}

fn first_existing(system: PathBuf, user: Option<PathBuf>) -> PathBuf {
    if system.exists() {
        return system;
    }
    user.filter(|user| user.exists()).unwrap_or(system)
}

/// Where `bip324-proxy-inbound.socket` puts the inbound proxy's control socket.
pub const INBOUND_SOCKET: &str = "/run/bip324-proxy/inbound.sock";

/// The request for the live connections and totals.
pub const STATUS: &str = "status";
/// A successor's request (`bip324-proxy --take-over`): the answering proxy hands over its
/// listening sockets, stops accepting, and drains its open connections.
pub const TAKE_OVER: &str = "take-over";

/// What a client asks. `request` stays a string so that an unknown one gets an answer that
/// names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub request: String,
    /// With `take-over`: how long the predecessor may keep its open connections before it
    /// closes them and exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<u64>,
    /// With `take-over`: the format of live connections the successor can carry on; a
    /// predecessor that writes the same sends them, any other keeps them and drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

impl Request {
    pub fn status() -> Request {
        Request {
            version: VERSION,
            request: STATUS.to_string(),
            drain_seconds: None,
            connections: None,
        }
    }

    pub fn take_over(drain_seconds: u64, connections: Option<u32>) -> Request {
        Request {
            version: VERSION,
            request: TAKE_OVER.to_string(),
            drain_seconds: Some(drain_seconds),
            connections,
        }
    }
}

/// The proxy's answer when it cannot serve a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub version: u32,
    pub error: String,
}

/// Either answer, as a client reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Failure(Failure),
    /// Boxed: a document is large beside a failure.
    Status(Box<StatusDocument>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_socket_comes_first_then_the_users_own() {
        let dir = std::env::temp_dir().join(format!("bip324-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (system, user) = (dir.join("system.sock"), dir.join("user.sock"));
        let pick = || first_existing(system.clone(), Some(user.clone()));
        assert_eq!(
            pick(),
            system,
            "neither exists: the system path, for its error"
        );
        std::fs::write(&user, "").unwrap();
        assert_eq!(pick(), user);
        std::fs::write(&system, "").unwrap();
        assert_eq!(pick(), system);
        assert_eq!(first_existing(system.clone(), None), system);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let status = status::tests::document();
        let text = serde_json::to_string(&status).unwrap();
        assert_eq!(
            serde_json::from_str::<Answer>(&text).unwrap(),
            Answer::Status(Box::new(status))
        );
        let request = serde_json::to_string(&Request::status()).unwrap();
        assert_eq!(request, r#"{"version":1,"request":"status"}"#);
        let take_over = serde_json::to_string(&Request::take_over(600, Some(1))).unwrap();
        assert_eq!(
            take_over,
            r#"{"version":1,"request":"take-over","drain_seconds":600,"connections":1}"#
        );
        // A successor older than live hand-over asks without a format: it gets none.
        let older: Request =
            serde_json::from_str(r#"{"version":1,"request":"take-over","drain_seconds":600}"#)
                .unwrap();
        assert_eq!(older, Request::take_over(600, None));
        assert_eq!(
            serde_json::from_str::<Request>(&take_over).unwrap(),
            Request::take_over(600, Some(1))
        );
        let hand_over = HandOver {
            version: VERSION,
            pid: 7,
            sockets: vec![SocketRole::Redirect, SocketRole::Web, SocketRole::Control],
            control_path: Some("/run/bip324-proxy/control.sock".into()),
            connections: Some(1),
        };
        let text = serde_json::to_string(&hand_over).unwrap();
        assert!(
            text.contains(r#""sockets":["redirect","web","control"]"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<HandOver>(&text).unwrap(), hand_over);
        let failure = r#"{"version":1,"error":"unknown request"}"#;
        assert!(matches!(
            serde_json::from_str::<Answer>(failure).unwrap(),
            Answer::Failure(Failure { error, .. }) if error == "unknown request"
        ));
    }
}
