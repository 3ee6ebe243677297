//! The table.

pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) measured: String,
    pub(crate) reference: String,
    pub(crate) ratio: f64,
    pub(crate) target: String,
    pub(crate) met: bool,
}

impl Row {
    pub(crate) fn new(
        figure: &str,
        measured: String,
        reference: String,
        ratio: f64,
        target: &str,
        met: bool,
    ) -> Row {
        Row {
            figure: figure.into(),
            measured,
            reference,
            ratio,
            target: target.into(),
            met,
        }
    }
}

pub(crate) fn render(rows: &[Row]) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
    };
    let flags: Vec<&str> = field("flags").split_whitespace().collect();
    let features: Vec<&str> = ["avx2", "avx512f", "sha_ni"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // The proxy is the one built beside this binary: target/<profile>/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile = exe
        .parent()
        .and_then(|dir| dir.file_name())
        .map_or("unknown".into(), |name| name.to_string_lossy());
    let mut out = format!(
        "machine: {}, {cores} cores ({}), Linux {}; proxy: {profile} build, --log-level info (the default, as the service runs)\n\n",
        field("model name"),
        features.join(" "),
        kernel.trim()
    );
    out.push_str(&format!(
        "| {:<42} | {:<66} | {:<34} | {:>6} | {:<34} | {} |\n|{}|{}|{}|{}|{}|{}|\n",
        "figure",
        "measured",
        "bound / baseline (same run)",
        "ratio",
        "target",
        "met",
        "-".repeat(44),
        "-".repeat(68),
        "-".repeat(36),
        "-".repeat(8),
        "-".repeat(36),
        "-----"
    ));
    for row in rows {
        out.push_str(&format!(
            "| {:<42} | {:<66} | {:<34} | {:>5.0}% | {:<34} | {} |\n",
            row.figure,
            row.measured,
            row.reference,
            row.ratio * 100.0,
            row.target,
            if row.met { "yes" } else { "NO" }
        ));
    }
    out
}
