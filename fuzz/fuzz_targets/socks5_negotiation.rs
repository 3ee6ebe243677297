//! A SOCKS5 client's bytes through the front end's negotiation (greeting, username/password,
//! request), read as the daemon reads them: at most what the current message lacks, in chunks
//! of an arbitrary size. No panic; the buffer stays bounded; nothing is read past the
//! request; a name that comes out has hostname syntax; credentials come out only when they
//! were asked for; and receiving the same bytes all at once (a client that pipelines) ends
//! the same way, with the same bytes sent.
#![no_main]

use bip324_protocol::socks5::{
    CONNECT, MAX_NEGOTIATION, Negotiation, RESOLVE, Step, Target, USER_PASS, WireError,
    is_hostname, parse_request, request,
};
use libfuzzer_sys::fuzz_target;

/// What was sent and how it ended (`Ok(Step::NeedMore)`: the input ran out first).
type Outcome = (Vec<u8>, Result<Step, WireError>);

fn step_until_final(negotiation: &mut Negotiation, sent: &mut Vec<u8>) -> Result<Step, WireError> {
    loop {
        match negotiation.step() {
            Ok(Step::Send(bytes)) => sent.extend_from_slice(&bytes),
            other => return other,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let prefer_credentials = selector & 1 == 1;
    let chunk = usize::from(selector >> 1).max(1);

    // As the daemon drives it.
    let mut negotiation = Negotiation::new(prefer_credentials);
    let mut sent = Vec::new();
    let mut taken = 0;
    let chunked: Outcome = loop {
        match step_until_final(&mut negotiation, &mut sent) {
            Ok(Step::NeedMore) => {
                let wanted = negotiation.wanted();
                assert!(wanted > 0, "more is needed, but nothing is wanted");
                let end = (taken + wanted.min(chunk)).min(input.len());
                if end == taken {
                    break (sent, Ok(Step::NeedMore));
                }
                negotiation
                    .receive(&input[taken..end])
                    .expect("reads bounded by `wanted` stay within MAX_NEGOTIATION");
                taken = end;
                assert!(taken <= MAX_NEGOTIATION);
            }
            Ok(Step::Request(req)) => {
                assert!(negotiation.into_rest().is_empty(), "read past the request");
                assert!(req.command == CONNECT || req.command == RESOLVE);
                if let Target::Domain(name, _) = &req.target {
                    assert!(is_hostname(name.as_bytes()), "{name:?}");
                }
                // Credentials come out exactly when username/password was chosen.
                let asked = sent.get(..2) == Some(&[5, USER_PASS][..]);
                assert_eq!(req.credentials.is_some(), asked);
                let again = request(req.command, &req.target);
                assert_eq!(
                    parse_request(&again),
                    Ok(Some(((req.command, req.target.clone()), again.len())))
                );
                break (sent, Ok(Step::Request(req)));
            }
            other => break (sent, other),
        }
    };

    // The same bytes at once: the same answers, the same end.
    let mut whole = Negotiation::new(prefer_credentials);
    whole
        .receive(&input[..taken])
        .expect("within MAX_NEGOTIATION");
    let mut sent = Vec::new();
    let end = step_until_final(&mut whole, &mut sent);
    assert_eq!((sent, end), chunked);
});
