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

/// Where the package for Debian architecture `arch` is written: Debian's
/// `NAME_VERSION_ARCH.deb`, the name `apt-get install ./target/debian/...` is given.
pub(crate) fn deb_path(arch: &str) -> PathBuf {
    root().join(format!("target/debian/{PACKAGE}_{}_{arch}.deb", version()))
}

/// The Debian architecture of what `cargo build` makes here: the host triple of the rustc
/// that cargo runs (no `--target` is given), in Debian's name. A package labelled with
/// another architecture would install binaries that cannot run.
pub(crate) fn architecture() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let host = text
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .ok_or_else(|| format!("`{rustc} -vV` names no host triple"))?;
    debian_architecture(host.trim()).map(str::to_string)
}

/// Debian's name for a Rust target triple's architecture (dpkg-architecture's table, for the
/// Linux GNU targets Debian builds).
fn debian_architecture(triple: &str) -> Result<&'static str> {
    let cpu = triple.split('-').next().unwrap_or_default();
    let abi = triple.rsplit('-').next().unwrap_or_default();
    if !triple.contains("-linux-") {
        return Err(format!(
            "{triple}: the Debian package is built for Linux only"
        ));
    }
    Ok(match cpu {
        "x86_64" if abi == "gnux32" => "x32",
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i486" | "i586" | "i686" => "i386",
        cpu if cpu.starts_with("arm") || cpu.starts_with("thumb") => {
            if abi.ends_with("hf") {
                "armhf"
            } else {
                "armel"
            }
        }
        "riscv64gc" | "riscv64" => "riscv64",
        "powerpc64le" => "ppc64el",
        "powerpc64" => "ppc64",
        "powerpc" => "powerpc",
        "s390x" => "s390x",
        "mips64el" => "mips64el",
        "mipsel" => "mipsel",
        "loongarch64" => "loong64",
        "sparc64" => "sparc64",
        _ => return Err(format!("{triple}: no Debian architecture known for it")),
    })
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
    let arch = architecture()?;
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
        (bip324_proxy::daemon::Config::command(), PROXY_MAN),
        (bip324_redirect_args::Cli::command(), REDIRECT_MAN),
    ];
    for (command, extra) in &commands {
        man_pages(command, &stage.join("usr/share/man/man8"), extra)?;
        completions(command.clone(), &stage)?;
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

/// A man page for the command and one per subcommand, nested ones too
/// (`bip324-redirect-inbound-enable.8`, showing `bip324-redirect inbound enable` in its
/// synopsis), gzipped.
fn man_pages(command: &clap::Command, dir: &Path, extra: &ManExtra) -> Result {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (name, text) in render_man_pages(command, extra)? {
        let path = dir.join(format!("{name}.8"));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        // -n: no name or time stamp in the archive, so the package is reproducible.
        step("gzip", &["-9nf", path.to_str().expect("UTF-8")])?;
    }
    Ok(())
}

/// Every page of `command` and of its subcommands at any depth, by page name: clap's
/// sections, then the after-help text as EXIT STATUS, ENVIRONMENT or EXAMPLES sections, FILES
/// and SEE ALSO. A subcommand's SUBCOMMANDS section names its own subcommands' pages, which are
/// among these.
fn render_man_pages(command: &clap::Command, extra: &ManExtra) -> Result<Vec<(String, Vec<u8>)>> {
    let root = command.get_name().to_string();
    let mut pages = vec![(
        root.clone(),
        root.clone(),
        None,
        command.clone().version(env!("CARGO_PKG_VERSION")),
    )];
    let mut rendered = Vec::new();
    while let Some((name, synopsis, parent, page)) = pages.pop() {
        let page = page
            .disable_help_subcommand(true)
            .display_name(name.clone())
            .bin_name(synopsis.clone());
        for sub in page.get_subcommands() {
            pages.push((
                format!("{name}-{}", sub.get_name()),
                format!("{synopsis} {}", sub.get_name()),
                Some(name.clone()),
                sub.clone(),
            ));
        }
        let after_help = page.get_after_help().map(ToString::to_string);
        let page = page.after_help(None::<&'static str>);
        let text = render_man(page, after_help.as_deref(), parent.as_deref(), &root, extra)
            .map_err(|e| e.to_string())?;
        rendered.push((name, text));
    }
    rendered.sort();
    Ok(rendered)
}

fn render_man(
    page: clap::Command,
    after_help: Option<&str>,
    parent: Option<&str>,
    root: &str,
    extra: &ManExtra,
) -> std::io::Result<Vec<u8>> {
    use clap_mangen::roff::{Roff, bold, roman};
    let has_arguments = page.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = page.get_subcommands().next().is_some();
    let has_version = page.get_version().is_some();
    // Built, so that the generated -h and -V are among its arguments.
    let mut page_for_synopsis = page.clone();
    page_for_synopsis.build();
    let description = page
        .get_long_about()
        .or_else(|| page.get_about())
        .map(ToString::to_string);
    let man = clap_mangen::Man::new(page).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    render_synopsis(&page_for_synopsis, &mut out)?;
    render_description(description.as_deref().unwrap_or_default(), &mut out)?;
    if has_arguments {
        man.render_options_section(&mut out)?;
    }
    if has_subcommands {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    for block in after_help.unwrap_or_default().split("\n\n") {
        // A subcommand's pointer to the top level's exit codes and environment.
        if block == bip324_redirect_args::SEE_TOP_LEVEL {
            roff.control("SH", ["EXIT STATUS"]);
            roff.text([roman(format!(
                "As {root}(8), which also lists the environment variables."
            ))]);
            continue;
        }
        // "Exit codes:\n  0  ..." blocks become sections of their own, kept as laid out.
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
            roff.text([roman(line.strip_prefix("  ").unwrap_or(line))]);
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
    let see_also = match parent {
        Some(parent) if parent == root => format!("{root}(8), {}", extra.see_also),
        Some(parent) => format!("{parent}(8), {root}(8), {}", extra.see_also),
        None => extra.see_also.to_string(),
    };
    roff.text([roman(see_also)]);
    roff.to_writer(&mut out)?;
    if has_version {
        man.render_version_section(&mut out)?;
    }
    Ok(code_in_bold(&String::from_utf8_lossy(&out)).into_bytes())
}

/// The long about text as DESCRIPTION: paragraphs are filled, but indented lines (examples,
/// lists of commands) stay as written, in no-fill blocks, so that no example runs into the
/// next one.
fn render_description(text: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
    use clap_mangen::roff::{Roff, roman};
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    let mut preformatted = false;
    for line in text.lines() {
        let indented = line.starts_with(' ');
        if indented != preformatted {
            roff.control(if indented { "nf" } else { "fi" }, []);
            preformatted = indented;
        }
        if line.trim().is_empty() {
            roff.control("PP", []);
        } else {
            roff.text([roman(line)]);
        }
    }
    if preformatted {
        roff.control("fi", []);
    }
    roff.to_writer(out)
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

    /// Both binaries' pages, by name, with roff's escapes and fonts removed.
    fn all_pages() -> Vec<(String, String)> {
        let mut pages = Vec::new();
        for (command, extra) in [
            (bip324_proxy::daemon::Config::command(), PROXY_MAN),
            (bip324_redirect_args::Cli::command(), REDIRECT_MAN),
        ] {
            for (name, text) in render_man_pages(&command, &extra).expect("renders") {
                let text = String::from_utf8(text)
                    .expect("UTF-8")
                    .replace("\\-", "-")
                    .replace("\\*(Aq", "'")
                    .replace("\\fB", "")
                    .replace("\\fI", "")
                    .replace("\\fR", "");
                pages.push((name, text));
            }
        }
        pages
    }

    /// Every page of ours that a page names (SEE ALSO, SUBCOMMANDS) is in the package:
    /// `inbound enable`'s options were in no page while bip324-redirect-inbound(8) named it.
    #[test]
    fn every_page_referred_to_is_generated() {
        let pages = all_pages();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        for expected in [
            "bip324-proxy",
            "bip324-redirect",
            "bip324-redirect-inbound",
            "bip324-redirect-inbound-enable",
            "bip324-redirect-inbound-disable",
            "bip324-redirect-inbound-restore",
        ] {
            assert!(
                names.contains(&expected),
                "{expected}(8) missing: {names:?}"
            );
        }
        let mut referred = 0;
        for (name, text) in &pages {
            for (at, _) in text.match_indices("(8)") {
                let start = text[..at]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
                    .map_or(0, |i| i + 1);
                let page = &text[start..at];
                if page.starts_with("bip324-") {
                    referred += 1;
                    assert!(
                        names.contains(&page),
                        "{name}(8) refers to {page}(8), not generated"
                    );
                }
            }
        }
        assert!(
            referred > 10,
            "only {referred} references found: is the scan broken?"
        );
        let (_, enable) = pages
            .iter()
            .find(|(name, _)| name == "bip324-redirect-inbound-enable")
            .expect("generated");
        for option in ["--ports", "--proxy-port", "--no-save"] {
            assert!(
                enable.contains(option),
                "inbound enable's page lacks {option}"
            );
        }
    }

    /// Examples and command lists (indented lines) are no-fill blocks in the man pages: a
    /// reflowed example runs into the next one.
    #[test]
    fn man_pages_keep_examples_as_written() {
        let pages = all_pages();
        let page = |wanted: &str| {
            pages
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, text)| text.as_str())
                .expect("generated")
        };
        let checks = [
            ("bip324-proxy", bip324_proxy::daemon::config::EXAMPLES),
            ("bip324-redirect", bip324_redirect_args::MODEL),
            ("bip324-redirect-inbound", bip324_redirect_args::INBOUND),
        ];
        for (name, help) in checks {
            let text = page(name);
            let mut examples = 0;
            for example in help.lines().filter(|l| l.starts_with("  ")) {
                let example = example.strip_prefix("  ").unwrap_or(example);
                let line = text
                    .lines()
                    .find(|l| l.trim_start() == example)
                    .unwrap_or_else(|| panic!("{name}(8): `{example}` is not a line of its own"));
                // Inside a .nf block: the last fill request before it is .nf.
                let before = &text[..text.find(line).expect("found")];
                let last = before
                    .lines()
                    .rev()
                    .find(|l| *l == ".nf" || *l == ".fi")
                    .unwrap_or_default();
                assert_eq!(last, ".nf", "{name}(8): `{example}` would be filled");
                examples += 1;
            }
            assert!(examples >= 3, "{name}: only {examples} examples");
        }
        assert!(page("bip324-proxy").contains("\n.SH EXAMPLES\n"));
    }

    /// Each command's help, each subcommand at any depth.
    fn every_command(command: clap::Command) -> Vec<clap::Command> {
        let mut all = vec![command.clone()];
        for sub in command.get_subcommands() {
            all.extend(every_command(sub.clone()));
        }
        all
    }

    /// No example line of either binary's help is wider than 100 columns, the width clap wraps
    /// help at when it cannot ask the terminal: a wrapped example's tail looks like an
    /// example of its own (`bip324-proxy` alone, which fails as a user). Each is printed as a
    /// line of its own.
    #[test]
    fn help_examples_fit_in_100_columns() {
        let mut checked = 0;
        for root in [
            bip324_proxy::daemon::Config::command(),
            bip324_redirect_args::Cli::command(),
        ] {
            for command in every_command(root) {
                let mut command = command.term_width(100);
                let help = command.render_long_help().to_string();
                let texts = [
                    command.get_long_about().map(ToString::to_string),
                    command.get_after_help().map(ToString::to_string),
                ];
                for text in texts.iter().flatten() {
                    for line in text.lines().filter(|l| l.starts_with("  ")) {
                        assert!(
                            line.chars().count() <= 100,
                            "{}: {} columns: {line}",
                            command.get_name(),
                            line.chars().count()
                        );
                        assert!(
                            help.lines().any(|l| l == line),
                            "{}'s help does not print `{line}` as written:\n{help}",
                            command.get_name()
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 20, "only {checked} example lines found");
    }

    /// The exit codes and the environment are in the top-level help only; every subcommand
    /// points there instead of repeating 15 lines.
    #[test]
    fn exit_codes_only_in_the_top_level_help() {
        let mut root = bip324_redirect_args::Cli::command();
        let top = root.render_long_help().to_string();
        assert!(top.contains("Exit codes:\n") && top.contains("Environment:\n"));
        let subcommands = every_command(root).into_iter().skip(1);
        let mut checked = 0;
        for mut sub in subcommands.filter(|sub| sub.get_name() != "help") {
            let help = sub.render_long_help().to_string();
            let name = sub.get_name().to_string();
            assert!(
                !help.contains("Exit codes:"),
                "{name} repeats the exit codes"
            );
            assert!(
                !help.contains("Environment:"),
                "{name} repeats the environment"
            );
            assert!(
                help.contains("`bip324-redirect --help`"),
                "{name}: no pointer"
            );
            checked += 1;
        }
        assert!(checked >= 8, "{checked} subcommands");
    }

    #[test]
    fn debian_architectures_of_rust_targets() {
        for (triple, arch) in [
            ("x86_64-unknown-linux-gnu", "amd64"),
            ("aarch64-unknown-linux-gnu", "arm64"),
            ("armv7-unknown-linux-gnueabihf", "armhf"),
            ("arm-unknown-linux-gnueabi", "armel"),
            ("i686-unknown-linux-gnu", "i386"),
            ("riscv64gc-unknown-linux-gnu", "riscv64"),
            ("powerpc64le-unknown-linux-gnu", "ppc64el"),
            ("s390x-unknown-linux-gnu", "s390x"),
        ] {
            assert_eq!(debian_architecture(triple), Ok(arch), "{triple}");
        }
        assert!(debian_architecture("x86_64-apple-darwin").is_err());
        assert!(debian_architecture("wasm32-unknown-unknown").is_err());
    }

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
        let arch = architecture().expect("known");
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
