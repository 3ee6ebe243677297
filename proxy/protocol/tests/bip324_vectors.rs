//! Runs every row of BIP-324's test vector files (copied into `tests/vectors/`) and prints how
//! many rows ran and how many checks each row passed.

use bip324_protocol::cipher::{LENGTH_LEN, PACKET_OVERHEAD, packet_len};
use bip324_protocol::ellswift::xswiftec_inv;
use bip324_protocol::keys::{EphemeralKey, SessionKeys};
use bip324_protocol::{Network, Role};
use secp256k1::ellswift::{ElligatorSwift, ElligatorSwiftSharedSecret, Party};
use secp256k1::{PublicKey, SecretKey};

/// Rows of a vector file as (column -> value) maps, checked against the header's width.
fn read_csv(name: &str) -> Vec<std::collections::HashMap<String, String>> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header line").split(',').collect();
    let rows: Vec<_> = lines
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{name} row {i}: field count");
            header
                .iter()
                .zip(fields)
                .map(|(h, f)| (h.to_string(), f.to_string()))
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "{name} has no rows");
    rows
}

fn bytes<const N: usize>(hex_str: &str) -> [u8; N] {
    let v = hex::decode(hex_str).expect("hex");
    v.try_into()
        .unwrap_or_else(|v: Vec<u8>| panic!("expected {N} bytes, got {}", v.len()))
}

fn x_of(pubkey: PublicKey) -> [u8; 32] {
    pubkey.x_only_public_key().0.to_byte_array()
}

fn decode_x(encoding: [u8; 64]) -> [u8; 32] {
    x_of(PublicKey::from_ellswift(ElligatorSwift::from_array(
        encoding,
    )))
}

#[test]
fn packet_encoding_vectors() {
    let rows = read_csv("packet_encoding_test_vectors.csv");
    let mut checks = 0;
    for (i, row) in rows.iter().enumerate() {
        let ctx = |what: &str| format!("packet vector row {i} (in_idx {}): {what}", row["in_idx"]);
        let initiating = row["in_initiating"] == "1";
        let role = if initiating {
            Role::Initiator
        } else {
            Role::Responder
        };
        let secret: [u8; 32] = bytes(&row["in_priv_ours"]);
        let ours: [u8; 64] = bytes(&row["in_ellswift_ours"]);
        let theirs: [u8; 64] = bytes(&row["in_ellswift_theirs"]);

        // ElligatorSwift decoding and the x-only ECDH point, through secp256k1's API.
        let sk = SecretKey::from_secret_bytes(secret).unwrap();
        assert_eq!(
            x_of(PublicKey::from_secret_key(&sk)),
            bytes(&row["mid_x_ours"]),
            "{}",
            ctx("x_ours")
        );
        assert_eq!(
            decode_x(ours),
            bytes(&row["mid_x_ours"]),
            "{}",
            ctx("decode ours")
        );
        assert_eq!(
            decode_x(theirs),
            bytes(&row["mid_x_theirs"]),
            "{}",
            ctx("decode theirs")
        );
        let (a, b) = if initiating {
            (ours, theirs)
        } else {
            (theirs, ours)
        };
        let party = if initiating {
            Party::Initiator
        } else {
            Party::Responder
        };
        let mut x_shared = [0u8; 32];
        ElligatorSwift::shared_secret_with_hasher(
            ElligatorSwift::from_array(a),
            ElligatorSwift::from_array(b),
            sk,
            party,
            |x, _, _| {
                x_shared = x;
                ElligatorSwiftSharedSecret::from_secret_bytes(x)
            },
        );
        assert_eq!(x_shared, bytes(&row["mid_x_shared"]), "{}", ctx("x_shared"));
        checks += 4;

        // Our key schedule.
        let key = EphemeralKey::with_encoding(secret, ours).unwrap();
        let shared = key.shared_secret(&theirs, role);
        assert_eq!(
            *shared,
            bytes(&row["mid_shared_secret"]),
            "{}",
            ctx("shared secret")
        );
        let keys = SessionKeys::derive(&shared, Network::Mainnet.magic());
        assert_eq!(
            keys.initiator_l,
            bytes(&row["mid_initiator_l"]),
            "{}",
            ctx("initiator_L")
        );
        assert_eq!(
            keys.initiator_p,
            bytes(&row["mid_initiator_p"]),
            "{}",
            ctx("initiator_P")
        );
        assert_eq!(
            keys.responder_l,
            bytes(&row["mid_responder_l"]),
            "{}",
            ctx("responder_L")
        );
        assert_eq!(
            keys.responder_p,
            bytes(&row["mid_responder_p"]),
            "{}",
            ctx("responder_P")
        );
        assert_eq!(
            keys.send_terminator(role),
            bytes(&row["mid_send_garbage_terminator"]),
            "{}",
            ctx("send terminator")
        );
        assert_eq!(
            keys.recv_terminator(role),
            bytes(&row["mid_recv_garbage_terminator"]),
            "{}",
            ctx("recv terminator")
        );
        assert_eq!(
            keys.session_id,
            bytes(&row["out_session_id"]),
            "{}",
            ctx("session id")
        );
        checks += 8;

        // Packet number in_idx, after in_idx earlier packets (which exercises rekeying).
        let mut sealer = keys.sealer(role);
        let mut opener = keys.opener(role.peer());
        let mut filler = [0u8; PACKET_OVERHEAD];
        for _ in 0..row["in_idx"].parse::<usize>().unwrap() {
            sealer.seal(&mut filler, &[], false);
            let len = opener.open_length(filler[..LENGTH_LEN].try_into().unwrap());
            assert_eq!(len, 0);
            opener.open(&[], &mut filler[LENGTH_LEN..]).unwrap();
        }
        let contents = hex::decode(&row["in_contents"])
            .unwrap()
            .repeat(row["in_multiply"].parse().unwrap());
        let aad = hex::decode(&row["in_aad"]).unwrap();
        let ignore = row["in_ignore"] == "1";
        let mut packet = vec![0u8; packet_len(contents.len())];
        packet[LENGTH_LEN + 1..][..contents.len()].copy_from_slice(&contents);
        sealer.seal(&mut packet, &aad, ignore);
        if row["out_ciphertext"].is_empty() {
            let suffix = hex::decode(&row["out_ciphertext_endswith"]).unwrap();
            assert!(packet.ends_with(&suffix), "{}", ctx("ciphertext suffix"));
        } else {
            assert_eq!(
                hex::encode(&packet),
                row["out_ciphertext"],
                "{}",
                ctx("ciphertext")
            );
        }
        // And the receiving side recovers it.
        let len = opener.open_length(packet[..LENGTH_LEN].try_into().unwrap());
        assert_eq!(len, contents.len(), "{}", ctx("decrypted length"));
        let decoy = opener.open(&aad, &mut packet[LENGTH_LEN..]).unwrap();
        assert_eq!(decoy, ignore, "{}", ctx("ignore bit"));
        assert!(
            packet[LENGTH_LEN + 1..][..len] == contents[..],
            "{}",
            ctx("decrypted contents")
        );
        checks += 4;
    }
    println!(
        "packet_encoding_test_vectors.csv: {} of {} rows ran, {checks} checks passed",
        rows.len(),
        rows.len()
    );
}

#[test]
fn ellswift_decode_vectors() {
    let rows = read_csv("ellswift_decode_test_vectors.csv");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            decode_x(bytes(&row["ellswift"])),
            bytes::<32>(&row["x"]),
            "ellswift decode row {i} ({})",
            row["comment"]
        );
    }
    println!(
        "ellswift_decode_test_vectors.csv: {} of {} rows ran (decoded with secp256k1's public ElligatorSwift API)",
        rows.len(),
        rows.len()
    );
}

/// Both directions of every row: `xswiftec_inv(u, x, case)` gives exactly the listed `t` for
/// each of the 8 cases, and none where the file lists none; and each listed `u || t` decodes
/// to `x` with libsecp256k1.
#[test]
fn xswiftec_inv_vectors() {
    let rows = read_csv("xswiftec_inv_test_vectors.csv");
    let (mut solved, mut unsolvable) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let u: [u8; 32] = bytes(&row["u"]);
        let x: [u8; 32] = bytes(&row["x"]);
        for case in 0..8u8 {
            let listed = &row[&format!("case{case}_t")];
            let ctx = format!("xswiftec_inv row {i} case {case} ({})", row["comment"]);
            let inverse = xswiftec_inv(&u, &x, case);
            if listed.is_empty() {
                assert_eq!(inverse, None, "{ctx}: no solution listed");
                unsolvable += 1;
                continue;
            }
            let t: [u8; 32] = bytes(listed);
            assert_eq!(inverse, Some(t), "{ctx}: inverse");
            let mut encoding = [0u8; 64];
            encoding[..32].copy_from_slice(&u);
            encoding[32..].copy_from_slice(&t);
            assert_eq!(decode_x(encoding), x, "{ctx}: u||t must decode to x");
            solved += 1;
        }
    }
    // What the file lists: a row or case skipped, or a listed t ignored, changes these.
    assert_eq!(
        (rows.len(), solved, unsolvable),
        (32, 98, 158),
        "rows, solved cases, unsolvable cases"
    );
    println!(
        "xswiftec_inv_test_vectors.csv: {} of {} rows ran, all 8 cases each: {solved} inverses \
         matched the listed t and decoded back to x, {unsolvable} cases without a solution found none",
        rows.len(),
        rows.len()
    );
}
