//! The answer to `take-over` (`bip324-proxy --take-over`): which sockets follow.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The answer to `take-over`, sent in one message with the sockets it lists (`SCM_RIGHTS`,
/// in this order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOver {
    pub version: u32,
    /// The predecessor, which drains its connections and exits.
    pub pid: u32,
    pub sockets: Vec<SocketRole>,
    /// Where the control socket handed over lives, when the predecessor made it itself (the
    /// successor removes it when it stops); `None` for systemd's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_path: Option<PathBuf>,
    /// The format of the live connections that follow, one record each with its two sockets,
    /// then an empty record; `None`: none follow, the predecessor drains its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// What a socket handed over is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketRole {
    /// Redirected connections.
    Redirect,
    /// Peers' connections to the local node.
    Inbound,
    Socks5,
    /// The dashboard and metrics (`--metrics`).
    Web,
    /// The control socket itself.
    Control,
}
