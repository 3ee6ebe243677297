//! Programs run inside a test host, and what they printed.

use crate::netns::Netns;

/// What a program run in a test host printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub(crate) fn of(output: &std::process::Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A `key=value` line of the client's report.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
    }
}

/// Runs the unmodified v1 client program in `host`, as `gid` when given.
pub fn run_client(client_binary: &str, host: &Netns, gid: Option<u32>, args: &[&str]) -> Run {
    run_client_as(client_binary, host, gid, &[], args)
}

/// Like `run_client`, with supplementary groups.
pub fn run_client_as(
    client_binary: &str,
    host: &Netns,
    gid: Option<u32>,
    supplementary: &[u32],
    args: &[&str],
) -> Run {
    let output = host
        .command_as(client_binary, gid, supplementary)
        .args(args)
        .output()
        .expect("run the v1 client");
    Run::of(&output)
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
