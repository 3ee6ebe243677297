//! Installs what the build and the tests need on Debian 12, and nothing when it is there.

use std::process::{Command, Stdio};

use crate::{Result, step};

/// What a task needs installed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Need {
    /// Building the binaries and the package (`run`, `package`): no test-only tool.
    Build,
    /// Everything the tests use as well (`setup`, `test`, `system-test`, `fresh-machine`).
    All,
}

/// How many entries at the head of [`PACKAGES`] a build needs; the rest only the tests.
const BUILD_PACKAGES: usize = 4;

/// Debian packages: what each is for. A fresh Debian 12 machine with Rust has none of these
/// (or not all): `cargo xtask` itself builds without them, then installs them here. Those a
/// build needs come first.
const PACKAGES: &[(&str, &str)] = &[
    (
        "pkg-config",
        "finds libnftnl and libmnl when building bip324-redirect",
    ),
    (
        "libnftnl-dev",
        "nftables over netlink, for bip324-redirect's nftables backend",
    ),
    (
        "libmnl-dev",
        "netlink sockets, for bip324-redirect's nftables backend",
    ),
    ("binutils", "`strip`: the package ships stripped binaries"),
    (
        "iproute2",
        "`ip netns`, veth links: the hosts of the end-to-end tests",
    ),
    (
        "nftables",
        "`nft`: the redirect of the proxy's end-to-end tests",
    ),
    (
        "bpftool",
        "lists kernel BPF objects: the eBPF end-to-end tests check what is left behind",
    ),
    (
        "systemd",
        "`systemd-socket-activate`: the proxy's socket-activation test",
    ),
    (
        "microsocks",
        "an independent SOCKS5 server: the upstream of the proxy's SOCKS5 tests",
    ),
    (
        "lintian",
        "checks the Debian package against Debian's policy in the system test",
    ),
    (
        "debootstrap",
        "Debian roots for the system test and the fresh-machine test",
    ),
    (
        "systemd-container",
        "`systemd-nspawn`: boots the system test's root with a real systemd",
    ),
    (
        "chromium",
        "a real browser, headless: the dashboard's end-to-end test opens the page in it",
    ),
    (
        "chromium-driver",
        "`chromedriver` (WebDriver): how the dashboard's test drives the browser",
    ),
];

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The packages `need` calls for, with what each is for.
pub(crate) fn packages(need: Need) -> &'static [(&'static str, &'static str)] {
    match need {
        Need::Build => &PACKAGES[..BUILD_PACKAGES],
        Need::All => PACKAGES,
    }
}

/// Everything: what `setup`, `test` and the tests' tasks need.
pub(crate) fn run() -> Result {
    run_for(Need::All)
}

/// What `need` calls for, installed as root (apt-get), or named in the error without root.
pub(crate) fn run_for(need: Need) -> Result {
    let wanted = packages(need);
    let missing: Vec<&str> = wanted
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (package, why) in wanted.iter().filter(|(p, _)| missing.contains(p)) {
        eprintln!("    missing {package}: {why}");
    }
    if !is_root() {
        return Err(format!(
            "Debian packages are missing; install them with: sudo apt-get install -y {}",
            missing.join(" ")
        ));
    }
    step("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    step("apt-get", &args)
}
