//! Rules in `nft` words, so that `status` can say "the rule for port 8333 is missing"
//! instead of printing netlink expressions. Only the expressions our rules (and the usual
//! hand edits to them) are made of are named; any other line is shown as libnftnl prints it.

/// One rule as `nft list` would show it, from libnftnl's expression lines.
pub(crate) fn rule_text(lines: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut rest = lines.iter().map(String::as_str).peekable();
    while let Some(line) = rest.next() {
        let loaded = load_of(line);
        let compared = loaded.and_then(|_| rest.peek().and_then(|next| comparison(next)));
        if let (Some(load), Some((negated, value))) = (loaded, compared) {
            rest.next();
            let op = if negated { "!= " } else { "" };
            let word = match load {
                Load::L4proto => format!("meta l4proto {op}{}", protocol(&value)),
                Load::Skuid => format!("meta skuid {op}{}", value[0]),
                Load::Skgid => format!("meta skgid {op}{}", value[0]),
                Load::Iifname => format!("iifname {op}\"{}\"", name(&value)),
                Load::FibDaddrType => format!("fib daddr type {op}{}", route_type(value[0])),
                Load::Dport => {
                    let port = port_of(value[0]);
                    // `meta l4proto tcp` only guards the port match: nft shows them as one.
                    match words.last().map(String::as_str) {
                        Some("meta l4proto tcp") => {
                            words.pop();
                            format!("tcp dport {op}{port}")
                        }
                        _ => format!("th dport {op}{port}"),
                    }
                }
            };
            words.push(word);
            continue;
        }
        if let Some(value) = immediate_data(line)
            && rest.peek() == Some(&REDIRECT_TO_REG1)
        {
            rest.next();
            words.push(format!("redirect to :{}", port_of(value)));
            continue;
        }
        words.push(match line {
            "[ immediate reg 0 accept ]" => "accept".to_string(),
            "[ immediate reg 0 drop ]" => "drop".to_string(),
            other => other.to_string(),
        });
    }
    words.join(" ")
}

/// What differs between the rules in the kernel and those a policy installs, each rule named
/// by its purpose or shown in `nft` words. `want` pairs a purpose with expression lines.
pub(crate) fn differences(got: &[Vec<String>], want: &[(String, Vec<String>)]) -> Vec<String> {
    let mut unmatched: Vec<&Vec<String>> = got.iter().collect();
    let mut differences = Vec::new();
    for (purpose, lines) in want {
        match unmatched.iter().position(|rule| *rule == lines) {
            Some(at) => {
                unmatched.remove(at);
            }
            None => differences.push(format!("{purpose} is missing (`{}`)", rule_text(lines))),
        }
    }
    differences.extend(
        unmatched
            .iter()
            .map(|rule| format!("unexpected rule `{}`", rule_text(rule))),
    );
    if differences.is_empty() && want.iter().map(|(_, lines)| lines).ne(got.iter()) {
        differences.push("the rules are in another order than the policy's".into());
    }
    differences
}

/// Our redirect statement: the port in register 1, `NF_NAT_RANGE_PROTO_SPECIFIED`.
const REDIRECT_TO_REG1: &str = "[ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]";

#[derive(Clone, Copy)]
enum Load {
    L4proto,
    Skuid,
    Skgid,
    Dport,
    Iifname,
    FibDaddrType,
}

fn load_of(line: &str) -> Option<Load> {
    match line {
        "[ meta load l4proto => reg 1 ]" => Some(Load::L4proto),
        "[ meta load skuid => reg 1 ]" => Some(Load::Skuid),
        "[ meta load skgid => reg 1 ]" => Some(Load::Skgid),
        "[ meta load iifname => reg 1 ]" => Some(Load::Iifname),
        "[ fib daddr type => reg 1 ]" => Some(Load::FibDaddrType),
        "[ payload load 2b @ transport header + 2 => reg 1 ]" => Some(Load::Dport),
        _ => None,
    }
}

/// `[ cmp eq reg 1 0x00008d20 ]` (or `neq`, with several words): whether negated, and the
/// data, which libnftnl prints as 32-bit words in host order.
fn comparison(line: &str) -> Option<(bool, Vec<u32>)> {
    let rest = line.strip_prefix("[ cmp ")?.strip_suffix(" ]")?;
    let (negated, rest) = match rest.split_once(" reg 1 ")? {
        ("eq", rest) => (false, rest),
        ("neq", rest) => (true, rest),
        _ => return None,
    };
    let words = rest
        .split(' ')
        .map(|word| u32::from_str_radix(word.strip_prefix("0x")?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    (!words.is_empty()).then_some((negated, words))
}

fn immediate_data(line: &str) -> Option<u32> {
    hex_word(line.strip_prefix("[ immediate reg 1 0x")?)
}

fn hex_word(rest: &str) -> Option<u32> {
    u32::from_str_radix(rest.strip_suffix(" ]")?, 16).ok()
}

/// An interface name: its bytes up to the first zero.
fn name(words: &[u32]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn route_type(word: u32) -> String {
    match word {
        1 => "unicast".to_string(),
        2 => "local".to_string(),
        3 => "broadcast".to_string(),
        5 => "multicast".to_string(),
        other => other.to_string(),
    }
}

/// A port is two bytes in network order at the start of the word.
fn port_of(word: u32) -> u16 {
    let bytes = word.to_ne_bytes();
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn protocol(words: &[u32]) -> String {
    match words[0].to_ne_bytes()[0] {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_hand_added_accept_reads_like_nft() {
        // `nft add rule inet bip324_redirect output tcp dport 9999 accept`
        let rule = lines(&[
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            "[ cmp eq reg 1 0x00000f27 ]",
            "[ immediate reg 0 accept ]",
        ]);
        assert_eq!(rule_text(&rule), "tcp dport 9999 accept");
    }

    fn redirect(port: &str) -> Vec<String> {
        lines(&[
            "[ meta load l4proto => reg 1 ]",
            "[ cmp eq reg 1 0x00000006 ]",
            "[ payload load 2b @ transport header + 2 => reg 1 ]",
            port,
            "[ meta load skgid => reg 1 ]",
            "[ cmp eq reg 1 0x000003e9 ]",
            "[ immediate reg 1 0x00004401 ]",
            REDIRECT_TO_REG1,
        ])
    }

    #[test]
    fn a_missing_and_a_foreign_rule_are_named() {
        let want = [(
            "the rule for port 8333".to_string(),
            redirect("[ cmp eq reg 1 0x00008d20 ]"),
        )];
        let got = [redirect("[ cmp eq reg 1 0x00008e20 ]")];
        assert_eq!(
            differences(&got, &want),
            [
                "the rule for port 8333 is missing (`tcp dport 8333 meta skgid 1001 redirect to :324`)",
                "unexpected rule `tcp dport 8334 meta skgid 1001 redirect to :324`",
            ]
        );
        assert!(differences(&want.clone().map(|(_, rule)| rule), &want).is_empty());
    }

    #[test]
    fn order_matters() {
        let exemption = lines(&[
            "[ meta load skuid => reg 1 ]",
            "[ cmp eq reg 1 0x00000069 ]",
            "[ immediate reg 0 accept ]",
        ]);
        let port = redirect("[ cmp eq reg 1 0x00008d20 ]");
        let want = [
            ("e".to_string(), exemption.clone()),
            ("p".to_string(), port.clone()),
        ];
        assert_eq!(
            differences(&[port, exemption], &want),
            ["the rules are in another order than the policy's"]
        );
    }

    #[test]
    fn unknown_expressions_are_shown_as_they_are() {
        let rule = lines(&[
            "[ meta load skuid => reg 1 ]",
            "[ cmp gt reg 1 0x000003e8 ]",
            "[ counter pkts 0 bytes 0 ]",
            "[ immediate reg 0 drop ]",
        ]);
        assert_eq!(
            rule_text(&rule),
            "[ meta load skuid => reg 1 ] [ cmp gt reg 1 0x000003e8 ] [ counter pkts 0 bytes 0 ] drop"
        );
    }
}
