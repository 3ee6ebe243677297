//! The redirect, at `connect()`, before any packet exists:
//!
//! * `connect4`/`connect6`: a TCP connect by a tagged process, in the network namespace where
//!   the redirect was enabled, to a policy port records the original destination under the
//!   socket cookie and goes to the proxy on loopback instead; one to a loopback address
//!   (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) is left alone. (This host's other addresses are
//!   not known here: those connections still go to the proxy, as with any destination.) Any
//!   other connect of a socket forgets what an earlier, failed one recorded.
//! * `sockops`: once that connection is established to the proxy port, files the original
//!   destination under the client's end of it in its namespace, which is what the proxy sees
//!   as its peer; forgets both at close.
//! * `getsockopt`: answers `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` from that, for sockets
//!   accepted on the proxy port in that namespace only, so the proxy reads it exactly as with
//!   nftables.
//! * `getpeername4`/`getpeername6`: the client still sees the original remote.
//! * `forget_socket` (sock_release): a socket's record goes with the socket, even when its
//!   `connect()` failed before any packet.
//!
//! Context fields are read and written with volatile 4-byte accesses: the verifier refuses
//! wider or merged accesses to them, which LLVM would otherwise emit for arrays.
//!
//! Long because the seven programs share maps, helpers and context accessors that the BPF
//! target compiles as one unit.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{
    BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
    BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock, bpf_sock_ops,
};
use aya_ebpf::helpers::bpf_get_current_uid_gid;
use aya_ebpf::helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie};
use aya_ebpf::macros::{cgroup_sock, cgroup_sock_addr, cgroup_sockopt, map, sock_ops};
use aya_ebpf::maps::{Array, LruHashMap, PerCpuArray};
use aya_ebpf::programs::{SockAddrContext, SockContext, SockOpsContext, SockoptContext};
use redirector_ebpf::{
    AF_INET, AF_INET6, CLIENT_ADDED, CLIENT_REMOVED, COOKIE_ADDED, COOKIE_REMOVED, COUNTER_SLOTS,
    ClientKey, Config, Endpoint, MAX_CONNECTIONS, MAX_EXEMPT_USERS, MAX_PORTS,
};

// Maps are pinned by name in the loader's directory, so a new `enable` reuses them (the
// names are the loader's `*_MAP` constants).
#[map]
static POLICY: Array<Config> = Array::pinned(1, 0);
#[map]
static BY_COOKIE: LruHashMap<u64, Endpoint> = LruHashMap::pinned(MAX_CONNECTIONS, 0);
#[map]
static BY_CLIENT_NS: LruHashMap<ClientKey, Endpoint> = LruHashMap::pinned(MAX_CONNECTIONS, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

/// Counts one event in this CPU's slot (the loader sums the CPUs).
#[inline(always)]
fn bump(slot: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, written by this CPU only, with preemption off.
        unsafe { *count += 1 };
    }
}

/// Records a redirected socket's original destination, counting a new record.
#[inline(always)]
unsafe fn remember_cookie(cookie: u64, original: Endpoint) {
    let new = unsafe { BY_COOKIE.get(cookie) }.is_none();
    if BY_COOKIE.insert(cookie, original, 0).is_ok() && new {
        bump(COOKIE_ADDED);
    }
}

/// Forgets a socket's record, counting it when there was one.
#[inline(always)]
fn forget_cookie(cookie: u64) {
    if BY_COOKIE.remove(cookie).is_ok() {
        bump(COOKIE_REMOVED);
    }
}

/// cgroup sock_addr and sockopt programs: 1 lets the call proceed.
const ALLOW: i32 = 1;
const IPPROTO_TCP: u32 = 6;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
/// `SO_ORIGINAL_DST` and `IP6T_SO_ORIGINAL_DST` share the number.
const SO_ORIGINAL_DST: i32 = 80;
const TCP_CLOSE: u32 = 7;
/// Beyond this the program sees no buffer and must leave `optlen` at 0 (kernel rule).
const PAGE_SIZE: i32 = 4096;
/// Network byte order constants.
const LOOPBACK_V4: u32 = 0x7f00_0001u32.to_be();
const LOOPBACK_V6_LAST: u32 = 1u32.to_be();
const V4_MAPPED_WORD: u32 = 0x0000_ffffu32.to_be();

#[inline(always)]
unsafe fn get<T: Copy>(field: *const T) -> T {
    unsafe { read_volatile(field) }
}

#[inline(always)]
unsafe fn set<T>(field: *mut T, value: T) {
    unsafe { write_volatile(field, value) }
}

fn is_v4_mapped(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED_WORD
}

/// 127.0.0.0/8 (network byte order word).
fn is_loopback_v4(addr: u32) -> bool {
    u32::from_be(addr) >> 24 == 127
}

/// ::1, or a v4-mapped 127.0.0.0/8.
fn is_loopback_v6(addr: &[u32; 4]) -> bool {
    addr == &[0, 0, 0, LOOPBACK_V6_LAST] || (is_v4_mapped(addr) && is_loopback_v4(addr[3]))
}

/// The proxy port, if the caller is tagged, in the policy's network namespace, and the
/// destination port is in the policy.
#[inline(always)]
unsafe fn tagged(ctx: &SockAddrContext) -> Option<u16> {
    let sa = ctx.sock_addr;
    if unsafe { get(&(*sa).protocol) } != IPPROTO_TCP {
        return None;
    }
    let config = POLICY.get(0)?;
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != config.netns_cookie {
        return None;
    }
    let port = u16::from_be(unsafe { get(&(*sa).user_port) } as u16);
    let count = config.port_count as usize;
    let mut wanted = false;
    for i in 0..MAX_PORTS {
        if i < count && config.ports[i] == port {
            wanted = true;
        }
    }
    if !wanted {
        return None;
    }
    // Real ids: a setgid wrapper does not tag a process, only its real group does.
    let ids = bpf_get_current_uid_gid();
    let (uid, gid) = (ids as u32, (ids >> 32) as u32);
    if gid != config.gid {
        return None;
    }
    let exempt = config.exempt_count as usize;
    for i in 0..MAX_EXEMPT_USERS {
        if i < exempt && config.exempt_uids[i] == uid {
            return None;
        }
    }
    Some(config.proxy_port)
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel passes a valid context; fields are accessed as the verifier allows.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        // A node on this host's loopback is reached directly: nothing on the way can read it.
        let to_loopback = is_loopback_v4(get(&(*sa).user_ip4));
        if let Some(proxy_port) = tagged(&ctx).filter(|_| !to_loopback) {
            let original = Endpoint {
                family: AF_INET,
                port: u32::from(u16::from_be(get(&(*sa).user_port) as u16)),
                addr: [get(&(*sa).user_ip4), 0, 0, 0],
            };
            // Redirect even if recording fails: the proxy then refuses the connection,
            // which is closed, never plaintext.
            remember_cookie(cookie, original);
            set(&mut (*sa).user_ip4, LOOPBACK_V4);
            set(&mut (*sa).user_port, u32::from(proxy_port.to_be()));
        } else if !to_the_proxy(get(&(*sa).user_ip4) == LOOPBACK_V4, get(&(*sa).user_port)) {
            // This socket is not redirected (now): no record of an earlier attempt may stay.
            forget_cookie(cookie);
        }
    }
    ALLOW
}

/// The destination is the proxy: this connect() was redirected by another instance of these
/// programs attached beside this one (while `enable` replaces them), whose record must stay.
#[inline(always)]
fn to_the_proxy(loopback: bool, user_port: u32) -> bool {
    let port = u16::from_be(user_port as u16);
    loopback && POLICY.get(0).is_some_and(|c| c.proxy_port == port)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4. Each word of user_ip6 is its own 4-byte access.
    unsafe {
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        let addr = [
            get(&(*sa).user_ip6[0]),
            get(&(*sa).user_ip6[1]),
            get(&(*sa).user_ip6[2]),
            get(&(*sa).user_ip6[3]),
        ];
        if let Some(proxy_port) = tagged(&ctx).filter(|_| !is_loopback_v6(&addr)) {
            let original = Endpoint {
                family: AF_INET6,
                port: u32::from(u16::from_be(get(&(*sa).user_port) as u16)),
                addr,
            };
            remember_cookie(cookie, original);
            // A v4-mapped destination travels over IPv4: send it to ::ffff:127.0.0.1, which
            // reaches the proxy's IPv4 listener, as with nftables.
            let loopback = if is_v4_mapped(&addr) {
                [0, 0, V4_MAPPED_WORD, LOOPBACK_V4]
            } else {
                [0, 0, 0, LOOPBACK_V6_LAST]
            };
            set(&mut (*sa).user_ip6[0], loopback[0]);
            set(&mut (*sa).user_ip6[1], loopback[1]);
            set(&mut (*sa).user_ip6[2], loopback[2]);
            set(&mut (*sa).user_ip6[3], loopback[3]);
            set(&mut (*sa).user_port, u32::from(proxy_port.to_be()));
        } else {
            let loopback =
                addr == [0, 0, 0, LOOPBACK_V6_LAST] || addr == [0, 0, V4_MAPPED_WORD, LOOPBACK_V4];
            if !to_the_proxy(loopback, get(&(*sa).user_port)) {
                forget_cookie(cookie);
            }
        }
    }
    ALLOW
}

/// The local end of a socket, a v4-mapped address as the IPv4 address it stands for.
unsafe fn local_end(ops: *const bpf_sock_ops) -> Endpoint {
    unsafe {
        let port = get(&(*ops).local_port);
        if get(&(*ops).family) == AF_INET {
            return Endpoint {
                family: AF_INET,
                port,
                addr: [get(&(*ops).local_ip4), 0, 0, 0],
            };
        }
        let addr = [
            get(&(*ops).local_ip6[0]),
            get(&(*ops).local_ip6[1]),
            get(&(*ops).local_ip6[2]),
            get(&(*ops).local_ip6[3]),
        ];
        as_ipv4_if_mapped(Endpoint {
            family: AF_INET6,
            port,
            addr,
        })
    }
}

fn as_ipv4_if_mapped(end: Endpoint) -> Endpoint {
    if end.family == AF_INET6 && is_v4_mapped(&end.addr) {
        Endpoint {
            family: AF_INET,
            port: end.port,
            addr: [end.addr[3], 0, 0, 0],
        }
    } else {
        end
    }
}

#[sock_ops]
pub fn track_sockets(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: the kernel passes a valid context.
    unsafe {
        let op = get(&(*ops).op);
        let closing = op == BPF_SOCK_OPS_STATE_CB && ctx.arg(1) == TCP_CLOSE;
        if op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && !closing
        {
            return 1;
        }
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        let key = ClientKey {
            netns_cookie: bpf_get_netns_cookie(ctx.as_ptr()),
            client: local_end(ops),
        };
        if closing {
            // Only redirected sockets asked for this callback. Their cookie record may be
            // gone already: `forget_socket` runs when the descriptor closes, before the
            // connection has finished closing.
            if BY_CLIENT_NS.remove(key).is_ok() {
                bump(CLIENT_REMOVED);
            }
            forget_cookie(cookie);
            return 1;
        }
        let Some(original) = BY_COOKIE.get(cookie).copied() else {
            return 1; // not a redirected socket
        };
        if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
            // Be told when it closes, whether or not it ever connects.
            let flags = get(&(*ops).bpf_sock_ops_cb_flags) | BPF_SOCK_OPS_STATE_CB_FLAG;
            let _ = ctx.set_cb_flags(flags as i32);
        } else if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
            // Only a connection to the proxy port is the proxy's peer. (`remote_port` holds
            // the port in network byte order in its upper half.)
            let remote_port = u16::from_be((get(&(*ops).remote_port) >> 16) as u16);
            if POLICY.get(0).is_some_and(|c| c.proxy_port == remote_port) {
                // The proxy asks for the IPv4 form of a v4-mapped destination (SOL_IP).
                let new = BY_CLIENT_NS.get(key).is_none();
                if BY_CLIENT_NS
                    .insert(key, as_ipv4_if_mapped(original), 0)
                    .is_ok()
                    && new
                {
                    bump(CLIENT_ADDED);
                }
            }
        }
    }
    1
}

/// The remote end of the proxy's accepted socket: the client's local end.
unsafe fn peer_end(sk: *const bpf_sock) -> Endpoint {
    unsafe {
        let port = u32::from(u16::from_be(get(&(*sk).dst_port)));
        if get(&(*sk).family) == AF_INET {
            return Endpoint {
                family: AF_INET,
                port,
                addr: [get(&(*sk).dst_ip4), 0, 0, 0],
            };
        }
        let addr = [
            get(&(*sk).dst_ip6[0]),
            get(&(*sk).dst_ip6[1]),
            get(&(*sk).dst_ip6[2]),
            get(&(*sk).dst_ip6[3]),
        ];
        as_ipv4_if_mapped(Endpoint {
            family: AF_INET6,
            port,
            addr,
        })
    }
}

#[cgroup_sockopt(getsockopt)]
pub fn getsockopt(ctx: SockoptContext) -> i32 {
    let so = ctx.sockopt;
    // SAFETY: the kernel passes a valid context; optval is only written after the bounds
    // check against optval_end that the verifier requires.
    unsafe {
        if !answer_original_destination(&ctx) && get(&(*so).optlen) > PAGE_SIZE {
            set(&mut (*so).optlen, 0);
        }
    }
    ALLOW
}

/// `struct sockaddr_in` and `struct sockaddr_in6`, as the proxy's getsockopt expects them.
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
    zero: [u8; 8],
}

#[repr(C)]
struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u32; 4],
    scope_id: u32,
}

/// Answers only for a socket accepted on the proxy port in the policy's namespace: the port
/// is privileged, so only the proxy (or root) holds such sockets.
unsafe fn answer_original_destination(ctx: &SockoptContext) -> bool {
    let so = ctx.sockopt;
    unsafe {
        let level = get(&(*so).level);
        if get(&(*so).optname) != SO_ORIGINAL_DST || (level != SOL_IP && level != SOL_IPV6) {
            return false;
        }
        let sk = (*so).__bindgen_anon_1.sk;
        if sk.is_null() {
            return false;
        }
        let Some(config) = POLICY.get(0) else {
            return false;
        };
        let netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
        if netns_cookie != config.netns_cookie
            || get(&(*sk).src_port) != u32::from(config.proxy_port)
        {
            return false;
        }
        let key = ClientKey {
            netns_cookie,
            client: peer_end(sk),
        };
        let Some(original) = BY_CLIENT_NS.get(key).copied() else {
            return false; // not one of ours: the kernel's answer stands
        };
        let optval = (*so).__bindgen_anon_2.optval as *mut u8;
        let end = (*so).__bindgen_anon_3.optval_end as *mut u8;
        let port = (original.port as u16).to_be();
        if level == SOL_IP && original.family == AF_INET {
            const LEN: usize = core::mem::size_of::<SockaddrIn>();
            if optval.add(LEN) > end {
                return false;
            }
            let answer = SockaddrIn {
                family: AF_INET as u16,
                port,
                addr: original.addr[0],
                zero: [0; 8],
            };
            (optval as *mut SockaddrIn).write_unaligned(answer);
            set(&mut (*so).optlen, LEN as i32);
        } else if level == SOL_IPV6 && original.family == AF_INET6 {
            const LEN: usize = core::mem::size_of::<SockaddrIn6>();
            if optval.add(LEN) > end {
                return false;
            }
            let answer = SockaddrIn6 {
                family: AF_INET6 as u16,
                port,
                flowinfo: 0,
                addr: original.addr,
                scope_id: 0,
            };
            (optval as *mut SockaddrIn6).write_unaligned(answer);
            set(&mut (*so).optlen, LEN as i32);
        } else {
            return false;
        }
        set(&mut (*so).retval, 0);
        true
    }
}

/// getpeername on a redirected socket: the original destination, not the proxy.
#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4.
    unsafe {
        if let Some(original) = BY_COOKIE.get(bpf_get_socket_cookie(ctx.as_ptr())).copied()
            && original.family == AF_INET
        {
            set(&mut (*sa).user_ip4, original.addr[0]);
            set(
                &mut (*sa).user_port,
                u32::from((original.port as u16).to_be()),
            );
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect6.
    unsafe {
        if let Some(original) = BY_COOKIE.get(bpf_get_socket_cookie(ctx.as_ptr())).copied()
            && original.family == AF_INET6
        {
            set(&mut (*sa).user_ip6[0], original.addr[0]);
            set(&mut (*sa).user_ip6[1], original.addr[1]);
            set(&mut (*sa).user_ip6[2], original.addr[2]);
            set(&mut (*sa).user_ip6[3], original.addr[3]);
            set(
                &mut (*sa).user_port,
                u32::from((original.port as u16).to_be()),
            );
        }
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
pub fn forget_socket(ctx: SockContext) -> i32 {
    // SAFETY: the kernel passes a valid context.
    unsafe {
        forget_cookie(bpf_get_socket_cookie(ctx.as_ptr()));
    }
    ALLOW
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier proves that no path of a loaded program reaches a panic.
    unsafe { core::hint::unreachable_unchecked() }
}
