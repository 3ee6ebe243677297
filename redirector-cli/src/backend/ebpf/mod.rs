//! The cgroup eBPF backend: the programs of `redirector-ebpf`, attached to a cgroup (the
//! root of the cgroup v2 hierarchy by default), with programs, links and maps pinned in one
//! directory of the BPF filesystem so the redirect outlives this command.
//!
//! The object is the one committed in `redirector-ebpf/prebuilt/`, built from this
//! repository's source by `cargo xtask ebpf` (CI checks it is current), so the CLI builds
//! with stable Rust alone.
//!
//! Long because loading, gapless replacement, inspection and the policy's map layout of one
//! backend change together; mounts and the sockopt link live beside it.

pub(crate) mod mounts;
mod sockopt_link;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::EbpfLoader;
use aya::maps::{Array, HashMap, Map, MapData, MapInfo, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, Program};
use caps::Capability;
use redirector_ebpf::{
    BY_CLIENT_MAP, BY_COOKIE_MAP, CLIENT_ADDED, CLIENT_REMOVED, CONFIG_MAP, COOKIE_ADDED,
    COOKIE_REMOVED, COUNTERS_MAP, ClientKey, Config, Endpoint, MAPS, MAX_CONNECTIONS,
    MAX_EXEMPT_USERS, MAX_PORTS, PROGRAMS,
};

use super::Inspection;
use crate::error::Error;
use crate::policy::{Id, Policy};
use crate::privileges;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../redirector-ebpf/prebuilt/redirector-ebpf.bpf.o"
));

/// Loading programs, attaching them to a cgroup, and pinning them.
const NEEDED: [Capability; 3] = [
    Capability::CAP_BPF,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
];

/// The directory in bpffs holding everything this backend installs. Tests give each run its
/// own with `BIP324_REDIRECT_BPF_DIR`.
pub(crate) fn pin_dir() -> PathBuf {
    std::env::var_os("BIP324_REDIRECT_BPF_DIR").map_or_else(
        || Path::new(mounts::BPFFS).join("bip324-redirect"),
        PathBuf::from,
    )
}

// bpffs refuses names with a dot: pins are named with underscores.
fn link_pin(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("{program}_link"))
}

fn program_pin(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("{program}_prog"))
}

/// Installs `policy` below `cgroup`, replacing an earlier instance with no gap: the new
/// policy goes into the shared pinned map first (old programs follow it at once), the new
/// programs are attached beside the old ones, and only then do their pins replace the old.
pub(crate) fn apply(policy: &Policy, cgroup: &Path) -> Result<(), Error> {
    privileges::require(&NEEDED, "bip324-redirect enable --backend ebpf")?;
    let config = config_of(policy)?;
    mounts::require_cgroup2(cgroup)?;
    let dir = pin_dir();
    mounts::ensure_bpffs(&dir)?;
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let config = Config {
        netns_cookie: netns_cookie()?,
        ..config
    };
    // Leftovers of an interrupted enable would block the new pins.
    for program in PROGRAMS {
        for pin in [link_pin(&dir, program), program_pin(&dir, program)] {
            let _ = std::fs::remove_file(staged(&pin));
        }
    }

    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .load(OBJECT)
        .map_err(|e| kernel("load the eBPF object (an older, incompatible instance may be pinned: run `bip324-redirect disable` first)", e))?;
    let map = ebpf
        .map_mut(CONFIG_MAP)
        .ok_or_else(|| missing(CONFIG_MAP))?;
    let mut config_map: Array<&mut MapData, Config> =
        Array::try_from(map).map_err(|e| kernel("open the policy map", e))?;
    config_map
        .set(0, config, 0)
        .map_err(|e| kernel("write the policy map", e))?;

    let cgroup_file = File::open(cgroup).map_err(|e| io(cgroup, e))?;
    for name in PROGRAMS {
        let program = ebpf.program_mut(name).ok_or_else(|| missing(name))?;
        attach_and_pin(program, &cgroup_file, &staged(&link_pin(&dir, name)))
            .map_err(|e| kernel(&format!("attach {name}"), e))?;
        program
            .pin(staged(&program_pin(&dir, name)))
            .map_err(|e| kernel(&format!("pin {name}"), e))?;
    }
    for name in PROGRAMS {
        for pin in [program_pin(&dir, name), link_pin(&dir, name)] {
            // Replacing a link's pin drops the old link: its program detaches.
            std::fs::rename(staged(&pin), &pin).map_err(|e| io(&pin, e))?;
        }
    }
    remove_stale_pins(&dir)
}

/// Pins of an older version (maps since renamed, programs since dropped): their programs
/// were replaced above, so unpinning them frees what is left.
fn remove_stale_pins(dir: &Path) -> Result<(), Error> {
    let current: Vec<PathBuf> = PROGRAMS
        .iter()
        .flat_map(|p| [program_pin(dir, p), link_pin(dir, p)])
        .chain(MAPS.iter().map(|m| dir.join(m)))
        .collect();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if !current.contains(&path) {
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// The cookie of this process's network namespace: the programs act in this one only.
fn netns_cookie() -> Result<u64, Error> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd;
    /// From asm-generic/socket.h (Linux 5.14); not in libc or nix yet.
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::kernel("open a socket", std::io::Error::from(e), |_| None))?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(Error::kernel(
            "read this network namespace's cookie",
            std::io::Error::last_os_error(),
            |_| Some("SO_NETNS_COOKIE needs Linux 5.14"),
        ));
    }
    Ok(cookie)
}

/// Where a pin is made before it replaces the old one.
fn staged(pin: &Path) -> PathBuf {
    let mut name = pin.file_name().unwrap_or_default().to_os_string();
    name.push("_new");
    pin.with_file_name(name)
}

/// Loads `program`, attaches it to `cgroup` beside any other program there, and pins the
/// link at `pin` so the attachment outlives this process.
fn attach_and_pin(
    program: &mut Program,
    cgroup: &File,
    pin: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // bpf_link attachments always coexist with other programs on the cgroup (the kernel
    // refuses BPF_F_ALLOW_MULTI for links): the plain mode is the right one.
    let mode = CgroupAttachMode::Single;
    let link: FdLink = match program {
        Program::CgroupSockAddr(p) => {
            p.load()?;
            let id = p.attach(cgroup, mode)?;
            p.take_link(id)?.try_into()?
        }
        Program::SockOps(p) => {
            p.load()?;
            let id = p.attach(cgroup, mode)?;
            p.take_link(id)?.try_into()?
        }
        Program::CgroupSock(p) => {
            p.load()?;
            let id = p.attach(cgroup, mode)?;
            p.take_link(id)?.try_into()?
        }
        Program::CgroupSockopt(p) => {
            p.load()?;
            return Ok(sockopt_link::attach_getsockopt(
                p.fd()?.as_fd(),
                cgroup.as_fd(),
                pin,
            )?);
        }
        other => return Err(format!("unexpected program type {:?}", other.prog_type()).into()),
    };
    link.pin(pin)?;
    Ok(())
}

/// Removes the pin directory and everything in it; `Ok(false)` when there was none.
pub(crate) fn remove() -> Result<bool, Error> {
    let dir = pin_dir();
    if !dir.is_dir() {
        return Ok(false);
    }
    privileges::require(&NEEDED, "removing the eBPF redirect")?;
    for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
        let path = entry.map_err(|e| io(&dir, e))?.path();
        // Unpinning the links detaches the programs; the rest is then freed.
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
    }
    std::fs::remove_dir(&dir).map_err(|e| io(&dir, e))?;
    Ok(true)
}

/// Reads back what is pinned: the policy in the config map and each program's link.
pub(crate) fn inspect(expected: Option<&Policy>) -> Result<Inspection, Error> {
    let dir = pin_dir();
    if !dir.is_dir() {
        return Ok(Inspection::absent());
    }
    privileges::require(&NEEDED, "reading the eBPF redirect")?;
    let mut inspection = Inspection {
        present: true,
        ..Inspection::default()
    };
    match read_config(&dir) {
        Ok(config) => {
            let policy = policy_of(&config);
            inspection
                .objects
                .push(format!("policy map: {}", policy.describe()));
            if netns_cookie().is_ok_and(|here| here != config.netns_cookie) {
                inspection.details.push(
                    "the programs act in another network namespace than this one (enabled \
                     from a container or `ip netns exec`?)"
                        .to_string(),
                );
            }
            if let Some(expected) = expected {
                // The namespace is judged above; the policy here.
                let wanted = config_of(expected).map(|c| Config {
                    netns_cookie: config.netns_cookie,
                    ..c
                });
                if wanted.ok() != Some(config) {
                    inspection
                        .details
                        .push(format!("the pinned policy is `{}`", policy.describe()));
                }
            }
            inspection.policy = Some(policy);
        }
        Err(e) => inspection.details.push(e.to_string()),
    }
    for name in PROGRAMS {
        match PinnedLink::from_pin(link_pin(&dir, name)).map(|link| FdLink::from(link).info()) {
            Ok(Ok(info)) => {
                inspection.program_ids.push(info.program_id());
                inspection.objects.push(format!(
                    "{name} attached (program {}, link {})",
                    info.program_id(),
                    info.id()
                ));
            }
            _ => inspection
                .details
                .push(format!("program {name} is not attached")),
        }
    }
    for name in MAPS {
        if let Ok(info) = MapInfo::from_pin(dir.join(name)) {
            inspection.map_ids.push(info.id());
        }
    }
    match MapUsage::read(&dir) {
        Ok(usage) => {
            inspection.objects.push(usage.describe());
            inspection.warnings.extend(usage.warning());
        }
        Err(e) => inspection
            .details
            .push(format!("cannot read the connection maps: {e}")),
    }
    inspection.matches = expected.map(|_| inspection.details.is_empty());
    Ok(inspection)
}

/// How full the connection maps are, and how many records the kernel evicted from them since
/// `enable` made them: each eviction may cost a redirected connection (the proxy then refuses
/// it; never plaintext). The maps are shared by every member of the group (documented limit
/// of `MAX_CONNECTIONS` open redirected connections).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MapUsage {
    pub by_cookie: u64,
    pub by_client: u64,
    pub evicted: u64,
}

impl MapUsage {
    fn read(dir: &Path) -> Result<MapUsage, Error> {
        fn entries<K: aya::Pod>(dir: &Path, name: &str) -> Result<u64, Error> {
            let data = MapData::from_pin(dir.join(name))
                .map_err(|e| kernel(&format!("open the pinned map {name}"), e))?;
            let map: HashMap<MapData, K, Endpoint> = HashMap::try_from(Map::LruHashMap(data))
                .map_err(|e| kernel(&format!("read the pinned map {name}"), e))?;
            Ok(map.keys().filter(Result::is_ok).count() as u64)
        }
        let data = MapData::from_pin(dir.join(COUNTERS_MAP))
            .map_err(|e| kernel("open the pinned counters map", e))?;
        let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))
            .map_err(|e| kernel("read the pinned counters map", e))?;
        let count = |slot: u32| -> Result<u64, Error> {
            let values = counters
                .get(&slot, 0)
                .map_err(|e| kernel("read the counters", e))?;
            Ok(values.iter().sum())
        };
        let by_cookie = entries::<u64>(dir, BY_COOKIE_MAP)?;
        let by_client = entries::<ClientKey>(dir, BY_CLIENT_MAP)?;
        Ok(MapUsage::from_counts(
            by_cookie,
            by_client,
            [
                count(COOKIE_ADDED)?,
                count(COOKIE_REMOVED)?,
                count(CLIENT_ADDED)?,
                count(CLIENT_REMOVED)?,
            ],
        ))
    }

    /// What was added, less what was removed and what is still there, went by eviction.
    fn from_counts(by_cookie: u64, by_client: u64, counters: [u64; 4]) -> MapUsage {
        let [cookie_added, cookie_removed, client_added, client_removed] = counters;
        let evicted = cookie_added
            .saturating_sub(cookie_removed)
            .saturating_sub(by_cookie)
            + client_added
                .saturating_sub(client_removed)
                .saturating_sub(by_client);
        MapUsage {
            by_cookie,
            by_client,
            evicted,
        }
    }

    fn describe(&self) -> String {
        format!(
            "connection maps: {} and {} of {MAX_CONNECTIONS} records; {} evicted since enable",
            self.by_cookie, self.by_client, self.evicted
        )
    }

    fn warning(&self) -> Option<String> {
        (self.evicted > 0).then(|| {
            format!(
                "the eBPF connection maps were full: {} records were evicted, and the \
                 connections they belonged to may have been refused (never sent in plaintext); \
                 the {MAX_CONNECTIONS} records are shared by every member of the group, so one \
                 member with very many open connections can crowd out the others",
                self.evicted
            )
        })
    }
}

fn read_config(dir: &Path) -> Result<Config, Error> {
    let data = MapData::from_pin(dir.join(CONFIG_MAP))
        .map_err(|e| kernel("open the pinned policy map", e))?;
    let array: Array<MapData, Config> =
        Array::try_from(Map::Array(data)).map_err(|e| kernel("read the pinned policy map", e))?;
    array
        .get(&0, 0)
        .map_err(|e| kernel("read the pinned policy", e))
}

fn config_of(policy: &Policy) -> Result<Config, Error> {
    if policy.exempt_users.len() > MAX_EXEMPT_USERS {
        return Err(Error::Config(format!(
            "the eBPF backend takes at most {MAX_EXEMPT_USERS} --exempt-user"
        )));
    }
    if !policy.sources.is_empty() {
        return Err(Error::Config(
            "the eBPF backend sees only this host's own connections, not what it forwards: \
             --from-interface and --from need --backend nftables"
                .into(),
        ));
    }
    let Some(group) = &policy.group else {
        return Err(Error::Config("the eBPF backend needs --group".into()));
    };
    let mut config = Config {
        gid: group.id,
        proxy_port: policy.proxy_port,
        port_count: policy.ports.len() as u16,
        exempt_count: policy.exempt_users.len() as u32,
        ..Config::default()
    };
    // Policy::new caps the ports at MAX_PORTS.
    config.ports[..policy.ports.len()]
        .copy_from_slice(&policy.ports[..policy.ports.len().min(MAX_PORTS)]);
    for (slot, user) in config.exempt_uids.iter_mut().zip(&policy.exempt_users) {
        *slot = user.id;
    }
    Ok(config)
}

fn policy_of(config: &Config) -> Policy {
    let ports = &config.ports[..usize::from(config.port_count).min(MAX_PORTS)];
    let exempt = &config.exempt_uids[..(config.exempt_count as usize).min(MAX_EXEMPT_USERS)];
    Policy {
        group: Some(Id {
            id: config.gid,
            name: None,
        }),
        sources: Vec::new(),
        ports: ports.to_vec(),
        proxy_port: config.proxy_port,
        exempt_users: exempt.iter().map(|&id| Id { id, name: None }).collect(),
    }
}

fn kernel(action: &str, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::kernel(action, error, |errno| {
        (errno == libc::EPERM)
            .then_some("missing CAP_BPF / CAP_NET_ADMIN / CAP_SYS_ADMIN, or a locked-down kernel")
    })
}

fn missing(name: &str) -> Error {
    Error::Unsupported(format!(
        "the embedded eBPF object has no {name}: rebuild it with `cargo xtask ebpf`"
    ))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path.display().to_string(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_survives_the_config_map_layout() {
        let policy = Policy::new(
            Id {
                id: 1001,
                name: None,
            },
            &[8333, 18333, 18444],
            1324,
            vec![Id {
                id: 105,
                name: None,
            }],
        )
        .unwrap();
        let config = config_of(&policy).unwrap();
        assert_eq!(config.port_count, 3);
        assert_eq!(policy_of(&config), policy);
    }

    #[test]
    fn evictions_are_what_was_added_and_neither_removed_nor_still_there() {
        let usage = MapUsage::from_counts(65536, 10, [70000, 100, 20, 10]);
        assert_eq!(usage.evicted, 70000 - 100 - 65536);
        assert!(
            usage
                .warning()
                .unwrap()
                .contains("4364 records were evicted")
        );
        let quiet = MapUsage::from_counts(5, 5, [10, 5, 7, 2]);
        assert_eq!(quiet.evicted, 0);
        assert_eq!(quiet.warning(), None);
        // Records made before the counters existed (an upgrade) are no evictions.
        assert_eq!(MapUsage::from_counts(50, 0, [0, 10, 0, 0]).evicted, 0);
    }

    #[test]
    fn too_many_exempt_users_is_a_configuration_error() {
        let users = (0..9).map(|id| Id { id, name: None }).collect();
        let policy = Policy::new(Id { id: 1, name: None }, &[8333], 1324, users).unwrap();
        assert!(matches!(config_of(&policy), Err(Error::Config(_))));
    }

    #[test]
    fn the_embedded_object_has_every_program_and_map() {
        let object = aya_obj::Object::parse(OBJECT).expect("a valid eBPF object");
        for name in PROGRAMS {
            assert!(object.programs.contains_key(name), "program {name}");
        }
        for name in MAPS {
            assert!(object.maps.contains_key(name), "map {name}");
        }
    }
}
