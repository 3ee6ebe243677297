//! The configuration files that the units re-apply after an nftables reload or a boot
//! (`/etc/bip324/redirect.conf`, `/etc/bip324/inbound.conf`): the one place a policy lives.
//!
//! `enable` by hand writes its options there (one line replaced, the comments kept), so that a
//! reload or a reboot re-applies the policy last enabled and never a weaker one; `restore`
//! applies exactly what the file says; `status` reports any difference between the file and
//! what was applied.
//!
//! The file is a systemd `EnvironmentFile`: `VAR="--option value ..."`. Only the subset that
//! splits the same way for systemd and for us is accepted: one line, one pair of quotes (or
//! none), no backslashes, dollars or quotes inside.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use crate::error::Error;

const DEFAULT_DIR: &str = "/etc/bip324";

/// One configuration file and the variable in it that holds the options.
pub(crate) struct ConfigFile {
    pub path: PathBuf,
    pub var: &'static str,
    /// The command whose options the variable holds, for the header of a new file.
    command: &'static str,
    unit: &'static str,
}

fn dir() -> PathBuf {
    std::env::var_os("BIP324_REDIRECT_CONFIG_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// `/etc/bip324/redirect.conf`, read by bip324-redirect.service.
pub(crate) fn redirect() -> ConfigFile {
    ConfigFile {
        path: dir().join("redirect.conf"),
        var: "BIP324_REDIRECT_OPTIONS",
        command: "bip324-redirect enable",
        unit: "bip324-redirect.service",
    }
}

/// `/etc/bip324/inbound.conf`, read by bip324-redirect-inbound.service.
pub(crate) fn inbound() -> ConfigFile {
    ConfigFile {
        path: dir().join("inbound.conf"),
        var: "BIP324_INBOUND_OPTIONS",
        command: "bip324-redirect inbound enable",
        unit: "bip324-redirect-inbound.service",
    }
}

impl ConfigFile {
    /// The options the file holds; `None` when there is no file.
    pub(crate) fn options(&self) -> Result<Option<Vec<String>>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(format!("cannot read {}", self.path.display()), e));
            }
        };
        parse(&text, self.var)
            .map(Some)
            .map_err(|why| Error::Config(format!("{}: {why}", self.path.display())))
    }

    /// Replaces the options in the file atomically (a new file renamed over it), keeping
    /// every other line. Without the configuration directory (no package installed, hence no
    /// unit to read it) nothing is written: `Ok(false)`.
    pub(crate) fn save(&self, words: &[String]) -> Result<bool, Error> {
        let io = |e: std::io::Error| Error::io(format!("cannot write {}", self.path.display()), e);
        let Some(dir) = self.path.parent().filter(|d| d.is_dir()) else {
            return Ok(false);
        };
        let (old, mode) = match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let mode = std::fs::metadata(&self.path)
                    .map_err(io)?
                    .permissions()
                    .mode();
                (text, mode & 0o7777)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                format!(
                    "# Options of `{}`, re-applied by {} after an nftables reload and at\n\
                     # boot. Written by `{0}`; after a change by hand: systemctl reload {1}\n",
                    self.command, self.unit
                ),
                0o644,
            ),
            Err(e) => return Err(io(e)),
        };
        let text = with_options(&old, self.var, words).map_err(Error::Config)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .map_or_else(|| "conf".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)?;
        Ok(true)
    }

    pub(crate) fn unit(&self) -> &'static str {
        self.unit
    }
}

/// The words of the last `var=` line (systemd keeps the last assignment).
pub(crate) fn parse(text: &str, var: &str) -> Result<Vec<String>, String> {
    let prefix = format!("{var}=");
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with(&prefix))
        .ok_or_else(|| format!("no {var}= line"))?;
    let value = &line[prefix.len()..];
    let inner = match value.as_bytes() {
        [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => {
            &value[1..value.len() - 1]
        }
        _ => value,
    };
    if inner.contains(['"', '\'', '\\', '$', '`']) {
        return Err(format!(
            "{var} must be one line of options in one pair of double quotes, without \
             backslashes, dollars or inner quotes: {var}=\"--group btc ...\""
        ));
    }
    Ok(inner.split_whitespace().map(str::to_string).collect())
}

/// `text` with its `var=` line(s) replaced by one holding `words` (appended when there is
/// none), every other line as it was.
pub(crate) fn with_options(text: &str, var: &str, words: &[String]) -> Result<String, String> {
    if let Some(word) = words.iter().find(|w| {
        w.is_empty() || w.contains(['"', '\'', '\\', '$', '`']) || w.contains(char::is_whitespace)
    }) {
        return Err(format!(
            "cannot write {word:?} into a configuration file (quotes, backslashes, dollars \
             and spaces are not kept as one word): use --no-save and edit the file"
        ));
    }
    let prefix = format!("{var}=");
    let line = format!("{var}=\"{}\"", words.join(" "));
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut placed = false;
    for old in text.lines() {
        if old.trim().starts_with(&prefix) {
            if !placed {
                out.push_str(&line);
                out.push('\n');
                placed = true;
            }
            continue;
        }
        out.push_str(old);
        out.push('\n');
    }
    if !placed {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../packaging/config/redirect.conf");

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_shipped_file_parses_and_a_rewrite_keeps_its_comments() {
        let var = "BIP324_REDIRECT_OPTIONS";
        let shipped = parse(SHIPPED, var).unwrap();
        assert!(shipped.starts_with(&words("--group btc")), "{shipped:?}");
        let gateway = words("--group btc --from-interface br-lan --from 192.168.1.0/24");
        let new = with_options(SHIPPED, var, &gateway).unwrap();
        assert_eq!(parse(&new, var).unwrap(), gateway);
        let comments = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(comments(&new), comments(SHIPPED));
        assert_eq!(new.matches(var).count(), SHIPPED.matches(var).count());
    }

    #[test]
    fn the_last_assignment_counts_and_a_missing_one_is_appended() {
        let var = "V";
        assert_eq!(
            parse("V=\"-a\"\n# V=\"-b\"\nV='-c d'\n", var).unwrap(),
            words("-c d")
        );
        assert_eq!(parse("V=-e\n", var).unwrap(), words("-e"));
        assert!(parse("# nothing\n", var).is_err());
        assert!(parse("V=\"--group $(id)\"\n", var).is_err());
        assert_eq!(
            with_options("# c\n", var, &words("-x 1")).unwrap(),
            "# c\nV=\"-x 1\"\n"
        );
        assert_eq!(
            with_options("V=\"a\"\nV=\"b\"\n# c\n", var, &words("-y")).unwrap(),
            "V=\"-y\"\n# c\n"
        );
        assert!(with_options("", var, &["a b".to_string()]).is_err());
    }
}
