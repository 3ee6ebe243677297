//! What the eBPF programs and their loader (`bip324-redirect --backend ebpf`) share: map and
//! program names, and the layout of map keys and values.
#![no_std]

/// Most destination ports a policy redirects (as for the nftables backend).
pub const MAX_PORTS: usize = 32;
/// Most exempt users a policy lists.
pub const MAX_EXEMPT_USERS: usize = 8;
/// Entries of each connection map: far more than the open connections of one host.
pub const MAX_CONNECTIONS: u32 = 65536;

// Maps are pinned by name, and a pinned map is reused by the next `enable`: a map whose layout
// changes gets a new name, so that an upgrade loads beside the old instance without a gap.

/// The single-entry array map holding the policy.
pub const CONFIG_MAP: &str = "POLICY";
/// Original destination of a redirected socket, by socket cookie (for getpeername).
pub const BY_COOKIE_MAP: &str = "BY_COOKIE";
/// Original destination by the client end of a connection in its network namespace, as the
/// proxy sees its peer (for SO_ORIGINAL_DST).
pub const BY_CLIENT_MAP: &str = "BY_CLIENT_NS";
/// Per-CPU counters of records the programs added and removed, by slot below. What was
/// added, less what was removed, less what is still there, is what the kernel evicted from a
/// full map: a group member with very many connections pushes out others' records.
pub const COUNTERS_MAP: &str = "COUNTERS";
pub const MAPS: [&str; 4] = [CONFIG_MAP, BY_COOKIE_MAP, BY_CLIENT_MAP, COUNTERS_MAP];

/// Slots of the counters map.
pub const COOKIE_ADDED: u32 = 0;
pub const COOKIE_REMOVED: u32 = 1;
pub const CLIENT_ADDED: u32 = 2;
pub const CLIENT_REMOVED: u32 = 3;
pub const COUNTER_SLOTS: u32 = 4;

/// The programs, by the kind of cgroup hook each attaches to.
pub const CONNECT4: &str = "connect4";
pub const CONNECT6: &str = "connect6";
/// (A program may not be named `sockops`: that is its section's name.)
pub const SOCKOPS: &str = "track_sockets";
pub const GETSOCKOPT: &str = "getsockopt";
pub const GETPEERNAME4: &str = "getpeername4";
pub const GETPEERNAME6: &str = "getpeername6";
/// Forgets a socket's original destination when it is released, whether or not its
/// `connect()` ever got as far as sending a SYN.
pub const SOCK_RELEASE: &str = "forget_socket";
pub const PROGRAMS: [&str; 7] = [
    CONNECT4,
    CONNECT6,
    SOCKOPS,
    GETSOCKOPT,
    GETPEERNAME4,
    GETPEERNAME6,
    SOCK_RELEASE,
];

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;

/// The policy. Zeroed (no ports) until the loader writes it, so nothing matches before.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The network namespace `enable` ran in (`SO_NETNS_COOKIE`): programs attached at the
    /// cgroup root see every namespace, and act in this one only. A redirect to 127.0.0.1
    /// elsewhere (a container) would reach whatever listens on that namespace's loopback.
    pub netns_cookie: u64,
    /// Real group id of the processes whose connections are redirected.
    pub gid: u32,
    /// Where the proxy listens, host byte order.
    pub proxy_port: u16,
    pub port_count: u16,
    pub exempt_count: u32,
    /// Destination ports, host byte order; the first `port_count` are used.
    pub ports: [u16; MAX_PORTS],
    /// Real user ids never redirected; the first `exempt_count` are used.
    pub exempt_uids: [u32; MAX_EXEMPT_USERS],
    /// Zero; keeps the struct free of padding.
    pub reserved: u32,
}

/// An address and port: a map key (the client end of a connection) or value (an original
/// destination). No padding, so keys compare bytewise.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// Host byte order.
    pub port: u32,
    /// Network byte order words; IPv4 in `addr[0]`.
    pub addr: [u32; 4],
}

/// The client end of a connection in its network namespace: equal endpoints of two
/// namespaces are different connections.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientKey {
    pub netns_cookie: u64,
    pub client: Endpoint,
}

// SAFETY: plain `repr(C)` integers without padding: any bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Endpoint {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ClientKey {}

const _: () = assert!(
    core::mem::size_of::<Config>() == 8 + 4 + 2 + 2 + 4 + 2 * MAX_PORTS + 4 * MAX_EXEMPT_USERS + 4
);
const _: () = assert!(core::mem::size_of::<ClientKey>() == 8 + 24);
