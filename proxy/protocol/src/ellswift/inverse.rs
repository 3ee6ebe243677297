//! `XSwiftECInv(u, x, case)`: BIP-324's inverse of the ElligatorSwift map. Given `u` and an
//! X coordinate `x`, it finds a `t` such that `(u, t)` decodes to `x`, or none; each of the
//! 8 cases finds at most one, and together they find every `t` (but `t = 0` and those that
//! decoding would remap).
//!
//! Constant-time field operations, but the control flow depends on the inputs: that is safe
//! because everything it sees is public or thrown away. `x` is the public key's X coordinate,
//! which anyone recovers from the 64 bytes on the wire; `u` goes on the wire when the attempt
//! succeeds, and a failed attempt's `u` and case are discarded. The secret key never enters
//! here: libsecp256k1 derives the public key from it.

use super::field::Fe;

/// `(1 - sqrt(-3)) / 2`, with `sqrt(-3) = (-3)^((p+1)/4)` as the BIP's reference takes it.
const C_MINUS: [u8; 32] = [
    0x7a, 0xe9, 0x6a, 0x2b, 0x65, 0x7c, 0x07, 0x10, 0x6e, 0x64, 0x47, 0x9e, 0xac, 0x34, 0x34, 0xe9,
    0x9c, 0xf0, 0x49, 0x75, 0x12, 0xf5, 0x89, 0x95, 0xc1, 0x39, 0x6c, 0x28, 0x71, 0x95, 0x01, 0xef,
];
/// `(1 + sqrt(-3)) / 2`.
const C_PLUS: [u8; 32] = [
    0x85, 0x16, 0x95, 0xd4, 0x9a, 0x83, 0xf8, 0xef, 0x91, 0x9b, 0xb8, 0x61, 0x53, 0xcb, 0xcb, 0x16,
    0x63, 0x0f, 0xb6, 0x8a, 0xed, 0x0a, 0x76, 0x6a, 0x3e, 0xc6, 0x93, 0xd6, 0x8e, 0x6a, 0xfa, 0x41,
];
/// `1 / 2`.
const HALF: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xfe, 0x18,
];

/// The curve's constant: y^2 = x^3 + 7.
const B: Fe = Fe::from_u64(7);

/// `XSwiftECInv(u, x, case)` on 32-byte big-endian values: `t` such that `u || t` decodes
/// to `x`, or `None` when this case has no solution (or `x` is not on the curve). `u` is read
/// mod p, as decoding reads it; `case` is taken mod 8.
#[cfg(any(test, feature = "test-util"))]
#[must_use]
pub fn xswiftec_inv(u: &[u8; 32], x: &[u8; 32], case: u8) -> Option<[u8; 32]> {
    let x = Fe::from_bytes(x).filter(|x| x.is_valid_x())?;
    inverse(Fe::from_bytes_mod_p(u), x, case).map(Fe::to_bytes)
}

/// The inverse on field elements; `x` must be on the curve.
pub(crate) fn inverse(u: Fe, x: Fe, case: u8) -> Option<Fe> {
    // Decoding turns u = 0 into 1; an inverse for u = 0 would decode as another u. (Every t
    // the cases find for u = 0 has t^2 = -7, which the last check rejects too.)
    if u.is_zero() {
        return None;
    }
    let u3_plus_b = u.square() * u + B;
    let (s, v) = if case & 2 == 0 {
        // Cases 0, 1, 4, 5 solve the map's second and third candidates. Decoding tries its
        // first candidate, -x-u here, before them: when that is on the curve, it would win.
        if (-(x + u)).is_valid_x() {
            return None;
        }
        // Not zero once -x-u is off the curve (libsecp256k1 proves it); `?` all the same.
        let denominator = u.square() + u * x + x.square();
        let s = -u3_plus_b * denominator.invert()?;
        (s, x)
    } else {
        // Cases 2, 3, 6, 7 solve the first candidate.
        let s = x - u;
        if s.is_zero() {
            return None;
        }
        let r = (-s * (Fe::from_u64(4) * u3_plus_b + Fe::from_u64(3) * s * u.square())).sqrt()?;
        // With r = 0, cases 3 and 7 would repeat cases 2 and 6.
        if case & 1 == 1 && r.is_zero() {
            return None;
        }
        let v = (r * s.invert()? - u) * Fe::from_bytes_mod_p(&HALF);
        (s, v)
    };
    let w = s.sqrt()?;
    let (c, negate) = match case & 5 {
        0 => (C_MINUS, true),
        1 => (C_PLUS, false),
        4 => (C_MINUS, false),
        _ => (C_PLUS, true),
    };
    let t = w * (Fe::from_bytes_mod_p(&c) * u + v);
    let t = if negate { -t } else { t };
    // Decoding reads t = 0 as 1, and doubles a t with u^3 + t^2 + 7 = 0: such a t would not
    // decode to x.
    if t.is_zero() || (u3_plus_b + t.square()).is_zero() {
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::PublicKey;
    use secp256k1::ellswift::ElligatorSwift;

    const G_X: [u8; 32] = [
        0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b,
        0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8,
        0x17, 0x98,
    ];

    #[test]
    fn constants_are_what_their_names_say() {
        let (minus, plus) = (Fe::from_bytes(&C_MINUS), Fe::from_bytes(&C_PLUS));
        let (Some(minus), Some(plus)) = (minus, plus) else {
            panic!("constants below p")
        };
        assert_eq!(plus + minus, Fe::ONE);
        assert_eq!((-Fe::from_u64(3)).sqrt(), Some(plus - minus));
        assert_eq!(Fe::from_bytes_mod_p(&HALF) * Fe::from_u64(2), Fe::ONE);
    }

    /// Every case's answer, where there is one, decodes (with libsecp256k1) to x, and the
    /// cases' answers differ.
    #[test]
    fn every_answer_decodes_to_x() {
        let mut found = 0;
        for i in 0u8..64 {
            let secret = secp256k1::SecretKey::from_secret_bytes([i + 1; 32]).expect("valid");
            let x = PublicKey::from_secret_key(&secret)
                .x_only_public_key()
                .0
                .to_byte_array();
            let u = [i.wrapping_mul(37) ^ 0x5a; 32];
            let mut answers = Vec::new();
            for case in 0..8 {
                let Some(t) = xswiftec_inv(&u, &x, case) else {
                    continue;
                };
                let mut encoding = [0u8; 64];
                encoding[..32].copy_from_slice(&u);
                encoding[32..].copy_from_slice(&t);
                let decoded = PublicKey::from_ellswift(ElligatorSwift::from_array(encoding));
                assert_eq!(
                    decoded.x_only_public_key().0.to_byte_array(),
                    x,
                    "case {case}"
                );
                assert!(!answers.contains(&t), "case {case} repeats another");
                answers.push(t);
            }
            found += answers.len();
        }
        // About two answers per (u, x) on average.
        assert!(found > 64, "{found} answers for 64 pairs");
    }

    #[test]
    fn no_answer_for_u_zero_or_x_off_the_curve() {
        // The generator's x, on the curve, which both kinds of case solve for u = 0 (each t
        // with t^2 = -7) but for the checks: this fails only with the u = 0 guard and the
        // `u^3 + t^2 + 7 = 0` check both gone. An x off the curve would test neither.
        assert!(Fe::from_bytes_mod_p(&G_X).is_valid_x());
        assert!((0..8).all(|case| xswiftec_inv(&[0; 32], &G_X, case).is_none()));
        // x = 5: 5^3 + 7 = 132 is not a square mod p.
        let mut off = [0u8; 32];
        off[31] = 5;
        assert!(!Fe::from_u64(5).is_valid_x());
        assert!((0..8).all(|case| xswiftec_inv(&[1; 32], &off, case).is_none()));
    }
}
