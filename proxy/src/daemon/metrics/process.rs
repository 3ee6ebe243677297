//! The standard `process_*` metrics, read from /proc/self.

use std::fmt::Write as _;

/// The standard `process_*` metrics, from /proc/self: descriptors matter most here, each
/// proxied connection holding two.
pub(super) fn render_process(out: &mut String, start: f64) {
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    // SAFETY: sysconf has no preconditions.
    let (page, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
        )
    };
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the
    // 13th.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (field(11) + field(12)) / ticks;
    for (name, kind, help, value) in [
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Limit on open file descriptors.",
            max_fds as f64,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
            resident as f64,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time.",
            cpu,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time, Unix seconds.",
            start,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
