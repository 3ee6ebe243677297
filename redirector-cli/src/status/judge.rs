//! The judgement of the local redirect: the kernel's objects against the record of `enable`
//! and the configuration file, and the proxy against the policy. Each finding is a
//! [`Problem`].

use super::{BackendView, Report, Verdict};
use crate::error::Error;
use crate::problem::{Problem, Reenable};
use crate::state::Enabled;
use crate::{proxy_listener, proxy_process};

pub(super) fn judge(report: &mut Report, enabled: Option<&Enabled>) {
    let present: Vec<&BackendView> = report
        .kernel
        .iter()
        .filter(|v| v.inspection.present)
        .collect();
    let again = Reenable(enabled.map(|e| e.policy.enable_command(e.backend.name())));
    report.state = match enabled {
        None if present.is_empty() => Verdict::Disabled,
        None => {
            report.problems.push(Problem::Unrecorded {
                backends: present.iter().map(|v| v.backend).collect(),
                again: again.clone(),
            });
            Verdict::Unrecorded
        }
        Some(enabled) => match present.iter().find(|v| v.backend == enabled.backend) {
            None => {
                report.problems.push(Problem::Vanished {
                    backend: enabled.backend,
                    again: again.clone(),
                });
                Verdict::Vanished
            }
            Some(view) if view.inspection.matches == Some(false) => {
                report.problems.push(Problem::Modified {
                    backend: enabled.backend,
                    details: view.inspection.details.clone(),
                    again: again.clone(),
                });
                Verdict::Modified
            }
            Some(_) => Verdict::Active,
        },
    };
    let Some(enabled) = enabled else {
        return;
    };
    for other in present.iter().filter(|v| v.backend != enabled.backend) {
        report.problems.push(Problem::SecondBackend {
            other: other.backend,
            enabled: enabled.backend,
            again: again.clone(),
        });
    }
    let proxy_pid = report.proxy_status.as_ref().map(|s| s.proxy.pid);
    report
        .problems
        .extend(proxy_listener::problems(&report.proxy, proxy_pid));
    if let Some(status) = &report.proxy_status {
        report.problems.extend(proxy_process::problems(
            status.proxy.pid,
            &status.proxy.listen,
            &enabled.policy,
            enabled.backend,
            enabled.cgroup.as_deref(),
        ));
    }
    report
        .problems
        .extend(proxy_listener::port_warning(enabled.policy.proxy_port));
}

/// A problem when the policy applied is not the configuration file's, which
/// bip324-redirect.service re-applies after an nftables reload or a reboot: the kernel would
/// then change behind the operator's back (a gateway policy enabled by hand would vanish).
pub(super) fn differs_from_file(
    enabled: &Enabled,
    configured: Result<Option<Enabled>, Error>,
) -> Option<Problem> {
    match configured {
        Ok(None) => None,
        Ok(Some(file)) if &file == enabled => None,
        Ok(Some(file)) => Some(Problem::NotTheFilesPolicy {
            inbound: false,
            applied: enabled.policy.enable_command(enabled.backend.name()),
            path: crate::config::redirect().path,
            file: file.policy.enable_command(file.backend.name()),
        }),
        Err(e) => Some(Problem::ConfigUnreadable {
            inbound: false,
            why: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{enabled, judged, listening, nobody_listening, report};
    use super::*;
    use crate::backend::BackendKind;
    use crate::error::exit;

    #[test]
    fn active_as_asked_with_a_trusted_proxy_is_fine() {
        let r = judged(report(Some(true), false, listening(true)), Some(&enabled()));
        assert_eq!(r.state, Verdict::Active);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.exit_code(), exit::OK);
    }

    #[test]
    fn vanished_rules_are_plaintext_and_say_how_to_repair() {
        let r = judged(report(None, false, listening(true)), Some(&enabled()));
        assert_eq!(r.state, Verdict::Vanished);
        assert!(
            matches!(
                &r.problems[0],
                Problem::Vanished {
                    backend: BackendKind::Nftables,
                    ..
                }
            ),
            "{:?}",
            r.problems
        );
        let sentence = r.problems[0].to_string();
        assert!(sentence.contains("PLAINTEXT"), "{sentence}");
        assert!(
            sentence.contains("`bip324-redirect enable --group btc"),
            "{sentence}"
        );
        assert_eq!(r.exit_code(), exit::DEGRADED);
    }

    #[test]
    fn modified_rules_show_what_differs() {
        let r = judged(
            report(Some(false), false, listening(true)),
            Some(&enabled()),
        );
        assert_eq!(r.state, Verdict::Modified);
        assert!(
            matches!(&r.problems[0], Problem::Modified { details, .. } if details == &["rule 1 differs"]),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn objects_without_a_record_and_a_second_backend_are_problems() {
        let r = judged(report(Some(true), false, listening(true)), None);
        assert_eq!(r.state, Verdict::Unrecorded);
        let r = judged(report(Some(true), true, listening(true)), Some(&enabled()));
        assert_eq!(r.state, Verdict::Active);
        assert!(r.problems.iter().any(|p| matches!(
            p,
            Problem::SecondBackend {
                other: BackendKind::Ebpf,
                ..
            }
        )));
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
            matches!(&problem, Problem::NotTheFilesPolicy { inbound: false, applied, .. }
                if applied.contains("--from-interface br-lan")),
            "{problem}"
        );
        assert!(problem.to_string().contains("bip324-redirect restore"));
        assert!(differs_from_file(&applied, Ok(Some(gateway))).is_some());
        let damaged = differs_from_file(&applied, Err(Error::Config("no line".into())));
        assert_eq!(
            damaged,
            Some(Problem::ConfigUnreadable {
                inbound: false,
                why: "no line".into()
            })
        );
    }

    #[test]
    fn nothing_installed_and_nothing_enabled_is_disabled() {
        let r = judged(report(None, false, Vec::new()), None);
        assert_eq!(r.state, Verdict::Disabled);
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
                .any(|p| matches!(p, Problem::UntrustedListener { .. })),
            "{:?}",
            r.problems
        );
        assert_eq!(r.exit_code(), exit::DEGRADED);
        let r = judged(
            report(Some(true), false, nobody_listening()),
            Some(&enabled()),
        );
        assert!(
            r.problems.iter().any(
                |p| matches!(p, Problem::ProxySilent { addresses, .. } if addresses.len() == 2)
            )
        );
    }
}
