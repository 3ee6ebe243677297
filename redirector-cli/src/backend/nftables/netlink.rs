//! Talking to nf_tables over netlink: sending batches, reading our table back, and turning
//! kernel errors into sentences.
//!
//! Rules are compared in libnftnl's own text form (what `nft --debug=netlink` prints), so
//! what was asked and what the kernel holds are rendered by the same code.

use std::ffi::{CStr, c_char, c_void};
use std::io;

use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{FinalizedBatch, MsgType, NlMsg, Rule};

use crate::error::Error;

fn socket() -> Result<mnl::Socket, Error> {
    mnl::Socket::new(mnl::Bus::Netfilter).map_err(|e| explain(&e, "open a netlink socket"))
}

fn buffer() -> Vec<u8> {
    vec![0; nftnl::nft_nlmsg_maxsize() as usize]
}

/// Sends a batch and waits for the kernel to accept every message of it.
pub(crate) fn send(batch: &FinalizedBatch, action: &str) -> Result<(), Error> {
    let socket = socket()?;
    let portid = socket.portid();
    socket.send_all(batch).map_err(|e| explain(&e, action))?;
    let mut buffer = buffer();
    let mut expected = batch.sequence_numbers();
    while !expected.is_empty() {
        let messages = socket
            .recv(&mut buffer[..])
            .map_err(|e| explain(&e, action))?;
        for message in messages {
            let message = message.map_err(|e| explain(&e, action))?;
            let seq = expected
                .next()
                .ok_or_else(|| Error::kernel(action, "unexpected netlink reply", |_| None))?;
            mnl::cb_run(message, seq, portid).map_err(|e| explain(&e, action))?;
        }
    }
    Ok(())
}

/// Runs a dump request and passes every reply message to `each`.
fn dump(
    request: &[u8],
    seq: u32,
    action: &str,
    each: &mut dyn FnMut(&libc::nlmsghdr),
) -> Result<(), Error> {
    let socket = socket()?;
    let portid = socket.portid();
    socket.send(request).map_err(|e| explain(&e, action))?;
    let mut buffer = buffer();
    let mut callback_data: &mut dyn FnMut(&libc::nlmsghdr) = each;
    fn callback(
        header: &libc::nlmsghdr,
        each: &mut &mut dyn FnMut(&libc::nlmsghdr),
    ) -> libc::c_int {
        each(header);
        1 // MNL_CB_OK: go on with the next message
    }
    loop {
        let messages = socket
            .recv(&mut buffer[..])
            .map_err(|e| explain(&e, action))?;
        for message in messages {
            let message = message.map_err(|e| explain(&e, action))?;
            match mnl::cb_run2(message, seq, portid, callback, &mut callback_data) {
                Ok(mnl::CbResult::Stop) => return Ok(()),
                Ok(mnl::CbResult::Ok) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(explain(&e, action)),
            }
        }
    }
}

/// A dump request; `build` adds the payload that filters it (our table, our chain).
fn request(msg_type: u16, seq: u32, build: impl FnOnce(*mut libc::nlmsghdr)) -> Vec<u8> {
    let mut buf = buffer();
    // SAFETY: `buf` has room for the largest netlink message (nft_nlmsg_maxsize).
    let header = unsafe {
        sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr().cast::<c_char>(),
            msg_type,
            libc::NFPROTO_INET as u16,
            libc::NLM_F_DUMP as u16,
            seq,
        )
    };
    build(header);
    // SAFETY: `header` points into `buf` and was just filled in.
    let len = unsafe { (*header).nlmsg_len } as usize;
    buf.truncate(len);
    buf
}

/// Whether the `inet` table `table` exists.
pub(crate) fn table_exists(table_name: &CStr) -> Result<bool, Error> {
    let seq = 1;
    let request = request(libc::NFT_MSG_GETTABLE as u16, seq, |_| {});
    let mut found = false;
    dump(&request, seq, "read the nftables tables", &mut |header| {
        // SAFETY: the kernel's reply is a complete table message.
        unsafe {
            let table = sys::nftnl_table_alloc();
            if sys::nftnl_table_nlmsg_parse(header, table) >= 0 {
                let name = sys::nftnl_table_get_str(table, sys::NFTNL_TABLE_NAME as u16);
                found |= !name.is_null() && CStr::from_ptr(name) == table_name;
            }
            sys::nftnl_table_free(table);
        }
    })?;
    Ok(found)
}

/// A chain of ours as the kernel has it: type, hook, priority and policy, in `nft` words.
pub(crate) fn chain_description(table: &CStr, chain: &CStr) -> Result<Option<String>, Error> {
    let (table_name, chain_name) = (table, chain);
    let seq = 2;
    let request = request(libc::NFT_MSG_GETCHAIN as u16, seq, |header| {
        // SAFETY: a freshly allocated chain, filtered by table, written into the request.
        unsafe {
            let chain = sys::nftnl_chain_alloc();
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TABLE as u16, table_name.as_ptr());
            sys::nftnl_chain_nlmsg_build_payload(header, chain);
            sys::nftnl_chain_free(chain);
        }
    });
    let mut found = None;
    dump(&request, seq, "read the nftables chains", &mut |header| {
        // SAFETY: the kernel's reply is a complete chain message.
        unsafe {
            let chain = sys::nftnl_chain_alloc();
            if sys::nftnl_chain_nlmsg_parse(header, chain) >= 0 {
                let get_str = |attr| {
                    let s = sys::nftnl_chain_get_str(chain, attr as u16);
                    (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
                };
                let is_ours = get_str(sys::NFTNL_CHAIN_TABLE).as_deref()
                    == table_name.to_str().ok()
                    && get_str(sys::NFTNL_CHAIN_NAME).as_deref() == chain_name.to_str().ok();
                if is_ours {
                    found = Some(describe_chain(
                        get_str(sys::NFTNL_CHAIN_TYPE).unwrap_or_default(),
                        sys::nftnl_chain_get_u32(chain, sys::NFTNL_CHAIN_HOOKNUM as u16),
                        sys::nftnl_chain_get_s32(chain, sys::NFTNL_CHAIN_PRIO as u16),
                        sys::nftnl_chain_get_u32(chain, sys::NFTNL_CHAIN_POLICY as u16),
                    ));
                }
            }
            sys::nftnl_chain_free(chain);
        }
    })?;
    Ok(found)
}

/// A chain in `nft` words, e.g. `type nat hook output priority -100; policy accept`.
pub(crate) fn describe_chain(chain_type: String, hook: u32, priority: i32, policy: u32) -> String {
    let hook = match hook as i32 {
        libc::NF_INET_PRE_ROUTING => "prerouting".to_string(),
        libc::NF_INET_LOCAL_IN => "input".to_string(),
        libc::NF_INET_FORWARD => "forward".to_string(),
        libc::NF_INET_LOCAL_OUT => "output".to_string(),
        libc::NF_INET_POST_ROUTING => "postrouting".to_string(),
        other => format!("hook {other}"),
    };
    let policy = if policy as i32 == libc::NF_ACCEPT {
        "accept"
    } else {
        "drop"
    };
    format!("type {chain_type} hook {hook} priority {priority}; policy {policy}")
}

/// Every rule of a chain of ours, each as its expression lines (none when the table is
/// absent).
pub(crate) fn rules(table: &CStr, chain: &CStr) -> Result<Vec<Vec<String>>, Error> {
    let seq = 3;
    let request = request(libc::NFT_MSG_GETRULE as u16, seq, |header| {
        // SAFETY: a freshly allocated rule naming our table and chain, written into the request.
        unsafe {
            let rule = sys::nftnl_rule_alloc();
            sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(rule, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
            sys::nftnl_rule_nlmsg_build_payload(header, rule);
            sys::nftnl_rule_free(rule);
        }
    });
    let mut rules = Vec::new();
    dump(&request, seq, "read the nftables rules", &mut |header| {
        if let Some(lines) = parse_rule(header) {
            rules.push(lines);
        }
    })?;
    Ok(rules)
}

/// Renders a rule message as libnftnl does, keeping only the expression lines.
fn parse_rule(header: *const libc::nlmsghdr) -> Option<Vec<String>> {
    // SAFETY: `header` is a complete rule message; the rule is freed before returning.
    unsafe {
        let rule = sys::nftnl_rule_alloc();
        let mut text = vec![0u8; 8192];
        let parsed = sys::nftnl_rule_nlmsg_parse(header, rule) >= 0;
        let len = if parsed {
            sys::nftnl_rule_snprintf(
                text.as_mut_ptr().cast::<c_char>(),
                text.len(),
                rule,
                sys::NFTNL_OUTPUT_DEFAULT,
                0,
            )
        } else {
            -1
        };
        sys::nftnl_rule_free(rule);
        let len = usize::try_from(len).ok()?.min(text.len() - 1);
        let text = String::from_utf8_lossy(&text[..len]);
        Some(
            text.lines()
                .map(str::trim)
                .filter(|line| line.starts_with('['))
                .map(str::to_string)
                .collect(),
        )
    }
}

/// The expression lines of a rule built here, through the same netlink encoding the kernel
/// receives.
pub(crate) fn describe_rule(rule: &Rule<'_>) -> Vec<String> {
    let mut buf = buffer();
    // SAFETY: `buf` has room for the largest netlink message.
    unsafe { rule.write(buf.as_mut_ptr().cast::<c_void>(), 0, MsgType::Add) };
    parse_rule(buf.as_ptr().cast::<libc::nlmsghdr>()).unwrap_or_default()
}

/// A kernel error, with what to do about its errno.
fn explain(error: &io::Error, action: &str) -> Error {
    let copy = error.raw_os_error().map_or_else(
        || io::Error::other(error.to_string()),
        io::Error::from_raw_os_error,
    );
    Error::kernel(action, copy, |errno| match errno {
        libc::EPERM | libc::EACCES => {
            Some("CAP_NET_ADMIN is needed in this network namespace: run with sudo")
        }
        libc::EOPNOTSUPP => Some(
            "the kernel cannot do NAT on the output hook of an inet table (nf_tables NAT or \
             redirect support missing); try --backend ebpf",
        ),
        libc::ENOENT => Some(
            "the kernel lacks an nf_tables feature this needs (nft_nat / nft_redir / \
             nft_meta); try --backend ebpf",
        ),
        libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
            Some("this kernel has no nf_tables (CONFIG_NF_TABLES); try --backend ebpf")
        }
        libc::EBUSY => Some("another program changes nftables right now; try again"),
        _ => None,
    })
}
