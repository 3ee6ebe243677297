//! Elements of secp256k1's base field, on `k256`'s field arithmetic.
//!
//! `k256::FieldElement` normalizes lazily: a sum's "magnitude" grows, and negating one needs
//! its bound. [`Fe`] normalizes after every operation instead, so the formulas of the
//! inverse map read as the BIP writes them and no magnitude can be miscounted. The
//! arithmetic is constant time (`k256`'s `sqrt` and `invert` included); `from_bytes_mod_p`
//! branches on its input being at least p, and is given only public `u` values and
//! constants.

use core::ops::{Add, Mul, Neg, Sub};

use k256::elliptic_curve::bigint::Encoding;
use k256::elliptic_curve::subtle::ConstantTimeEq;
use k256::{FieldBytes, FieldElement, U256};

/// p = 2^256 - 2^32 - 977.
const MODULUS: U256 =
    U256::from_be_hex("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f");

/// A field element, always fully normalized.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fe(FieldElement);

impl Fe {
    pub(crate) const ZERO: Fe = Fe(FieldElement::ZERO);
    pub(crate) const ONE: Fe = Fe(FieldElement::ONE);

    /// A small constant.
    pub(crate) const fn from_u64(n: u64) -> Fe {
        Fe(FieldElement::from_u64(n))
    }

    /// The element `bytes` encode in big endian, or `None` when they are not below p.
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Option<Fe> {
        Option::from(FieldElement::from_bytes(&FieldBytes::from(*bytes))).map(Fe)
    }

    /// `bytes` in big endian, reduced mod p, as ElligatorSwift decoding reads `u` and `t`.
    pub(crate) fn from_bytes_mod_p(bytes: &[u8; 32]) -> Fe {
        let mut value = U256::from_be_slice(bytes);
        // Below 2^256 < 2p: one subtraction reduces it.
        if value >= MODULUS {
            value = value.wrapping_sub(&MODULUS);
        }
        Fe::from_bytes(&value.to_be_bytes()).unwrap_or(Fe::ZERO)
    }

    /// The canonical 32-byte big-endian encoding.
    pub(crate) fn to_bytes(self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    pub(crate) fn is_zero(self) -> bool {
        self.0.is_zero().into()
    }

    pub(crate) fn square(self) -> Fe {
        Fe(self.0.square().normalize())
    }

    /// A square root, if `self` is a square: `self^((p+1)/4)`, the root BIP-324's reference
    /// and libsecp256k1 take (which root matters: it decides which `t` each case yields).
    pub(crate) fn sqrt(self) -> Option<Fe> {
        Option::from(self.0.sqrt()).map(|r: FieldElement| Fe(r.normalize()))
    }

    /// Whether `self` is a square (zero included).
    pub(crate) fn is_square(self) -> bool {
        self.sqrt().is_some()
    }

    /// `1 / self`, or `None` for zero.
    pub(crate) fn invert(self) -> Option<Fe> {
        Option::from(self.0.invert()).map(|r: FieldElement| Fe(r.normalize()))
    }

    /// Whether `x` is the X coordinate of a point of secp256k1: x^3 + 7 is a square.
    pub(crate) fn is_valid_x(self) -> bool {
        (self.square() * self + Fe::from_u64(7)).is_square()
    }
}

impl PartialEq for Fe {
    fn eq(&self, other: &Fe) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Add for Fe {
    type Output = Fe;
    fn add(self, rhs: Fe) -> Fe {
        Fe((self.0 + rhs.0).normalize())
    }
}

impl Sub for Fe {
    type Output = Fe;
    fn sub(self, rhs: Fe) -> Fe {
        // k256 subtracts by adding `rhs.negate(1)`: exact, as `rhs` is normalized.
        Fe((self.0 - rhs.0).normalize())
    }
}

impl Mul for Fe {
    type Output = Fe;
    fn mul(self, rhs: Fe) -> Fe {
        Fe(self.0.mul(&rhs.0).normalize())
    }
}

impl Neg for Fe {
    type Output = Fe;
    fn neg(self) -> Fe {
        Fe(self.0.negate(1).normalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_and_arithmetic_agree_with_the_modulus() {
        let p = MODULUS.to_be_bytes();
        assert!(Fe::from_bytes(&p).is_none(), "p itself is not below p");
        assert!(Fe::from_bytes_mod_p(&p).is_zero());
        assert_eq!(
            Fe::from_bytes_mod_p(&[0xff; 32]),
            Fe::from_u64(0x1_0000_03d0)
        );
        let minus_one = -Fe::ONE;
        assert_eq!(minus_one + Fe::ONE, Fe::ZERO);
        assert_eq!(Fe::ZERO - Fe::ONE, minus_one);
        assert_eq!(minus_one * minus_one, Fe::ONE);
        assert_eq!(
            Fe::from_u64(9).sqrt().map(Fe::square),
            Some(Fe::from_u64(9))
        );
        assert_eq!(
            Fe::from_u64(3).invert().map(|i| i * Fe::from_u64(3)),
            Some(Fe::ONE)
        );
        assert!(Fe::ZERO.invert().is_none());
        // -1 is not a square mod p (p = 3 mod 4).
        assert!(!minus_one.is_square());
    }
}
