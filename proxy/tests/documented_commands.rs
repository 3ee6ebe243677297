//! Every `bip324-proxy ...` and `bip324-redirect ...` command line shown in an `sh` block of
//! the README or of docs/*.md parses with the real clap definitions, so an example with a
//! misspelt or removed option fails here rather than on a user's machine. It needs no root:
//! nothing is run, only parsed.

use std::path::{Path, PathBuf};

use bip324_proxy_args::Config;
use bip324_redirect_args::Cli;
use clap::Parser;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the proxy crate sits in the workspace")
        .to_path_buf()
}

/// The lines of every fenced block tagged `sh`, with the file and line they come from.
fn sh_lines(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(tag) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && matches!(tag.trim(), "sh" | "bash" | "shell" | "console");
            pending.clear();
            continue;
        }
        if !in_sh {
            continue;
        }
        // A trailing backslash continues the command on the next line.
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let name = path.strip_prefix(root()).unwrap_or(path).display();
        lines.push((format!("{name}:{}", n + 1), std::mem::take(&mut pending)));
    }
    lines
}

/// Splits a shell line into commands (at `|`, `||`, `&&`, `;`, `&` outside quotes), each a list
/// of words with quotes removed; a `#` that starts a word ends the line.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => break,
            ' ' | '\t' => end_word(&mut word, &mut in_word, &mut words),
            '|' | '&' | ';' => {
                end_word(&mut word, &mut in_word, &mut words);
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                out.push(std::mem::take(&mut words));
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut words);
    out.push(words);
    out.retain(|w| !w.is_empty());
    out
}

/// The argument vectors of the programs a command runs: after `sudo` (and its options),
/// `env`, `VAR=value` prefixes and `setpriv`'s options (`setpriv` itself is kept too, so that
/// its options can be checked), and inside `sg GROUP -c '...'`.
fn programs(words: &[String]) -> Vec<Vec<String>> {
    let mut rest = words;
    loop {
        match rest.first().map(String::as_str) {
            Some("sudo") => {
                rest = &rest[1..];
                while let Some(opt) = rest.first().filter(|w| w.starts_with('-')) {
                    // sudo's options that take a value.
                    let takes_value = matches!(opt.as_str(), "-u" | "-g" | "-C" | "-D" | "-h");
                    rest = &rest[if takes_value { 2 } else { 1 }.min(rest.len())..];
                }
            }
            Some("env") => rest = &rest[1..],
            Some(w) if is_assignment(w) => rest = &rest[1..],
            Some("sg") if rest.len() >= 4 && rest[2] == "-c" => {
                return commands(&rest[3])
                    .iter()
                    .flat_map(|c| programs(c))
                    .collect();
            }
            Some("setpriv") => {
                let options = rest[1..].iter().take_while(|w| w.starts_with('-')).count();
                let mut found = vec![rest[..1 + options].to_vec()];
                found.extend(programs(&rest[1 + options..]));
                return found;
            }
            Some(_) => return vec![rest.to_vec()],
            None => return Vec::new(),
        }
    }
}

/// The documented binaries' invocations among a command's programs.
fn invocations(words: &[String]) -> Vec<Vec<String>> {
    programs(words)
        .into_iter()
        .filter(|argv| matches!(argv[0].as_str(), "bip324-proxy" | "bip324-redirect"))
        .collect()
}

/// What is wrong with a documented program line that is not ours: a library named as if it
/// were a command, or `setpriv` options it rejects (util-linux's rules).
fn misuse(argv: &[String]) -> Option<String> {
    let has = |names: &[&str]| {
        argv.iter().any(|w| {
            names
                .iter()
                .any(|n| w == n || w.starts_with(&format!("{n}=")))
        })
    };
    match argv[0].as_str() {
        // Go and Rust libraries, not programs: their users are lnd, wallets, ...
        "neutrino" | "nakamoto" => Some(format!("`{}` is a library, not a command", argv[0])),
        "setpriv" if has(&["--init-groups"]) && !has(&["--ruid", "--reuid"]) => {
            Some("setpriv: --init-groups requires --ruid or --reuid".into())
        }
        "setpriv"
            if has(&["--rgid", "--regid", "--ruid", "--reuid"])
                && !has(&["--keep-groups", "--clear-groups", "--init-groups", "--groups"]) =>
        {
            Some("setpriv: changing ids needs --keep-groups, --clear-groups, --init-groups or --groups".into())
        }
        _ => None,
    }
}

/// The single-backtick code spans of a Markdown file outside fenced blocks, that start with
/// a command run as another user or group (`sudo`, `sg`, `setpriv`): such spans are command
/// lines a reader copies (a bare `bip324-redirect enable` in prose names a subcommand).
fn inline_commands(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path
        .strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut fenced = false;
    let mut spans = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            let starts = ["sudo ", "sg ", "setpriv "];
            if starts.iter().any(|p| span.starts_with(p)) {
                spans.push((format!("{name}:{}", n + 1), span.to_string()));
            }
        }
    }
    spans
}

/// Whether a line holds an upper-case placeholder such as `NODE`, `PORT` or `PATH`.
fn has_placeholder(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| w.len() >= 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Parses one documented invocation; `Err` carries clap's message.
fn parse(argv: &[String]) -> Result<(), String> {
    let result = match argv[0].as_str() {
        "bip324-proxy" => Config::try_parse_from(argv).map(drop),
        _ => Cli::try_parse_from(argv).map(drop),
    };
    match result {
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

fn documented_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_documented_command_line_parses() {
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for file in documented_files() {
        for (place, line) in inline_commands(&file) {
            for command in commands(&line) {
                for argv in programs(&command) {
                    if let Some(why) = misuse(&argv) {
                        failures.push(format!("{place}: `{line}`\n{why}"));
                    }
                }
                // A span with a placeholder (`NODE:PORT`) is a synopsis, not a command line.
                if has_placeholder(&line) {
                    continue;
                }
                for argv in invocations(&command) {
                    match parse(&argv) {
                        Ok(()) => checked.push(argv.join(" ")),
                        Err(e) => failures.push(format!("{place}: `{}`\n{e}", argv.join(" "))),
                    }
                }
            }
        }
        for (place, line) in sh_lines(&file) {
            for command in commands(&line) {
                for argv in programs(&command) {
                    if let Some(why) = misuse(&argv) {
                        failures.push(format!("{place}: `{}`\n{why}", argv.join(" ")));
                    }
                }
                for argv in invocations(&command) {
                    match parse(&argv) {
                        Ok(()) => checked.push(argv.join(" ")),
                        Err(e) => failures.push(format!("{place}: `{}`\n{e}", argv.join(" "))),
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} documented command line(s) cannot run as written:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Both binaries' examples were found: a parser that finds none would prove nothing.
    for binary in ["bip324-proxy", "bip324-redirect"] {
        let n = checked.iter().filter(|c| c.starts_with(binary)).count();
        assert!(
            n >= 5,
            "only {n} `{binary}` command lines found in the docs: {checked:#?}"
        );
    }
    eprintln!(
        "{} documented command lines parse:\n{}",
        checked.len(),
        checked.join("\n")
    );
}

/// The example lines of a command's `--help` and of every subcommand's: indented lines that
/// start with a command, cut at an annotation set off by two spaces (`  (...)`, `  # ...`).
fn help_examples(command: &mut clap::Command, out: &mut Vec<(String, String)>) {
    let name = command
        .get_bin_name()
        .unwrap_or(command.get_name())
        .to_string();
    let help = command.render_long_help().to_string();
    for line in help.lines().filter(|l| l.starts_with(' ')) {
        let line = line.trim();
        let line = [line.find("  ("), line.find("  #")]
            .into_iter()
            .flatten()
            .min()
            .map_or(line, |cut| line[..cut].trim_end());
        let starts = ["sudo ", "sg ", "setpriv ", "RUST_LOG="];
        if starts.iter().any(|s| line.starts_with(s))
            || line == "bip324-proxy"
            || line.starts_with("bip324-proxy ")
            || line.starts_with("bip324-redirect ")
        {
            out.push((format!("{name} --help"), line.to_string()));
        }
    }
    for sub in command.get_subcommands_mut() {
        help_examples(sub, out);
    }
}

/// The README keeps the two developer commands as `sh` lines of their own: `.ci/run` runs the
/// README's test command, and a newcomer copies them from there (details live in docs/).
#[test]
fn the_readme_shows_the_two_developer_commands() {
    let lines: Vec<String> = sh_lines(&root().join("README.md"))
        .into_iter()
        .map(|(_, line)| line.trim().to_string())
        .collect();
    for command in ["cargo xtask run", "cargo xtask test"] {
        assert!(
            lines.iter().any(|l| l == command),
            "README.md has no `sh` line `{command}`"
        );
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo xtask test"),
        ".ci/run no longer runs the README's test command"
    );
}

#[test]
fn every_help_example_parses() {
    use clap::CommandFactory;
    let mut examples = Vec::new();
    for mut command in [Config::command(), Cli::command()] {
        command.build();
        help_examples(&mut command, &mut examples);
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for (place, line) in &examples {
        for command in commands(line) {
            for argv in programs(&command) {
                if let Some(why) = misuse(&argv) {
                    failures.push(format!("{place}: `{line}`\n{why}"));
                }
            }
            for argv in invocations(&command) {
                checked += 1;
                if let Err(e) = parse(&argv) {
                    failures.push(format!("{place}: `{}`\n{e}", argv.join(" ")));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 5, "only {checked} examples found: {examples:#?}");
    eprintln!("{checked} --help examples parse: {examples:#?}");
}

#[test]
fn the_extraction_handles_sudo_env_sg_comments_pipes_and_background() {
    let line = r#"sudo -E env RUST_LOG=debug bip324-proxy --socks5 '127.0.0.1:1080' & sg btc -c 'bip324-redirect check 203.0.113.7:8333' | cat  # bip324-proxy --nope"#;
    let found: Vec<Vec<String>> = commands(line).iter().flat_map(|c| invocations(c)).collect();
    assert_eq!(
        found,
        vec![
            vec!["bip324-proxy", "--socks5", "127.0.0.1:1080"],
            vec!["bip324-redirect", "check", "203.0.113.7:8333"],
        ]
    );
    assert!(found.iter().all(|argv| parse(argv).is_ok()));
}

#[test]
fn examples_that_cannot_run_are_found() {
    let misused = |line: &str| -> Vec<String> {
        commands(line)
            .iter()
            .flat_map(|c| programs(c))
            .filter_map(|argv| misuse(&argv))
            .collect()
    };
    // Both were in the README: util-linux refuses the first, and there is no `neutrino` binary.
    assert_eq!(misused("setpriv --regid=btc --init-groups client").len(), 1);
    assert_eq!(
        misused("sg btc -c 'neutrino --connect=203.0.113.7'").len(),
        1
    );
    assert!(misused("sudo setpriv --reuid=alice --regid=btc --clear-groups client").is_empty());
    assert!(
        misused("sg btc -c 'lnd --bitcoin.node=neutrino --neutrino.connect=203.0.113.7'")
            .is_empty()
    );
    // setpriv's own options are not taken for the program it runs.
    assert_eq!(
        programs(&commands("sudo setpriv --regid=btc --clear-groups bip324-redirect status")[0]),
        vec![
            vec!["setpriv", "--regid=btc", "--clear-groups"],
            vec!["bip324-redirect", "status"]
        ]
    );
}

#[test]
fn a_wrong_option_fails() {
    let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert!(parse(&argv("bip324-proxy --no-such-option")).is_err());
    assert!(parse(&argv("bip324-redirect enable --group btc --no-such-option")).is_err());
    assert!(parse(&argv("bip324-redirect no-such-command")).is_err());
}
