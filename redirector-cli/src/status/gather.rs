//! Reads what `status` reports: the record of `enable`, each backend's kernel objects, who
//! listens on the proxy port, the proxy's own report over its control socket, and inbound
//! mode's part; then has it judged.

use std::path::Path;

use super::inbound::{self, InboundView};
use super::{BackendView, Report, Verdict, judge};
use crate::backend::{self, BackendKind};
use crate::error::Error;
use crate::problem::Problem;
use crate::{proxy_control, proxy_listener, state};

/// Whether no process listens at the control socket's path: none is there, or a stale one
/// left by a proxy that could not remove it.
fn nobody_at(control_socket: &Path) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(
        std::os::unix::net::UnixStream::connect(control_socket).map_err(|e| e.kind()),
        Err(NotFound | ConnectionRefused)
    )
}

/// The report, judged. Reading the kernel needs capabilities; without them the report says
/// so and shows what it can.
pub(crate) fn report(control_socket: &Path) -> Result<Report, Error> {
    let enabled = state::load()?;
    let mut untrusted = None;
    let (proxy_status, proxy_status_error) = match proxy_control::status(control_socket) {
        Ok(status) => (Some(status), None),
        Err(e) => {
            if let proxy_control::ControlError::Untrusted(why) = &e {
                untrusted = Some(Problem::UntrustedControl(why.clone()));
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
        state: Verdict::Unknown,
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
                    .push(Problem::KernelUnreadable(e.to_string()));
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
    }
    judge::judge(&mut report, enabled.as_ref());
    for view in &report.kernel {
        let warnings = view.inspection.warnings.iter().cloned();
        report.problems.extend(warnings.map(Problem::Backend));
    }
    // Someone else's socket where the proxy's should be: nothing it says is shown.
    report.problems.extend(untrusted);
    if let Some(enabled) = &enabled {
        report
            .problems
            .extend(judge::differs_from_file(enabled, crate::configured()));
    }
    report.inbound = InboundView::gather(&mut report.problems)?;
    if let Some(policy) = report.inbound.as_ref().and_then(|i| i.policy.as_ref()) {
        report.inbound_proxy_status =
            inbound::proxy_status(policy, report.proxy_status.as_ref(), &mut report.problems);
    }
    Ok(report)
}
