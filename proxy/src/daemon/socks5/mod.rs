//! SOCKS5: its client side for `--upstream-socks5`. The wire format and the front end's
//! negotiation are sans-IO, in `bip324_protocol::socks5`; the front end's connections live
//! with the others, in `front/socks5.rs`.

pub(crate) mod client;

pub(crate) use bip324_protocol::socks5 as wire;

use wire::Reply;

/// What a failed connect's error means to a SOCKS client.
pub(crate) fn reply_for_connect_error(error: &std::io::Error) -> Reply {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        ErrorKind::HostUnreachable => Reply::HostUnreachable,
        ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
        ErrorKind::TimedOut => Reply::TtlExpired,
        ErrorKind::Unsupported => Reply::CommandNotSupported,
        _ => Reply::GeneralFailure,
    }
}
