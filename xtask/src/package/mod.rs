//! `cargo xtask package`: the Debian package, assembled from the workspace with dpkg-deb.
//!
//! Contents: both binaries, the systemd units, the sysusers file, the default configuration,
//! man pages ([`man`]) and shell completions ([`completions`]) generated from the clap
//! definitions of the `*-args` crates, and maintainer scripts (packaging/debian/) that create
//! the group and user, reload systemd, stop and disable the units on removal, and on purge
//! remove what the package created. [`arch`] names the package for this machine.

mod arch;
mod completions;
#[cfg(test)]
mod help;
mod man;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use crate::{Result, root, step};

pub(crate) const PACKAGE: &str = "bip324-redirect";

fn version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// Where the package for Debian architecture `arch` is written: Debian's
/// `NAME_VERSION_ARCH.deb`, the name `apt-get install ./target/debian/...` is given.
pub(crate) fn deb_path(arch: &str) -> PathBuf {
    root().join(format!("target/debian/{PACKAGE}_{}_{arch}.deb", version()))
}

/// Builds the release binaries and the package; returns its path.
pub(crate) fn run() -> Result<PathBuf> {
    step(
        env!("CARGO"),
        &[
            "build",
            "--release",
            "-p",
            "bip324-proxy",
            "-p",
            "bip324-redirect",
        ],
    )?;
    let arch = arch::architecture()?;
    let stage = root().join("target/debian/stage");
    let _ = std::fs::remove_dir_all(&stage);
    let install = |from: &Path, to: &str, mode: u32| -> Result {
        let dest = stage.join(to);
        std::fs::create_dir_all(dest.parent().expect("a directory")).map_err(|e| e.to_string())?;
        std::fs::copy(from, &dest).map_err(|e| format!("{}: {e}", from.display()))?;
        set_mode(&dest, mode)
    };
    let root = root();
    for binary in ["bip324-proxy", "bip324-redirect"] {
        install(
            &root.join("target/release").join(binary),
            &format!("usr/bin/{binary}"),
            0o755,
        )?;
        // Symbols stay in target/release for debugging; the package ships stripped binaries.
        step(
            "strip",
            &[
                "--strip-unneeded",
                path_str(&stage.join("usr/bin").join(binary)),
            ],
        )?;
    }
    for unit in [
        "bip324-proxy.socket",
        "bip324-proxy.service",
        "bip324-redirect.service",
        "bip324-proxy-socks5.socket",
        "bip324-proxy-inbound.socket",
        "bip324-proxy-inbound.service",
        "bip324-redirect-inbound.service",
    ] {
        install(
            &root.join("systemd").join(unit),
            &format!("usr/lib/systemd/system/{unit}"),
            0o644,
        )?;
    }
    install(
        &root.join("systemd/nftables.service.d/bip324-redirect.conf"),
        "usr/lib/systemd/system/nftables.service.d/bip324-redirect.conf",
        0o644,
    )?;
    install(
        &root.join("systemd/bip324.sysusers"),
        "usr/lib/sysusers.d/bip324.conf",
        0o644,
    )?;
    for config in ["proxy.conf", "redirect.conf", "inbound.conf"] {
        install(
            &root.join("packaging/config").join(config),
            &format!("etc/bip324/{config}"),
            0o644,
        )?;
    }
    install(
        &root.join("README.md"),
        "usr/share/doc/bip324-redirect/README.md",
        0o644,
    )?;
    // The README links to these, so its links resolve in the installed copy too.
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .and_then(|dir| dir.map(|entry| entry.map(|e| e.file_name())).collect())
        .map_err(|e| format!("cannot list docs/: {e}"))?;
    docs.sort();
    for doc in docs
        .iter()
        .filter_map(|d| d.to_str())
        .filter(|d| d.ends_with(".md"))
    {
        install(
            &root.join("docs").join(doc),
            &format!("usr/share/doc/bip324-redirect/docs/{doc}"),
            0o644,
        )?;
    }
    install(
        &root.join("packaging/debian/copyright"),
        "usr/share/doc/bip324-redirect/copyright",
        0o644,
    )?;
    install(
        &root.join("packaging/debian/changelog"),
        "usr/share/doc/bip324-redirect/changelog.Debian",
        0o644,
    )?;
    // -n: no name or time stamp in the archive, so the package is reproducible.
    step(
        "gzip",
        &[
            "-9nf",
            path_str(&stage.join("usr/share/doc/bip324-redirect/changelog.Debian")),
        ],
    )?;
    install(
        &root.join("packaging/debian/lintian-overrides"),
        "usr/share/lintian/overrides/bip324-redirect",
        0o644,
    )?;

    let commands = [
        (bip324_proxy_args::Config::command(), man::PROXY),
        (bip324_redirect_args::Cli::command(), man::REDIRECT),
    ];
    for (command, extra) in &commands {
        man::write_pages(command, &stage.join("usr/share/man/man8"), extra)?;
        completions::write(command.clone(), &stage)?;
    }

    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian).map_err(|e| e.to_string())?;
    std::fs::write(debian.join("control"), control(&stage, &arch)?).map_err(|e| e.to_string())?;
    std::fs::write(
        debian.join("conffiles"),
        "/etc/bip324/proxy.conf\n/etc/bip324/redirect.conf\n/etc/bip324/inbound.conf\n",
    )
    .map_err(|e| e.to_string())?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &root.join("packaging/debian").join(script),
            &format!("DEBIAN/{script}"),
            0o755,
        )?;
    }

    let deb = deb_path(&arch);
    step(
        "dpkg-deb",
        &[
            "--build",
            "--root-owner-group",
            stage.to_str().expect("UTF-8"),
            deb.to_str().expect("UTF-8"),
        ],
    )?;
    eprintln!("==> {}", deb.display());
    Ok(deb)
}

pub(super) fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn set_mode(path: &Path, mode: u32) -> Result {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

fn control(stage: &Path, arch: &str) -> Result<String> {
    let size_kib = disk_usage_kib(stage)?;
    Ok(format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: {arch}
Maintainer: bip324-redirect developers <bip324-redirect@users.noreply.github.com>
Installed-Size: {size_kib}
Depends: libc6 (>= 2.34), libgcc-s1, libnftnl11 (>= 1.2.0), libmnl0, systemd
Section: net
Priority: optional
Homepage: https://github.com/bip324-redirect/bip324-redirect
Description: BIP-324 encrypted transport for unmodified Bitcoin light clients
 The kernel sends the outbound Bitcoin P2P connections of processes running
 with group btc to a local proxy (nftables or cgroup eBPF), which finds their
 real destination with SO_ORIGINAL_DST, performs the BIP-324 v2 handshake and
 translates v1 <-> v2 both ways. Clients need no patch: start them with
 `sg btc -c ...` after `systemctl enable --now bip324-proxy.socket
 bip324-redirect.service`.
 .
 Inbound mode gives a local node that speaks only v1 BIP-324 for its inbound
 peers: the proxy answers them as Bitcoin Core would and connects to the node
 as each peer, so the node still sees its real peers (off by default).
",
        version = version()
    ))
}

fn disk_usage_kib(dir: &Path) -> Result<u64> {
    let out = Command::new("du")
        .args(["-sk", "--exclude=DEBIAN"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "cannot measure the package size".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the build makes here is what dpkg calls this machine (the package was labelled
    /// amd64 on every machine), and the file name says it as `apt-get install
    /// ./target/debian/bip324-redirect_*_$(dpkg --print-architecture).deb` expects.
    #[test]
    fn the_package_is_labelled_with_this_machines_architecture() {
        let dpkg = Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .expect("dpkg runs (the package is built on Debian)");
        let dpkg = String::from_utf8_lossy(&dpkg.stdout).trim().to_string();
        let arch = arch::architecture().expect("known");
        assert_eq!(arch, dpkg);
        let deb = deb_path(&arch);
        let file = deb.file_name().and_then(|f| f.to_str()).expect("a name");
        assert_eq!(
            file,
            format!("bip324-redirect_{}-1_{dpkg}.deb", env!("CARGO_PKG_VERSION"))
        );
        let control = control(&root().join("xtask/src"), &arch).expect("control");
        assert!(control.contains(&format!("\nArchitecture: {dpkg}\n")));
    }
}
