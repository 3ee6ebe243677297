//! Shell completions (bash, zsh, fish) generated from the clap definitions.

use std::path::Path;

use crate::Result;

/// Writes `command`'s completions for each shell where Debian's shells look for them under
/// `stage`.
pub(super) fn write(command: clap::Command, stage: &Path) -> Result {
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
