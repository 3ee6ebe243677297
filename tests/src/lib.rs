//! Test peers and the harness of the end-to-end tests.
//!
//! The peers are independent of the proxy's code: `v1` frames messages on its own, and
//! `responder` and `initiator` are built on rust-bitcoin's `bip324` crate.

pub mod cgroup;
pub mod chain_node;
pub mod echo;
pub mod initiator;
pub mod listening_node;
pub mod netns;
pub mod pipe_io;
pub mod responder;
pub mod server;
pub mod socks5_client;
pub mod testbed;
pub mod v1;

/// An IPv4 peer accepted on a dual-stack socket shows as v4-mapped: its IPv4 address.
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr {
        std::net::SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => std::net::SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Runs each named suite function once per redirect backend, as `nftables::NAME` and
/// `ebpf::NAME` tests.
#[macro_export]
macro_rules! for_each_backend {
    ($($test:ident),+ $(,)?) => {
        mod nftables {
            $(#[test] fn $test() { super::$test("nftables"); })+
        }
        mod ebpf {
            $(#[test] fn $test() { super::$test("ebpf"); })+
        }
    };
}
