//! SOCKS5: its wire format, and its client side for `--upstream-socks5`. The front end's
//! connections live with the others, in `connection/socks5.rs`.

pub mod client;
pub mod wire;
