//! `cargo xtask package`: the Debian package, assembled from the workspace with dpkg-deb.
//!
//! Contents: both binaries, the systemd units, the sysusers file, the default configuration,
//! man pages and shell completions generated from the clap definitions, and maintainer
//! scripts (packaging/debian/) that create the group and user, reload systemd, stop and
//! disable the units on removal, and on purge remove what the package created.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use crate::{Result, root, step};

pub(crate) const PACKAGE: &str = "bip324-redirect";

fn version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// Where the package is written.
pub(crate) fn deb_path() -> PathBuf {
    root().join(format!("target/debian/{PACKAGE}_{}_amd64.deb", version()))
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
        (bip324_proxy::daemon::Config::command(), PROXY_MAN),
        (bip324_redirect_args::Cli::command(), REDIRECT_MAN),
    ];
    for (command, extra) in &commands {
        man_pages(command, &stage.join("usr/share/man/man8"), extra)?;
        completions(command.clone(), &stage)?;
    }

    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian).map_err(|e| e.to_string())?;
    std::fs::write(debian.join("control"), control(&stage)?).map_err(|e| e.to_string())?;
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

    let deb = deb_path();
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

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn set_mode(path: &Path, mode: u32) -> Result {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// What each binary's man pages say beyond `--help`.
struct ManExtra {
    files: &'static [(&'static str, &'static str)],
    see_also: &'static str,
}

const PROXY_MAN: ManExtra = ManExtra {
    files: &[
        (
            "/etc/bip324/proxy.conf",
            "options of bip324-proxy.service and bip324-proxy-inbound.service \
             (BIP324_PROXY_OPTIONS, BIP324_PROXY_INBOUND_OPTIONS)",
        ),
        (
            "/run/bip324-proxy/control.sock",
            "the control socket (bip324-redirect status)",
        ),
    ],
    see_also: "bip324-redirect(8), systemd.socket(5), journalctl(1)",
};

const REDIRECT_MAN: ManExtra = ManExtra {
    files: &[
        (
            "/etc/bip324/redirect.conf",
            "options of bip324-redirect.service (BIP324_REDIRECT_OPTIONS)",
        ),
        (
            "/etc/bip324/inbound.conf",
            "options of bip324-redirect-inbound.service (BIP324_INBOUND_OPTIONS)",
        ),
        (
            "/run/bip324-redirect/",
            "what enable recorded, per network namespace",
        ),
        (
            "/sys/fs/bpf/bip324-redirect/",
            "the eBPF backend's pinned programs and maps",
        ),
    ],
    see_also: "bip324-proxy(8), nft(8), bpftool(8), sg(1)",
};

/// A man page for the command and one per subcommand (`bip324-redirect-enable.8`, showing
/// `bip324-redirect enable` in its synopsis), gzipped: clap's sections, then the after-help
/// text as EXIT STATUS and ENVIRONMENT sections, FILES and SEE ALSO.
fn man_pages(command: &clap::Command, dir: &Path, extra: &ManExtra) -> Result {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let root = command.get_name().to_string();
    let command = command.clone().disable_help_subcommand(true);
    let mut pages = vec![(
        root.clone(),
        command.clone().version(env!("CARGO_PKG_VERSION")),
    )];
    for sub in command.get_subcommands() {
        let name = format!("{root}-{}", sub.get_name());
        let synopsis = format!("{root} {}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone().display_name(name).bin_name(synopsis),
        ));
    }
    for (name, page) in pages {
        let after_help = page.get_after_help().map(ToString::to_string);
        let page = page.after_help(None::<&'static str>);
        let text = render_man(page, after_help.as_deref(), extra).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{name}.8"));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        // -n: no name or time stamp in the archive, so the package is reproducible.
        step("gzip", &["-9nf", path.to_str().expect("UTF-8")])?;
    }
    Ok(())
}

fn render_man(
    page: clap::Command,
    after_help: Option<&str>,
    extra: &ManExtra,
) -> std::io::Result<Vec<u8>> {
    use clap_mangen::roff::{Roff, bold, roman};
    let has_arguments = page.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = page.get_subcommands().next().is_some();
    let has_version = page.get_version().is_some();
    // Built, so that the generated -h and -V are among its arguments.
    let mut page_for_synopsis = page.clone();
    page_for_synopsis.build();
    let man = clap_mangen::Man::new(page).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    render_synopsis(&page_for_synopsis, &mut out)?;
    man.render_description_section(&mut out)?;
    if has_arguments {
        man.render_options_section(&mut out)?;
    }
    if has_subcommands {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    // "Exit codes:\n  0  ..." blocks become sections of their own, kept as laid out.
    for block in after_help.unwrap_or_default().split("\n\n") {
        let mut lines = block.lines();
        let Some(heading) = lines.next() else {
            continue;
        };
        let title = match heading.trim_end_matches(':') {
            "Exit codes" => "EXIT STATUS".to_string(),
            other => other.to_uppercase(),
        };
        roff.control("SH", [title.as_str()]);
        roff.control("nf", []);
        for line in lines {
            roff.text([roman(line.trim_start())]);
        }
        roff.control("fi", []);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in extra.files {
        roff.control("TP", []);
        roff.text([bold(*path)]);
        roff.text([roman(*what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(extra.see_also)]);
    roff.to_writer(&mut out)?;
    if has_version {
        man.render_version_section(&mut out)?;
    }
    Ok(code_in_bold(&String::from_utf8_lossy(&out)).into_bytes())
}

/// `bip324-redirect enable [--ports PORTS] ... --group GROUP`: every option with its value's
/// placeholder (clap_mangen shows bare option names), optional ones in brackets.
fn render_synopsis(page: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
    let mut line: Vec<Inline> = vec![bold(page.get_bin_name().unwrap_or(page.get_name()))];
    for arg in page.get_arguments().filter(|arg| !arg.is_hide_set()) {
        let mut words: Vec<Inline> = Vec::new();
        match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => {
                words.extend([
                    bold(format!("-{short}")),
                    roman("|"),
                    bold(format!("--{long}")),
                ]);
            }
            (None, Some(long)) => words.push(bold(format!("--{long}"))),
            (Some(short), None) => words.push(bold(format!("-{short}"))),
            (None, None) => {}
        }
        if arg.get_action().takes_values() {
            let value = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
            if !words.is_empty() {
                words.push(roman(" "));
            }
            words.push(italic(value));
        }
        if matches!(arg.get_action(), clap::ArgAction::Append) {
            words.push(roman(" ..."));
        }
        line.push(roman(" "));
        if arg.is_required_set() {
            line.extend(words);
        } else {
            line.push(roman("["));
            line.extend(words);
            line.push(roman("]"));
        }
    }
    if page.get_subcommands().next().is_some() {
        line.extend([roman(" "), italic("COMMAND")]);
    }
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
    roff.to_writer(out)
}

/// Help text marks commands and paths with backticks, as Markdown does; a man page shows them
/// in bold instead. Control lines and unpaired backticks are left alone.
fn code_in_bold(roff: &str) -> String {
    let mut page = String::with_capacity(roff.len());
    for line in roff.lines() {
        let pieces: Vec<&str> = line.split('`').collect();
        if line.starts_with('.') || pieces.len().is_multiple_of(2) {
            page.push_str(line);
        } else {
            for (i, piece) in pieces.iter().enumerate() {
                if i % 2 == 1 {
                    page.push_str("\\fB");
                    page.push_str(piece);
                    page.push_str("\\fR");
                } else {
                    page.push_str(piece);
                }
            }
        }
        page.push('\n');
    }
    page
}

fn completions(command: clap::Command, stage: &Path) -> Result {
    use clap_complete::Shell;
    let mut command = words_are_not_file_names(command);
    let name = command.get_name().to_string();
    for (shell, dir, file) in [
        (
            Shell::Bash,
            "usr/share/bash-completion/completions",
            name.clone(),
        ),
        (
            Shell::Zsh,
            "usr/share/zsh/vendor-completions",
            format!("_{name}"),
        ),
        (
            Shell::Fish,
            "usr/share/fish/vendor_completions.d",
            format!("{name}.fish"),
        ),
    ] {
        let dir = stage.join(dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut out = std::fs::File::create(dir.join(file)).map_err(|e| e.to_string())?;
        clap_complete::generate(shell, &mut command, &name, &mut out);
    }
    Ok(())
}

/// Values without a hint (groups, users, ports, durations) complete to nothing rather than to
/// file names, which shells offer by default; paths carry their own hint.
fn words_are_not_file_names(command: clap::Command) -> clap::Command {
    let command = command.mut_args(|arg| {
        if arg.get_action().takes_values() && arg.get_value_hint() == clap::ValueHint::Unknown {
            arg.value_hint(clap::ValueHint::Other)
        } else {
            arg
        }
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    names.into_iter().fold(command, |command, name| {
        command.mut_subcommand(name, words_are_not_file_names)
    })
}

fn control(stage: &Path) -> Result<String> {
    let size_kib = disk_usage_kib(stage)?;
    Ok(format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: amd64
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
