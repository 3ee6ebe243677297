//! The Debian architecture the package is labelled with: the one `cargo build` makes
//! binaries for here.

use std::process::Command;

use crate::{Result, root};

/// The Debian architecture of what `cargo build` makes here: the host triple of the rustc
/// that cargo runs (no `--target` is given), in Debian's name. A package labelled with
/// another architecture would install binaries that cannot run.
pub(super) fn architecture() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let host = text
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .ok_or_else(|| format!("`{rustc} -vV` names no host triple"))?;
    debian_architecture(host.trim()).map(str::to_string)
}

/// Debian's name for a Rust target triple's architecture (dpkg-architecture's table, for the
/// Linux GNU targets Debian builds).
fn debian_architecture(triple: &str) -> Result<&'static str> {
    let cpu = triple.split('-').next().unwrap_or_default();
    let abi = triple.rsplit('-').next().unwrap_or_default();
    if !triple.contains("-linux-") {
        return Err(format!(
            "{triple}: the Debian package is built for Linux only"
        ));
    }
    Ok(match cpu {
        "x86_64" if abi == "gnux32" => "x32",
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i486" | "i586" | "i686" => "i386",
        cpu if cpu.starts_with("arm") || cpu.starts_with("thumb") => {
            if abi.ends_with("hf") {
                "armhf"
            } else {
                "armel"
            }
        }
        "riscv64gc" | "riscv64" => "riscv64",
        "powerpc64le" => "ppc64el",
        "powerpc64" => "ppc64",
        "powerpc" => "powerpc",
        "s390x" => "s390x",
        "mips64el" => "mips64el",
        "mipsel" => "mipsel",
        "loongarch64" => "loong64",
        "sparc64" => "sparc64",
        _ => return Err(format!("{triple}: no Debian architecture known for it")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_architectures_of_rust_targets() {
        for (triple, arch) in [
            ("x86_64-unknown-linux-gnu", "amd64"),
            ("aarch64-unknown-linux-gnu", "arm64"),
            ("armv7-unknown-linux-gnueabihf", "armhf"),
            ("arm-unknown-linux-gnueabi", "armel"),
            ("i686-unknown-linux-gnu", "i386"),
            ("riscv64gc-unknown-linux-gnu", "riscv64"),
            ("powerpc64le-unknown-linux-gnu", "ppc64el"),
            ("s390x-unknown-linux-gnu", "s390x"),
        ] {
            assert_eq!(debian_architecture(triple), Ok(arch), "{triple}");
        }
        assert!(debian_architecture("x86_64-apple-darwin").is_err());
        assert!(debian_architecture("wasm32-unknown-unknown").is_err());
    }
}
