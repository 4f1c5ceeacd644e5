//! Sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4).
//!
//! Sequence numbers stay plain `u32` at the API (that is what the wire and the proxy carry); these helpers
//! compare and subtract them with wrap-around, never panicking. Comparisons are meaningful for numbers less
//! than 2^31 apart, which every window in TCP is.

/// `a < b` in sequence space.
#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space.
#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// `a >= b` in sequence space.
#[inline]
pub fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}

/// The later of two sequence numbers.
#[inline]
pub fn max(a: u32, b: u32) -> u32 {
    if lt(a, b) {
        b
    } else {
        a
    }
}

/// The earlier of two sequence numbers.
#[inline]
pub fn min(a: u32, b: u32) -> u32 {
    if lt(a, b) {
        a
    } else {
        b
    }
}

/// Distance from `from` forward to `to`, or 0 when `to` is not after `from`.
#[inline]
pub fn dist(from: u32, to: u32) -> u32 {
    if lt(from, to) {
        to.wrapping_sub(from)
    } else {
        0
    }
}

/// `lo <= x < hi` in sequence space.
#[inline]
pub fn in_range(x: u32, lo: u32, hi: u32) -> bool {
    le(lo, x) && lt(x, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps() {
        assert!(lt(u32::MAX, 0));
        assert!(lt(u32::MAX - 5, 3));
        assert!(gt(3, u32::MAX - 5));
        assert_eq!(dist(u32::MAX - 1, 2), 4);
        assert_eq!(dist(2, u32::MAX - 1), 0);
        assert_eq!(max(u32::MAX, 1), 1);
        assert_eq!(min(u32::MAX, 1), u32::MAX);
        assert!(in_range(0, u32::MAX, 1));
    }

    proptest! {
        #[test]
        fn order_is_consistent(a in any::<u32>(), d in 1u32..0x7fff_ffff) {
            let b = a.wrapping_add(d);
            prop_assert!(lt(a, b));
            prop_assert!(le(a, b));
            prop_assert!(gt(b, a));
            prop_assert!(!lt(b, a));
            prop_assert!(le(a, a) && ge(a, a) && !lt(a, a));
            prop_assert_eq!(dist(a, b), d);
            prop_assert_eq!(dist(b, a), 0);
            prop_assert_eq!(max(a, b), b);
            prop_assert_eq!(min(a, b), a);
            prop_assert!(in_range(a, a, b));
            prop_assert!(!in_range(b, a, b));
        }

        #[test]
        fn never_panics(a in any::<u32>(), b in any::<u32>(), c in any::<u32>()) {
            let _ = (lt(a, b), le(a, b), gt(a, b), ge(a, b), max(a, b), min(a, b), dist(a, b), in_range(a, b, c));
            // Antisymmetry holds except at exactly 2^31 apart, where both directions are "less".
            if a.wrapping_sub(b) != 0x8000_0000 {
                prop_assert_eq!(lt(a, b), gt(b, a));
                prop_assert!(!(lt(a, b) && lt(b, a)));
            }
        }
    }
}
