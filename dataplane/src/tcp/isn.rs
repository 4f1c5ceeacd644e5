//! Initial sequence numbers per RFC 6528: a keyed hash of the 4-tuple plus a 4 µs clock.
//!
//! The hash is SipHash-2-4, implemented here (~60 lines, checked against the reference vectors) because
//! std's `DefaultHasher` is not specified to stay the same across Rust releases: the function a box keys
//! with its secret should not change when the toolchain does, and no extra crate is needed for it.

use crate::time::Instant;
use std::net::SocketAddrV4;

/// SipHash-2-4 of `data` under `key` (the reference algorithm by Aumasson and Bernstein).
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]);
    let k1 = u64::from_le_bytes([key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15]]);
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;

    #[inline]
    fn round(v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64) {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13);
        *v1 ^= *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16);
        *v3 ^= *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21);
        *v3 ^= *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17);
        *v1 ^= *v2;
        *v2 = v2.rotate_left(32);
    }

    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let m = u64::from_le_bytes(b);
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v3 ^= m;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= m;
    v2 ^= 0xff;
    for _ in 0..4 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

fn tuple_bytes(local: SocketAddrV4, remote: SocketAddrV4) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&local.ip().octets());
    b[4..6].copy_from_slice(&local.port().to_be_bytes());
    b[6..10].copy_from_slice(&remote.ip().octets());
    b[10..12].copy_from_slice(&remote.port().to_be_bytes());
    b
}

/// RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs timer.
pub fn isn(secret: &[u8; 16], local: SocketAddrV4, remote: SocketAddrV4, now: Instant) -> u32 {
    let f = siphash24(secret, &tuple_bytes(local, remote)) as u32;
    let m = (now.as_micros() / 4) as u32;
    f.wrapping_add(m)
}

/// A per-connection timestamp offset (RFC 7323 §5.4 recommends randomising it per 4-tuple).
pub(crate) fn ts_offset(secret: &[u8; 16], local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
    (siphash24(secret, &tuple_bytes(local, remote)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_reference_vector() {
        // From the SipHash paper, appendix A: key 00..0f, message 00..0e.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&key, &[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn isn_depends_on_tuple_and_time() {
        let a = SocketAddrV4::new([198, 18, 0, 1].into(), 80);
        let b = SocketAddrV4::new([198, 18, 0, 2].into(), 40000);
        let c = SocketAddrV4::new([198, 18, 0, 2].into(), 40001);
        let s = [7u8; 16];
        let t = Instant::from_millis(5);
        assert_eq!(isn(&s, a, b, t), isn(&s, a, b, t));
        assert_ne!(isn(&s, a, b, t), isn(&s, a, c, t));
        assert_eq!(isn(&s, a, b, Instant::from_micros(5_004)), isn(&s, a, b, t).wrapping_add(1));
        assert_ne!(isn(&[8u8; 16], a, b, t), isn(&s, a, b, t));
    }
}
