//! `cargo xtask fresh-machine`: the README's first command, `cargo xtask package`, then
//! `cargo xtask run`, on a Debian bookworm root that has only what a fresh machine of this
//! project's kind has (a C compiler, git, curl, systemd; none of the packages this project
//! installs), with the host's Rust toolchain mounted read-only and the source tree copied in
//! as a clone would have it.
//!
//! It passes when the package that command builds is named and labelled for this machine's
//! architecture (`Package`, `Architecture`: what `apt-get install
//! ./target/debian/bip324-redirect_*_$(dpkg --print-architecture).deb` needs), when the proxy
//! `cargo xtask run` starts listens on its default addresses, and when `cargo xtask setup`
//! then installs everything the test command needs. A developer's machine cannot hide a
//! missing install step here: if `cargo xtask` needed a system library to build itself, or a
//! task's set-up forgot a package, this fails.
//!
//! The root runs in mount and PID namespaces of its own (`unshare --kill-child`): every mount
//! and process goes away with it. It shares the host's network, to reach Debian's and
//! crates.io's registries, so the proxy listens on the host's loopback while it runs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::debian_root::{self, path};
use crate::{Result, root};

/// What this project's machines come with, among what a build could touch (Rust aside).
const INCLUDE: &str =
    "ca-certificates,curl,gcc,libc6-dev,make,git,xz-utils,procps,iproute2,systemd";
/// Where the copy of the source lives inside the root.
const SOURCE: &str = "root/bip324-redirect";
/// Commands the test command calls that `cargo xtask setup` must have installed.
const SET_UP_BY_SETUP: &str = "pkg-config nft bpftool debootstrap systemd-nspawn systemd-socket-activate ip strip lintian bpf-linker microsocks";
/// A cold build of xtask and the release proxy on two cores takes a few minutes.
const RUN_DEADLINE: Duration = Duration::from_secs(40 * 60);
const SETUP_DEADLINE: Duration = Duration::from_secs(20 * 60);

pub(crate) fn run() -> Result {
    let listen: Vec<SocketAddr> = bip324_proxy_args::DEFAULT_LISTEN
        .iter()
        .map(|a| a.parse().expect("valid default address"))
        .collect();
    if let Some(busy) = listen.iter().find(|a| listening(a)) {
        return Err(format!(
            "fresh-machine test: {busy} is already in use on this host (a bip324-proxy running \
             here?); stop it, the test's proxy must be the one listening there"
        ));
    }

    let work = root().join("target/fresh-machine");
    let pristine = debian_root::pristine(&work, INCLUDE, "usr/bin/gcc")?;
    let scratch = debian_root::copy(&pristine, &work)?;
    let rootfs = scratch.path();
    copy_source(&rootfs.join(SOURCE))?;
    // The machine's own settings, which a fresh machine has as well: its name servers, and
    // the certificates it trusts (a machine may reach the registries through a local CA).
    for file in ["etc/resolv.conf", "etc/ssl/certs/ca-certificates.crt"] {
        std::fs::copy(Path::new("/").join(file), rootfs.join(file))
            .map_err(|e| format!("/{file}: {e}"))?;
    }
    let log = work.join("log");
    let _ = std::fs::remove_file(&log);

    package(rootfs, &log)?;

    let started = Instant::now();
    eprintln!(
        "==> fresh machine: `cargo xtask run` in {} (log: {})",
        rootfs.display(),
        log.display()
    );
    let mut proxy = Chroot::spawn(rootfs, "cargo xtask run", &log)?;
    loop {
        if listen.iter().all(listening) {
            break;
        }
        if let Some(status) = proxy.child.try_wait().map_err(|e| e.to_string())? {
            return Err(failure(
                &log,
                &format!("`cargo xtask run` exited ({status})"),
            ));
        }
        if started.elapsed() > RUN_DEADLINE {
            return Err(failure(&log, "the proxy did not listen in time"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "    ok: `cargo xtask run` brought the proxy up on {} in {} s",
        listen
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        started.elapsed().as_secs()
    );
    drop(proxy);

    let started = Instant::now();
    eprintln!("==> fresh machine: `cargo xtask setup`, then the test command's tools");
    let mut setup = Chroot::spawn(
        rootfs,
        &format!(
            "cargo xtask setup && for tool in {SET_UP_BY_SETUP}; do \
             command -v $tool >/dev/null || {{ echo \"setup left $tool missing\"; exit 1; }}; done"
        ),
        &log,
    )?;
    let status = loop {
        if let Some(status) = setup.child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > SETUP_DEADLINE {
            return Err(failure(&log, "`cargo xtask setup` did not finish in time"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        return Err(failure(
            &log,
            &format!("`cargo xtask setup` failed ({status})"),
        ));
    }
    eprintln!(
        "    ok: `cargo xtask setup` installed {SET_UP_BY_SETUP} in {} s",
        started.elapsed().as_secs()
    );
    eprintln!("==> fresh-machine test passed");
    Ok(())
}

/// `cargo xtask package` first, as the README's quick start does: it must set up what the
/// build needs itself, and write the package under the name the README installs.
fn package(rootfs: &Path, log: &Path) -> Result {
    let started = Instant::now();
    eprintln!(
        "==> fresh machine: `cargo xtask package` in {} (log: {})",
        rootfs.display(),
        log.display()
    );
    let mut build = Chroot::spawn(rootfs, "cargo xtask package", log)?;
    let status = loop {
        if let Some(status) = build.child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            return Err(failure(log, "`cargo xtask package` did not finish in time"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        return Err(failure(
            log,
            &format!("`cargo xtask package` failed ({status})"),
        ));
    }
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .map_err(|e| format!("cannot run dpkg: {e}"))?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deb = rootfs.join(SOURCE).join(format!(
        "target/debian/{}_{}-1_{arch}.deb",
        crate::package::PACKAGE,
        env!("CARGO_PKG_VERSION")
    ));
    if !deb.exists() {
        let made = std::fs::read_dir(rootfs.join(SOURCE).join("target/debian"))
            .map(|dir| {
                dir.filter_map(std::result::Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        return Err(failure(
            log,
            &format!(
                "no {} after `cargo xtask package` (target/debian has: {made})",
                deb.display()
            ),
        ));
    }
    let fields = Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .args(["Package", "Architecture"])
        .output()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let fields = String::from_utf8_lossy(&fields.stdout);
    let expected = format!(
        "Package: {}\nArchitecture: {arch}\n",
        crate::package::PACKAGE
    );
    if fields != expected {
        return Err(format!(
            "fresh-machine test: {} has\n{fields}instead of\n{expected}",
            deb.display()
        ));
    }
    eprintln!(
        "    ok: `cargo xtask package` built {} ({}) in {} s",
        deb.file_name().unwrap_or_default().to_string_lossy(),
        fields.trim().replace('\n', ", "),
        started.elapsed().as_secs()
    );
    Ok(())
}

/// The files a clone would have: tracked ones, and new ones git does not ignore.
fn copy_source(dest: &Path) -> Result {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err("`git ls-files` failed: the fresh-machine test copies a git checkout".into());
    }
    for file in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let file = Path::new(std::str::from_utf8(file).map_err(|e| e.to_string())?);
        let from = root().join(file);
        if !from.exists() {
            continue; // deleted in the work tree, not yet in the index
        }
        let to = dest.join(file);
        std::fs::create_dir_all(to.parent().expect("a file has a parent"))
            .map_err(|e| e.to_string())?;
        std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    Ok(())
}

/// A shell command line run as root in the root, in the source's folder, in mount and PID
/// namespaces that die with it (on drop), with the host's rustup toolchains mounted read-only.
struct Chroot {
    child: Child,
}

impl Chroot {
    fn spawn(rootfs: &Path, command: &str, log: &Path) -> Result<Chroot> {
        let home = std::env::var("HOME").map_err(|_| "HOME is not set")?;
        let rustup = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
        let cargo_bin = std::env::var("CARGO_HOME")
            .map_or_else(|_| format!("{home}/.cargo/bin"), |c| format!("{c}/bin"));
        let script = format!(
            r#"set -e
R={root}
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
for pair in "{rustup}:opt/rust/rustup" "{cargo_bin}:opt/rust/bin"; do
    from="${{pair%%:*}}"; to="$R/${{pair#*:}}"
    mkdir -p "$to"; mount --bind "$from" "$to"; mount -o remount,bind,ro "$to"
done
exec chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/opt/rust/bin:/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rust/rustup CARGO_HOME=/root/.cargo RUSTUP_AUTO_INSTALL=0 \
    DEBIAN_FRONTEND=noninteractive \
    /bin/sh -e /root/step.sh
"#,
            root = path(rootfs),
        );
        std::fs::write(
            rootfs.join("root/step.sh"),
            format!("cd /{SOURCE}\n{command}\n"),
        )
        .map_err(|e| format!("step.sh: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--kill-child",
            ])
            .args(["/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        Ok(Chroot { child })
    }
}

impl Drop for Chroot {
    /// Killing unshare kills its child, PID 1 of the namespace, and so every process in it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a socket listens on `addr` (or on its family's wildcard) in this network
/// namespace.
fn listening(addr: &SocketAddr) -> bool {
    bip324_sock_diag::listeners_for(*addr).is_ok_and(|found| !found.is_empty())
}

/// An error naming what failed, with the end of the root's log.
fn failure(log: &Path, what: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n    ");
    format!(
        "fresh-machine test: {what}; the end of {}:\n    {tail}",
        log.display()
    )
}
