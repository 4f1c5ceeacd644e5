//! The Internet checksum (RFC 1071): one's-complement sums, the IPv4 pseudo-header, and incremental
//! updates after a field is rewritten (RFC 1624).
//!
//! Sums are kept as folded 16-bit values that have not yet been complemented; a header's checksum field
//! holds the complement of the sum of everything it covers. Since 2^16 ≡ 1 (mod 0xFFFF), wider words can be
//! summed and folded afterwards, which is what makes the fast path fast: the data is read in 8-byte words.

use super::ipv4::Ipv4Address;

/// Folds a wide one's-complement accumulator down to 16 bits (end-around carry).
pub const fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum as u16
}

/// One's-complement sum of `data` read as big-endian 16-bit words (a trailing odd byte is padded with
/// zero), folded to 16 bits but not complemented.
pub fn data(data: &[u8]) -> u16 {
    // The sum is byte-order independent (RFC 1071 §2(B)): summing the bytes in little-endian words gives
    // the byte-swapped sum, and a swap at the end puts it right. Little-endian 32-bit words widened into a
    // 64-bit accumulator need no carry handling (2^32 words cannot overflow it), so the loop vectorizes:
    // several times faster than a carry chain on a 1,460-byte payload, which every segment pays twice.
    fold(sum_le(data)).swap_bytes()
}

/// Unfolded accumulator over `data` read as little-endian words, the last partial word zero-padded.
fn sum_le(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let acc: u64 = (&mut words).map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))).sum();
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    // At most 3 bytes, at the start of a zeroed word: a lone last byte sits at an even offset, the low
    // byte of its little-endian pair, which is the high byte of the big-endian word RFC 1071 pads.
    if let Some(dst) = tail.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    acc + u64::from(u32::from_le_bytes(tail))
}

/// One's-complement sum of several partial sums.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo-header that TCP and UDP checksums cover (RFC 9293 §3.1).
pub fn pseudo_header_ipv4(src: Ipv4Address, dst: Ipv4Address, protocol: u8, length: u16) -> u16 {
    let wide = u64::from(src.to_u32()) + u64::from(dst.to_u32()) + u64::from(protocol) + u64::from(length);
    fold(wide)
}

/// The checksum field value for data whose one's-complement sum is `sum`.
pub const fn finish(sum: u16) -> u16 {
    !sum
}

/// New checksum after a 16-bit field covered by checksum `hc` changed from `old` to `new`
/// (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
///
/// Unlike eqn. 2 of RFC 1071, this never turns a correct checksum into the "negative zero" 0xFFFF when a
/// full recomputation would give 0x0000, so the result is bit-for-bit what recomputing would produce.
pub const fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(!hc as u64 + !old as u64 + new as u64)
}

/// As [`update16`], for a 32-bit field (sequence and acknowledgment numbers, IPv4 addresses).
pub const fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let old_hi = (old >> 16) as u16;
    let old_lo = old as u16;
    let new_hi = (new >> 16) as u16;
    let new_lo = new as u16;
    !fold(!hc as u64 + !old_hi as u64 + !old_lo as u64 + new_hi as u64 + new_lo as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example() {
        assert_eq!(data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6]),
            fold(0x0001 + 0xf203 + 0xf4f5 + 0xf600)
        );
    }

    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            acc += hi | lo;
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn wide_sum_matches_word_by_word_sum() {
        let mut bytes = [0u8; 97];
        let mut x: u32 = 0x1234_5678;
        for b in bytes.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 24) as u8;
        }
        for len in 0..bytes.len() {
            assert_eq!(data(&bytes[..len]), reference(&bytes[..len]), "len {len}");
        }
        assert_eq!(data(&[0xFF; 64]), 0xFFFF);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn update16_from_0xffff_to_0x0000_matches_recomputation() {
        // Words: a = 0xFFFF (the field), b = 0x0001. Sum = 0x0001 after end-around carry.
        let before = [0xFF, 0xFF, 0x00, 0x01];
        let after = [0x00, 0x00, 0x00, 0x01];
        let hc = finish(data(&before));
        assert_eq!(update16(hc, 0xFFFF, 0x0000), finish(data(&after)));
        assert_eq!(update16(finish(data(&after)), 0x0000, 0xFFFF), hc);
    }
}
