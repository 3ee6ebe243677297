//! Test peers and the harness of the end-to-end tests.
//!
//! The peers are independent of the proxy's code: `v1` frames messages on its own, and
//! `responder` is built on rust-bitcoin's `bip324` crate.

pub mod cgroup;
pub mod echo;
pub mod netns;
pub mod pipe_io;
pub mod responder;
pub mod server;
pub mod testbed;
pub mod v1;

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
