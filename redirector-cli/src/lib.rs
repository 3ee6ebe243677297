//! `bip324-redirect`: installs, removes and reports the kernel redirect that sends a group's
//! Bitcoin P2P connections to `bip324-proxy`, and inbound mode's redirect of peers'
//! connections to a local node.

mod backend;
mod check;
mod config;
mod error;
mod inbound;
mod policy;
mod policy_route;
mod privileges;
mod problem;
mod proxy_control;
mod proxy_listener;
mod proxy_process;
mod state;
mod status;

use std::process::ExitCode;

use bip324_redirect_args::{Cli, Command, EnableArgs, InboundCommand, StatusArgs};
use clap::Parser;

use crate::backend::{Backend, BackendKind};
use crate::error::{Error, exit};
use crate::policy::{Policy, Source, resolve_group, resolve_user};
use crate::state::Enabled;

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    // Output to a closed pipe (`status --watch | head`) ends the command quietly, as for any
    // Unix tool, instead of a panic.
    // SAFETY: restoring a signal's default disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Enable(args) => enable(&args, Origin::ByHand),
        Command::Restore => restore(),
        Command::Disable => disable(),
        Command::Status(args) => status(&args),
        Command::Check(args) => check(&args),
        Command::Inbound(InboundCommand::Enable(args)) => inbound::enable(&args),
        Command::Inbound(InboundCommand::Disable) => inbound::disable(),
        Command::Inbound(InboundCommand::Restore) => inbound::restore(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bip324-redirect: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Who asked for a policy: an operator (whose policy is saved for the units to re-apply), or
/// `restore` applying the saved one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    ByHand,
    Restore,
}

/// The policy and backend that `args` ask for, checked; nothing touches the kernel yet.
fn asked(args: &EnableArgs, warn: bool) -> Result<(Policy, Backend), Error> {
    let group = args.group.as_deref().map(resolve_group).transpose()?;
    if let Some(group) = group.as_ref().filter(|_| warn) {
        if group.name.is_none() {
            eprintln!(
                "warning: no group has id {} in the group database; the kernel matches the \
                 number anyway (create the group with `groupadd --system --gid {} btc` to \
                 name it)",
                group.id, group.id
            );
        }
        if group.id == 0 {
            eprintln!(
                "warning: group 0 (root) is the primary group of most system services: their \
                 connections to these ports go through the proxy too"
            );
        }
    }
    let interfaces = args.from_interface.iter().map(|i| Source::interface(i));
    let prefixes = args.from.iter().map(|p| Source::prefix(p));
    let sources = interfaces.chain(prefixes).collect::<Result<Vec<_>, _>>()?;
    let exempt = args
        .exempt_users
        .iter()
        .map(|u| resolve_user(u))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = Policy::new(group, &args.ports, args.proxy_port, exempt)?.with_sources(sources)?;
    let backend = Backend::new(args.backend, args.cgroup.clone())?;
    Ok((policy, backend))
}

/// The options that make `args`' policy, as the configuration file holds them.
fn saved_options(policy: &Policy, args: &EnableArgs) -> Vec<String> {
    let mut words = policy.options(args.backend.name());
    if let Some(cgroup) = &args.cgroup {
        words.push("--cgroup".into());
        words.push(cgroup.to_string_lossy().into_owned());
    }
    words
}

/// Parses a configuration file's options as `enable`'s (or `inbound enable`'s).
pub(crate) fn parse_options<T>(
    file: &config::ConfigFile,
    words: &[String],
    pick: impl FnOnce(Command) -> Option<T>,
    prefix: &[&str],
) -> Result<T, Error> {
    let argv = ["bip324-redirect"]
        .iter()
        .chain(prefix)
        .map(ToString::to_string)
        .chain(words.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        Error::Config(format!(
            "{}: {}={:?} are not options of `{}`: {}",
            file.path.display(),
            file.var,
            words.join(" "),
            prefix.join(" "),
            e.render().to_string().lines().next().unwrap_or_default()
        ))
    })?;
    pick(cli.command).ok_or_else(|| Error::Config("unexpected command".into()))
}

/// The options in /etc/bip324/redirect.conf, parsed as `enable`'s; `None` without a file.
fn configured_args() -> Result<Option<EnableArgs>, Error> {
    let file = config::redirect();
    let Some(words) = file.options()? else {
        return Ok(None);
    };
    let pick = |c| match c {
        Command::Enable(args) => Some(args),
        _ => None,
    };
    parse_options(&file, &words, pick, &["enable"]).map(Some)
}

/// `restore`: applies exactly the configuration file's policy, saving nothing.
fn restore() -> Result<u8, Error> {
    let Some(args) = configured_args()? else {
        return Err(Error::Config(format!(
            "{} does not exist: nothing to restore (`bip324-redirect enable ...` writes it)",
            config::redirect().path.display()
        )));
    };
    enable(&args, Origin::Restore)
}

/// The configuration file's policy as `enable` would apply it (backend, policy, cgroup);
/// `None` without a file.
pub(crate) fn configured() -> Result<Option<Enabled>, Error> {
    let Some(args) = configured_args()? else {
        return Ok(None);
    };
    let (policy, backend) = asked(&args, false)?;
    Ok(Some(Enabled {
        backend: args.backend,
        policy,
        cgroup: backend.cgroup().map(std::path::Path::to_path_buf),
    }))
}

fn enable(args: &EnableArgs, origin: Origin) -> Result<u8, Error> {
    let (policy, backend) = asked(args, origin == Origin::ByHand)?;
    // Who listens on the proxy port; installing the redirect does not change it.
    let probes = proxy_listener::probe(policy.proxy_port);
    if let Some(cgroup) = backend.cgroup() {
        // A running proxy the programs could not serve: refuse before installing them.
        let outside = proxy_process::proxies_in(&probes)
            .into_iter()
            .find_map(|pid| proxy_process::outside_cgroup(pid, cgroup));
        if let Some(problem) = outside {
            return Err(Error::Config(problem.to_string()));
        }
    }
    backend.apply(&policy)?;
    // Exactly one backend active: remove what another one may have left.
    for other in BackendKind::ALL.into_iter().filter(|b| *b != args.backend) {
        backend::remove(other)?;
    }
    state::save(&Enabled {
        backend: args.backend,
        policy: policy.clone(),
        cgroup: backend.cgroup().map(std::path::Path::to_path_buf),
    })?;

    println!(
        "bip324-redirect: enabled ({}): {}",
        args.backend,
        policy.describe()
    );
    if origin == Origin::ByHand {
        save(
            &config::redirect(),
            &saved_options(&policy, args),
            args.no_save,
        )?;
    }
    if let Some(group) = &policy.group {
        let group = group.name.clone().unwrap_or_else(|| group.id.to_string());
        println!("start a client in the group: sg {group} -c 'your-client ...'");
    }
    if !policy.sources.is_empty() {
        println!(
            "gateway: the proxy must accept on this router's LAN address, port {0} \
             (`bip324-proxy --listen [::]:{0}`, or a ListenStream= drop-in for \
             bip324-proxy.socket); until it does, the LAN's connections are refused",
            policy.proxy_port
        );
    }
    if let Some(warning) = proxy_listener::port_warning(policy.proxy_port) {
        eprintln!("warning: {warning}");
    }
    if probes.iter().all(|p| p.listeners.is_empty()) {
        eprintln!(
            "warning: nothing answers on {} yet: tagged connections are refused until the proxy \
             runs (`systemctl start bip324-proxy.socket`, or `sudo bip324-proxy`)",
            proxy_listener::addresses(&probes)
        );
    }
    // Nothing answering was said above, as a warning of its own.
    for problem in proxy_listener::problems(&probes, None)
        .into_iter()
        .filter(|p| !matches!(p, problem::Problem::ProxySilent { .. }))
    {
        eprintln!("warning: {problem}");
    }
    Ok(exit::OK)
}

/// Writes the options of a policy enabled by hand to the file its unit re-applies, or with
/// `--no-save` warns that the file's policy will replace it at the next reload or boot.
pub(crate) fn save(
    file: &config::ConfigFile,
    words: &[String],
    no_save: bool,
) -> Result<(), Error> {
    let path = file.path.display();
    if no_save {
        let saved = file.options().ok().flatten();
        if saved.as_deref() != Some(words) {
            let theirs = saved.map_or_else(
                || "no policy (the file does not exist)".to_string(),
                |w| format!("`{}`", w.join(" ")),
            );
            eprintln!(
                "warning: --no-save: {path} still says {theirs}; a reload of nftables.service, \
                 a restart of {} or a reboot applies THAT policy and drops this one \
                 (enable again without --no-save to keep this one)",
                file.unit()
            );
        }
        return Ok(());
    }
    match file.save(words) {
        Ok(true) => {
            println!(
                "saved to {path}: {} re-applies it after an nftables reload and at boot",
                file.unit()
            );
            if let Some(warning) = unit_warning(file.unit()) {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
        Ok(false) => {
            eprintln!(
                "warning: not saved: {} does not exist (the package is not installed), so no \
                 unit re-applies this policy after an nftables reload or a reboot",
                file.path
                    .parent()
                    .map_or(path.to_string(), |d| d.display().to_string())
            );
            Ok(())
        }
        Err(Error::Io { context, source }) => Err(Error::Io {
            context: format!(
                "the policy is in the kernel but NOT saved, so a reload of nftables.service or \
                 a reboot would apply the file's instead ({context})"
            ),
            source,
        }),
        Err(e) => Err(Error::Config(format!(
            "the policy is in the kernel but NOT saved, so a reload of nftables.service or a \
             reboot would apply the file's instead: {e}"
        ))),
    }
}

/// On a systemd host, whether `unit` is enabled and active: a unit that is not re-applies
/// nothing after an nftables reload (inactive) or a reboot (not enabled).
fn unit_warning(unit: &str) -> Option<String> {
    if !std::path::Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let state = |verb: &str| {
        std::process::Command::new("systemctl")
            .args([verb, "--quiet", unit])
            .status()
            .ok()
            .map(|s| s.success())
    };
    match (state("is-enabled")?, state("is-active")?) {
        (true, true) => None,
        _ => Some(format!(
            "{unit} is not enabled and active, so nothing re-applies this policy after a \
             reload of nftables.service or a reboot: `systemctl enable --now {unit}`"
        )),
    }
}

fn check(args: &bip324_redirect_args::CheckArgs) -> Result<u8, Error> {
    let Some(enabled) = state::load()? else {
        eprintln!(
            "bip324-redirect: the redirect is not enabled: `sudo bip324-redirect enable --group btc`"
        );
        return Ok(exit::NOT_ENABLED);
    };
    let Some(group) = &enabled.policy.group else {
        eprintln!(
            "bip324-redirect: check connects as the redirected group, and this policy has none \
             (gateway mode): run the client on a LAN host, then `bip324-redirect status` here \
             shows its connection"
        );
        return Ok(exit::NOT_ENABLED);
    };
    check::run(args, &enabled, group)
}

fn disable() -> Result<u8, Error> {
    let was_enabled = matches!(state::load(), Ok(Some(_)));
    let mut removed = Vec::new();
    for kind in BackendKind::ALL {
        if backend::remove(kind)? {
            removed.push(kind.name());
        }
    }
    state::clear()?;
    if removed.is_empty() && was_enabled {
        println!(
            "bip324-redirect: disabled (its kernel objects had already been removed by someone else)"
        );
    } else if removed.is_empty() {
        println!("bip324-redirect: nothing to remove; the redirect was not enabled");
    } else {
        println!(
            "bip324-redirect: disabled ({} removed): clients of the group now connect directly",
            removed.join(", ")
        );
    }
    // Inbound mode is another redirect, with its own command.
    if let Some(note) = inbound::left_enabled() {
        println!("note: {note}");
    }
    Ok(exit::OK)
}

fn status(args: &StatusArgs) -> Result<u8, Error> {
    let control = args
        .control
        .clone()
        .unwrap_or_else(bip324_control::find_socket);
    if !args.watch {
        let report = status::report(&control)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serialises")
            );
        } else {
            print!("{}", status::render(&report));
        }
        return Ok(report.exit_code());
    }
    let interval = args.interval;
    loop {
        let report = status::report(&control)?;
        // Clear the screen and go home, then draw: the report refreshes in place.
        print!("\x1b[2J\x1b[H{}", status::render(&report));
        println!("(every {:.1}s; Ctrl-C to stop)", interval.as_secs_f64());
        std::thread::sleep(interval);
    }
}
