//! `status` for a terminal: the verdict, the kernel's objects, who answers on the proxy
//! port, the proxy's connections and traffic, inbound mode, then the problems.

use bip324_control::{StatusDocument, TransportKind};

use super::{InboundView, Report, Verdict};
use crate::proxy_listener;

/// The report for a terminal.
pub(crate) fn render(report: &Report) -> String {
    let mut out = String::new();
    let state = match report.state {
        Verdict::Active => "active",
        Verdict::Disabled => "disabled",
        Verdict::Vanished => "ENABLED BUT MISSING FROM THE KERNEL",
        Verdict::Modified => "ENABLED BUT MODIFIED",
        Verdict::Unrecorded => "unrecorded objects present",
        Verdict::Unknown => "unknown",
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
    if report.state == Verdict::Disabled {
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
        Verdict::Active => "active",
        Verdict::Vanished => "ENABLED BUT MISSING FROM THE KERNEL",
        Verdict::Modified => "ENABLED BUT MODIFIED",
        Verdict::Unrecorded => "unrecorded objects present",
        Verdict::Disabled | Verdict::Unknown => "unknown",
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
            c.transport.map_or("connecting", TransportKind::as_str),
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
    use super::super::fixtures::{judged, listening, nobody_listening, report};
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

    /// A connection still connecting, and one a newer proxy carries in a way this client
    /// does not know, show as such.
    #[test]
    fn connections_show_their_transport_or_connecting() {
        let connection = |id, transport| bip324_control::ConnectionStatus {
            id,
            direction: bip324_control::Direction::Outbound,
            front: bip324_control::Front::Redirect,
            client: "10.0.0.1:40000".parse().unwrap(),
            destination: "10.0.0.2:8333".parse().unwrap(),
            network: Some("mainnet".into()),
            transport,
            session_id: None,
            started: 0.0,
            duration_seconds: 1.0,
            counts: bip324_control::Counts::default(),
        };
        let status = StatusDocument {
            version: bip324_control::VERSION,
            proxy: bip324_control::ProxyInfo {
                version: "0.2.0".into(),
                pid: 1,
                started: 0.0,
                listen: Vec::new(),
                inbound: Vec::new(),
                upstream_socks5: None,
                socks5: Vec::new(),
                shaping: None,
                v1_fallback: None,
            },
            connections: vec![
                connection(1, None),
                connection(2, Some(TransportKind::V2)),
                connection(3, Some(TransportKind::Unknown)),
            ],
            totals: bip324_control::Counts::default(),
            recent: Vec::new(),
            tallies: bip324_control::Tallies::default(),
            traffic: Vec::new(),
        };
        let mut out = String::new();
        render_connections(&mut out, &status);
        let transports: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("10.0.0.2:8333"))
            .map(|l| l.split_whitespace().nth(3).unwrap())
            .collect();
        assert_eq!(transports, ["connecting", "v2", "unknown"], "{out}");
    }
}
