//! A client host and a remote host joined by a veth link, with the proxy on the client host
//! and a v2 node (responder + v1 echo node) on the remote host.

mod cli;
mod node;
mod peer;
mod proxy;
mod run;
mod web;

use std::net::SocketAddr;

use crate::cgroup::{BpfMount, Cgroup};
use crate::netns::{self, Netns};

pub use cli::RedirectCli;
pub use node::{RemoteNode, nft_redirect, noisy_responder};
pub use peer::V1Peer;
pub use proxy::{Proxy, control_socket, workspace_binary};
pub use run::{Run, contains, run_client, run_client_as};
pub use web::http_get;

pub const CLIENT_V4: &str = "10.32.4.1";
pub const REMOTE_V4: &str = "10.32.4.2";
pub const CLIENT_V6: &str = "fd32:4::1";
pub const REMOTE_V6: &str = "fd32:4::2";
/// The port the remote node listens on: the redirect matches it.
pub const NODE_PORT: u16 = 8333;
pub const PROXY_PORT: u16 = 324;
/// The group whose connections are redirected in tests, and one that is not.
pub const TAGGED_GID: u32 = 32324;
pub const OTHER_GID: u32 = 32325;

/// Raises this process's soft limit on open files to the hard one: a test hosting the remote
/// node holds three sockets per connection.
pub fn raise_own_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Fails the test, loudly, when it cannot do what it must: never a silent skip.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root (network namespaces, nftables): run `cargo xtask test` as root"
    );
}

/// The hosts, plus what the eBPF backend needs to stay within the test: a cgroup holding
/// every process started on the client host, and a BPF filesystem of its own.
pub struct TwoHosts {
    pub client: Netns,
    pub remote: Netns,
    pub cgroup: Cgroup,
    pub bpffs: BpfMount,
}

impl TwoHosts {
    pub fn create() -> TwoHosts {
        require_root();
        let cgroup = Cgroup::create("client");
        let bpffs = BpfMount::create();
        let mut client = Netns::create("client");
        client.place_processes_in(&cgroup);
        let remote = Netns::create("remote");
        netns::link(&client, &remote);
        netns::address(&client, &format!("{CLIENT_V4}/24"));
        netns::address(&remote, &format!("{REMOTE_V4}/24"));
        netns::address(&client, &format!("{CLIENT_V6}/64"));
        netns::address(&remote, &format!("{REMOTE_V6}/64"));
        TwoHosts {
            client,
            remote,
            cgroup,
            bpffs,
        }
    }

    pub fn remote_v4(&self) -> SocketAddr {
        SocketAddr::new(REMOTE_V4.parse().unwrap(), NODE_PORT)
    }

    pub fn remote_v6(&self) -> SocketAddr {
        SocketAddr::new(REMOTE_V6.parse().unwrap(), NODE_PORT)
    }
}
