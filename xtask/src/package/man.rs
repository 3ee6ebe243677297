//! Man pages (section 8) rendered to roff from the clap definitions: one per command and
//! subcommand, with the help's after-text as EXIT STATUS, ENVIRONMENT or EXAMPLES sections,
//! and FILES and SEE ALSO from [`ManExtra`].

use std::path::Path;

use crate::{Result, step};

/// What each binary's man pages say beyond `--help`.
pub(super) struct ManExtra {
    files: &'static [(&'static str, &'static str)],
    see_also: &'static str,
}

pub(super) const PROXY: ManExtra = ManExtra {
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

pub(super) const REDIRECT: ManExtra = ManExtra {
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
pub(super) fn write_pages(command: &clap::Command, dir: &Path, extra: &ManExtra) -> Result {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Both binaries' pages, by name, with roff's escapes and fonts removed.
    fn all_pages() -> Vec<(String, String)> {
        let mut pages = Vec::new();
        for (command, extra) in [
            (bip324_proxy_args::Config::command(), PROXY),
            (bip324_redirect_args::Cli::command(), REDIRECT),
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
            ("bip324-proxy", bip324_proxy_args::EXAMPLES),
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
}
