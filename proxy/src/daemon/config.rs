//! The command line of `bip324-proxy`, defined in the `bip324-proxy-args` crate, and what the
//! daemon derives from it at run time.

use std::path::PathBuf;

pub(crate) use bip324_proxy_args::{Config, DEFAULT_LISTEN, DEFAULT_USER, Shaping};

/// `--control`, or where this proxy may make its socket: under /run when started as root, in
/// its user's runtime directory otherwise.
pub(crate) fn control_path(config: &Config) -> PathBuf {
    config.control.clone().unwrap_or_else(|| {
        let system = PathBuf::from(bip324_control::DEFAULT_SOCKET);
        if nix::unistd::geteuid().is_root() {
            system
        } else {
            bip324_control::user_socket().unwrap_or(system)
        }
    })
}
