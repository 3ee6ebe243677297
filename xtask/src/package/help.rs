//! The `--help` texts the man pages and completions are made from: examples that fit and
//! are printed as written, exit codes in one place.

use clap::CommandFactory;

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
        bip324_proxy_args::Config::command(),
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
