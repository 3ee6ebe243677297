//! SOCKS5: its wire format; the front end's connections live with the others in
//! `connection/socks5.rs`.

pub mod wire;
