//! `bip324-redirect status`: is the redirect in place, does it match what was asked, does
//! the proxy answer, and what to do when something is wrong.
//!
//! About a quarter of this file is the unit tests of the judgement, kept beside it.

use bip324_control::StatusDocument;
use serde::Serialize;

use crate::backend::{self, BackendKind, Inspection};
use crate::error::{Error, exit};
use crate::inbound::InboundView;
use crate::policy::Policy;
use crate::proxy_control;
use crate::proxy_listener::{self, Probe};
use crate::state::{self, Enabled};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// Enabled, in the kernel, exactly as asked.
    Active,
    /// Not enabled, nothing in the kernel.
    Disabled,
    /// Enabled, but the kernel objects are gone: clients go out directly, in plaintext.
    Vanished,
    /// Enabled, but the kernel objects differ from what was asked.
    Modified,
    /// Kernel objects exist without a record of enabling them.
    Unrecorded,
    /// The kernel could not be read.
    Unknown,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub state: State,
    pub backend: Option<BackendKind>,
    pub policy: Option<Policy>,
    /// Where the eBPF backend attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<std::path::PathBuf>,
    /// What each backend found in the kernel.
    pub kernel: Vec<BackendView>,
    pub proxy: Vec<Probe>,
    /// The proxy's own report (live connections, totals), from its control socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status: Option<StatusDocument>,
    /// Why the proxy's report is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_status_error: Option<String>,
    /// No proxy behind the control socket path: no socket there, or a stale one that nobody
    /// listens on (then nothing may be running).
    #[serde(skip)]
    pub control_absent: Option<std::path::PathBuf>,
    /// Inbound mode, when enabled or present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundView>,
    /// The inbound proxy's report, when it is another process (bip324-proxy-inbound.socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_proxy_status: Option<StatusDocument>,
    /// Each a sentence that says what is wrong and what to do.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BackendView {
    pub backend: BackendKind,
    #[serde(flatten)]
    pub inspection: Inspection,
}

impl Report {
    pub(crate) fn exit_code(&self) -> u8 {
        match self.state {
            State::Disabled if self.inbound.is_none() => exit::NOT_ENABLED,
            State::Unknown => exit::PRIVILEGES,
            _ if !self.problems.is_empty() => exit::DEGRADED,
            _ => exit::OK,
        }
    }
}

/// Whether no process listens at the control socket's path: none is there, or a stale one
/// left by a proxy that could not remove it.
fn nobody_at(control_socket: &std::path::Path) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(
        std::os::unix::net::UnixStream::connect(control_socket).map_err(|e| e.kind()),
        Err(NotFound | ConnectionRefused)
    )
}

/// Gathers the report. Reading the kernel needs capabilities; without them the report says
/// so and shows what it can.
pub(crate) fn gather(control_socket: &std::path::Path) -> Result<Report, Error> {
    let enabled = state::load()?;
    let mut untrusted = None;
    let (proxy_status, proxy_status_error) = match proxy_control::status(control_socket) {
        Ok(status) => (Some(status), None),
        Err(e) => {
            if let proxy_control::ControlError::Untrusted(why) = &e {
                untrusted = Some(why.clone());
            }
            (None, Some(e.to_string()))
        }
    };
    // Asked again only when it did not answer: a connection costs the proxy a client slot.
    let control_absent =
        (proxy_status.is_none() && nobody_at(control_socket)).then(|| control_socket.to_path_buf());
    let policy = enabled.as_ref().map(|e| e.policy.clone());
    let proxy_port = policy
        .as_ref()
        .map_or(bip324_redirect_args::DEFAULT_PROXY_PORT, |p| p.proxy_port);
    let proxy = proxy_listener::probe(proxy_port);
    let mut report = Report {
        state: State::Unknown,
        backend: enabled.as_ref().map(|e| e.backend),
        policy,
        cgroup: enabled.as_ref().and_then(|e| e.cgroup.clone()),
        kernel: Vec::new(),
        proxy,
        proxy_status,
        proxy_status_error,
        control_absent,
        inbound: None,
        inbound_proxy_status: None,
        problems: Vec::new(),
    };
    for kind in BackendKind::ALL {
        let expected = enabled
            .as_ref()
            .filter(|e| e.backend == kind)
            .map(|e| &e.policy);
        match backend::inspect(kind, expected) {
            Ok(inspection) => report.kernel.push(BackendView {
                backend: kind,
                inspection,
            }),
            Err(e @ Error::Privileges { .. }) => {
                report
                    .problems
                    .push(format!("cannot read the kernel's redirect: {e}"));
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
    }
    judge(&mut report, enabled.as_ref());
    for view in &report.kernel {
        report
            .problems
            .extend(view.inspection.warnings.iter().cloned());
    }
    // Someone else's socket where the proxy's should be: nothing it says is shown.
    report.problems.extend(untrusted);
    if let Some(enabled) = &enabled {
        if let Some(problem) = differs_from_file(enabled, crate::configured()) {
            report.problems.push(problem);
        }
    }
    report.inbound = InboundView::gather(&mut report.problems)?;
    if let Some(policy) = report.inbound.as_ref().and_then(|i| i.policy.as_ref()) {
        report.inbound_proxy_status = crate::inbound::proxy_status(
            policy,
            report.proxy_status.as_ref(),
            &mut report.problems,
        );
    }
    Ok(report)
}

fn judge(report: &mut Report, enabled: Option<&Enabled>) {
    let present: Vec<&BackendView> = report
        .kernel
        .iter()
        .filter(|v| v.inspection.present)
        .collect();
    let reenable = match enabled {
        Some(e) => format!(
            "run `{}` again (or `systemctl restart bip324-redirect`)",
            e.policy.enable_command(e.backend.name())
        ),
        None => "run `bip324-redirect enable` again".to_string(),
    };
    report.state = match enabled {
        None if present.is_empty() => State::Disabled,
        None => {
            let names: Vec<&str> = present.iter().map(|v| v.backend.name()).collect();
            report.problems.push(format!(
                "{} redirect objects exist but no record of enabling them (made by another \
                 tool, or the record under /run was lost): {reenable} to own them, or \
                 `bip324-redirect disable` to remove them",
                names.join(" and ")
            ));
            State::Unrecorded
        }
        Some(enabled) => {
            let view = present.iter().find(|v| v.backend == enabled.backend);
            match view {
                None => {
                    report.problems.push(format!(
                        "the {} redirect was removed from the kernel (for example by `nft flush \
                         ruleset` or a reload of nftables.service): its clients now connect \
                         directly, in PLAINTEXT; {reenable}",
                        enabled.backend
                    ));
                    State::Vanished
                }
                Some(view) if view.inspection.matches == Some(false) => {
                    const SHOWN: usize = 3;
                    let details = &view.inspection.details;
                    let mut what = details
                        .iter()
                        .take(SHOWN)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ");
                    if details.len() > SHOWN {
                        what.push_str(&format!("; and {} more", details.len() - SHOWN));
                    }
                    report.problems.push(format!(
                        "the {} redirect in the kernel differs from the policy ({what}); {reenable}",
                        enabled.backend
                    ));
                    State::Modified
                }
                Some(_) => State::Active,
            }
        }
    };
    if let Some(enabled) = enabled {
        for other in present.iter().filter(|v| v.backend != enabled.backend) {
            report.problems.push(format!(
                "the {} backend's objects are also present: {reenable} to keep only {}",
                other.backend, enabled.backend
            ));
        }
        let proxy_pid = report.proxy_status.as_ref().map(|s| s.proxy.pid);
        report
            .problems
            .extend(proxy_listener::problems(&report.proxy, proxy_pid));
        if let Some(status) = &report.proxy_status {
            report.problems.extend(crate::proxy_process::problems(
                status.proxy.pid,
                &status.proxy.listen,
                &enabled.policy,
                enabled.backend,
                enabled.cgroup.as_deref(),
            ));
        }
        if let Some(warning) = proxy_listener::port_warning(enabled.policy.proxy_port) {
            report.problems.push(warning);
        }
    }
}

/// A problem when the policy applied is not the configuration file's, which
/// bip324-redirect.service re-applies after an nftables reload or a reboot: the kernel would
/// then change behind the operator's back (a gateway policy enabled by hand would vanish).
fn differs_from_file(
    enabled: &Enabled,
    configured: Result<Option<Enabled>, Error>,
) -> Option<String> {
    let path = crate::config::redirect().path;
    match configured {
        Ok(None) => None,
        Ok(Some(file)) if &file == enabled => None,
        Ok(Some(file)) => Some(format!(
            "the policy applied (`{}`) is not the one in {} (`{}`), which \
             bip324-redirect.service applies after a reload of nftables.service or a reboot: \
             run `{0}` again to save it there, or `bip324-redirect restore` to apply the file's",
            enabled.policy.enable_command(enabled.backend.name()),
            path.display(),
            file.policy.enable_command(file.backend.name())
        )),
        Err(e) => Some(format!(
            "cannot tell whether the policy applied is the configured one: {e}"
        )),
    }
}

/// The report for a terminal.
pub(crate) fn render(report: &Report) -> String {
    let mut out = String::new();
    let state = match report.state {
        State::Active => "active",
        State::Disabled => "disabled",
        State::Vanished => "ENABLED BUT MISSING FROM THE KERNEL",
        State::Modified => "ENABLED BUT MODIFIED",
        State::Unrecorded => "unrecorded objects present",
        State::Unknown => "unknown",
    };
    match report.backend {
        Some(backend) => out.push_str(&format!("redirect: {state} ({backend})\n")),
        None => out.push_str(&format!("redirect: {state}\n")),
    }
    if let Some(policy) = &report.policy {
        out.push_str(&format!("policy:   {}\n", policy.describe()));
    }
    if let Some(cgroup) = &report.cgroup {
        out.push_str(&format!("cgroup:   processes below {}\n", cgroup.display()));
    }
    for view in &report.kernel {
        let verdict = match (view.inspection.present, view.inspection.matches) {
            (false, _) => "nothing installed",
            (true, Some(true)) => "installed, matches the policy",
            (true, Some(false)) => "installed, DIFFERS from the policy",
            (true, None) => "installed",
        };
        out.push_str(&format!("kernel:   {}: {verdict}\n", view.backend));
        for object in &view.inspection.objects {
            out.push_str(&format!("            {object}\n"));
        }
    }
    for probe in &report.proxy {
        let who = match (probe.listeners.as_slice(), probe.answering) {
            ([], _) => "does NOT answer".to_string(),
            (listeners, answering) => format!(
                "{} {}",
                if answering {
                    "answers:"
                } else {
                    "UNTRUSTED listener:"
                },
                listeners
                    .iter()
                    .map(proxy_listener::ListenerView::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        out.push_str(&format!("proxy:    {} {who}\n", probe.address));
    }
    match (&report.proxy_status, &report.proxy_status_error) {
        (Some(status), _) => render_connections(&mut out, status),
        (None, Some(error)) => match (&report.control_absent, nothing_answers(report)) {
            // Nothing runs: one short line, not the control socket's whole error.
            (Some(path), Some(port)) => out.push_str(&format!(
                "connections: none (the proxy is not running: nothing answers on port {port} \
                 or at {})\n",
                path.display()
            )),
            _ => out.push_str(&format!("connections: unknown ({error})\n")),
        },
        (None, None) => {}
    }
    if let Some(group) = report.policy.as_ref().and_then(|p| p.group.as_ref()) {
        let group = group.name.clone().unwrap_or_else(|| group.id.to_string());
        out.push_str(&format!(
            "clients:  start them with group {group} as their primary group: sg {group} -c 'your-client ...'\n"
        ));
    }
    if report.state == State::Disabled {
        out.push_str("enable:   sudo bip324-redirect enable --group btc\n");
    }
    if let Some(inbound) = &report.inbound {
        render_inbound(&mut out, inbound);
    }
    if let Some(status) = &report.inbound_proxy_status {
        out.push_str("inbound proxy (bip324-proxy-inbound):\n");
        render_connections(&mut out, status);
    }
    for problem in &report.problems {
        out.push_str(&format!("problem:  {problem}\n"));
    }
    out
}

fn render_inbound(out: &mut String, inbound: &InboundView) {
    let state = match inbound.state {
        State::Active => "active",
        State::Vanished => "ENABLED BUT MISSING FROM THE KERNEL",
        State::Modified => "ENABLED BUT MODIFIED",
        State::Unrecorded => "unrecorded objects present",
        State::Disabled | State::Unknown => "unknown",
    };
    out.push_str(&format!("inbound:  {state}\n"));
    if let Some(policy) = &inbound.policy {
        out.push_str(&format!("          {}\n", policy.describe()));
    }
    for object in &inbound.kernel.objects {
        out.push_str(&format!("          {object}\n"));
    }
    let ports = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    out.push_str(&format!(
        "          policy route: IPv4 sport {} ({}), IPv6 sport {} ({})\n",
        ports(&inbound.route.v4_ports),
        if inbound.route.v4_route {
            "table 324"
        } else {
            "NO ROUTE"
        },
        ports(&inbound.route.v6_ports),
        if inbound.route.v6_route {
            "table 324"
        } else {
            "NO ROUTE"
        },
    ));
}

/// The proxy port when nothing at all listens on it.
fn nothing_answers(report: &Report) -> Option<u16> {
    let first = report.proxy.first()?;
    report
        .proxy
        .iter()
        .all(|p| p.listeners.is_empty())
        .then_some(first.address.port())
}

/// The proxy's live connections as a table, session ids shortened to their first 8 digits.
fn render_connections(out: &mut String, status: &StatusDocument) {
    if let Some(upstream) = status.proxy.upstream_socks5 {
        out.push_str(&format!(
            "upstream: every connection goes out through SOCKS5 {upstream}\n"
        ));
    }
    let totals = &status.totals;
    out.push_str(&format!(
        "traffic:  client {} in / {} out (v1), remote {} in / {} out, since the proxy started\n",
        bytes(totals.client_in),
        bytes(totals.client_out),
        bytes(totals.remote_in),
        bytes(totals.remote_out)
    ));
    if let Some(ratio) = wire_ratio(totals) {
        out.push_str(&format!(
            "          on the wire: {ratio:.3} bytes per byte the clients sent and received \
             (v2's framing, tags and decoys, less its one-byte message ids)\n"
        ));
    }
    if status.connections.is_empty() {
        out.push_str("connections: none open\n");
        return;
    }
    out.push_str(&format!("connections: {} open\n", status.connections.len()));
    out.push_str(&format!(
        "  {:<22} {:<22} {:<9} {:<11} {:<9} {:>7} {:>10} {:>10}\n",
        "CLIENT", "DESTINATION", "NETWORK", "TRANSPORT", "SESSION", "AGE", "SENT", "RECEIVED"
    ));
    for c in &status.connections {
        let session: String = c
            .session_id
            .as_deref()
            .map_or("-".to_string(), |s| s.chars().take(8).collect());
        out.push_str(&format!(
            "  {:<22} {:<22} {:<9} {:<11} {:<9} {:>7} {:>10} {:>10}\n",
            c.client.to_string(),
            c.destination.to_string(),
            c.network.as_deref().unwrap_or("-"),
            c.transport,
            session,
            format!("{:.0}s", c.duration_seconds),
            bytes(c.counts.client_in),
            bytes(c.counts.client_out)
        ));
    }
}

/// Bytes on the remote side per byte on the client side, both directions together; `None`
/// before any traffic.
fn wire_ratio(totals: &bip324_control::Counts) -> Option<f64> {
    let client = totals.client_in + totals.client_out;
    let remote = totals.remote_in + totals.remote_out;
    (client > 0).then(|| remote as f64 / client as f64)
}

fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_ratio_counts_both_directions() {
        let totals = bip324_control::Counts {
            client_in: 1000,
            client_out: 3000,
            remote_in: 3050,
            remote_out: 1010,
            ..Default::default()
        };
        assert_eq!(wire_ratio(&totals), Some(1.015));
        assert_eq!(wire_ratio(&bip324_control::Counts::default()), None);
    }
    use crate::policy::Id;
    use crate::proxy_listener::{ListenerView, Probe};

    fn enabled() -> Enabled {
        Enabled {
            backend: BackendKind::Nftables,
            policy: Policy::new(
                Id {
                    id: 997,
                    name: Some("btc".into()),
                },
                &[8333],
                324,
                vec![],
            )
            .unwrap(),
            cgroup: None,
        }
    }

    fn listening(trusted: bool) -> Vec<Probe> {
        ["127.0.0.1:324", "[::1]:324"]
            .iter()
            .map(|a| Probe {
                address: a.parse().unwrap(),
                answering: trusted,
                listeners: vec![ListenerView {
                    local: a.parse().unwrap(),
                    uid: if trusted { 0 } else { 65534 },
                    user: None,
                    holders: Vec::new(),
                    trusted,
                }],
                error: None,
            })
            .collect()
    }

    /// A report as `gather` makes it, from what each backend found.
    fn report(nftables: Option<bool>, ebpf: bool, proxy: Vec<Probe>) -> Report {
        let view = |backend, present: bool, matches: Option<bool>| BackendView {
            backend,
            inspection: Inspection {
                present,
                matches,
                details: vec!["rule 1 differs".into()],
                ..Inspection::default()
            },
        };
        Report {
            state: State::Unknown,
            backend: None,
            policy: None,
            cgroup: None,
            kernel: vec![
                view(BackendKind::Nftables, nftables.is_some(), nftables),
                view(BackendKind::Ebpf, ebpf, None),
            ],
            proxy,
            proxy_status: None,
            proxy_status_error: None,
            control_absent: None,
            inbound: None,
            inbound_proxy_status: None,
            problems: Vec::new(),
        }
    }

    fn judged(mut report: Report, enabled: Option<&Enabled>) -> Report {
        judge(&mut report, enabled);
        report
    }

    #[test]
    fn active_as_asked_with_a_trusted_proxy_is_fine() {
        let r = judged(report(Some(true), false, listening(true)), Some(&enabled()));
        assert_eq!(r.state, State::Active);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.exit_code(), exit::OK);
    }

    #[test]
    fn vanished_rules_are_plaintext_and_say_how_to_repair() {
        let r = judged(report(None, false, listening(true)), Some(&enabled()));
        assert_eq!(r.state, State::Vanished);
        assert!(r.problems[0].contains("PLAINTEXT"), "{:?}", r.problems);
        assert!(r.problems[0].contains("bip324-redirect enable --group btc"));
        assert_eq!(r.exit_code(), exit::DEGRADED);
    }

    #[test]
    fn modified_rules_show_what_differs() {
        let r = judged(
            report(Some(false), false, listening(true)),
            Some(&enabled()),
        );
        assert_eq!(r.state, State::Modified);
        assert!(r.problems[0].contains("rule 1 differs"), "{:?}", r.problems);
    }

    #[test]
    fn objects_without_a_record_and_a_second_backend_are_problems() {
        let r = judged(report(Some(true), false, listening(true)), None);
        assert_eq!(r.state, State::Unrecorded);
        let r = judged(report(Some(true), true, listening(true)), Some(&enabled()));
        assert_eq!(r.state, State::Active);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("ebpf backend's objects are also present"))
        );
    }

    /// The kernel's policy is compared with the configuration file's, which the unit
    /// re-applies after a reload of nftables or a reboot.
    #[test]
    fn a_policy_other_than_the_files_is_a_problem() {
        let applied = enabled();
        assert_eq!(differs_from_file(&applied, Ok(None)), None, "no file");
        assert_eq!(differs_from_file(&applied, Ok(Some(applied.clone()))), None);
        let mut gateway = applied.clone();
        gateway.policy = gateway
            .policy
            .with_sources(vec![crate::policy::Source::interface("br-lan").unwrap()])
            .unwrap();
        let problem = differs_from_file(&gateway, Ok(Some(applied.clone()))).unwrap();
        assert!(
            problem.contains("--from-interface br-lan")
                && problem.contains("bip324-redirect restore"),
            "{problem}"
        );
        assert!(differs_from_file(&applied, Ok(Some(gateway))).is_some());
        let damaged = differs_from_file(&applied, Err(Error::Config("no line".into())));
        assert!(damaged.unwrap().contains("no line"));
    }

    /// The proxy's addresses with nobody listening or answering there.
    fn nobody_listening() -> Vec<Probe> {
        listening(true)
            .into_iter()
            .map(|p| Probe {
                listeners: Vec::new(),
                answering: false,
                ..p
            })
            .collect()
    }

    /// Nothing running, nothing enabled: one short line for the connections, not the
    /// control socket's whole error.
    #[test]
    fn no_proxy_at_all_is_one_short_connections_line() {
        let silent = nobody_listening();
        let mut r = judged(report(None, false, silent), None);
        r.proxy_status_error = Some("cannot reach the proxy's control socket: ".repeat(8));
        r.control_absent = Some("/run/bip324-proxy/control.sock".into());
        let out = render(&r);
        let line = out.lines().find(|l| l.starts_with("connections:")).unwrap();
        assert_eq!(
            line,
            "connections: none (the proxy is not running: nothing answers on port 324 or at \
             /run/bip324-proxy/control.sock)"
        );
        // A proxy that listens but whose control socket is elsewhere: the error stays.
        let mut r = judged(report(None, false, listening(true)), None);
        r.proxy_status_error = Some("no socket here".into());
        r.control_absent = Some("/run/bip324-proxy/control.sock".into());
        assert!(render(&r).contains("connections: unknown (no socket here)"));
    }

    #[test]
    fn nothing_installed_and_nothing_enabled_is_disabled() {
        let r = judged(report(None, false, Vec::new()), None);
        assert_eq!(r.state, State::Disabled);
        assert_eq!(r.exit_code(), exit::NOT_ENABLED);
    }

    #[test]
    fn an_untrusted_or_missing_listener_degrades_an_active_redirect() {
        let r = judged(
            report(Some(true), false, listening(false)),
            Some(&enabled()),
        );
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("uid 65534") && p.contains("PLAINTEXT"))
        );
        assert_eq!(r.exit_code(), exit::DEGRADED);
        let silent = nobody_listening();
        let r = judged(report(Some(true), false, silent), Some(&enabled()));
        assert!(r.problems.iter().any(|p| p.contains("does not answer")));
    }
}
