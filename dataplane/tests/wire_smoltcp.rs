//! Cross-check against an independent implementation: segments holdfast emits are read by smoltcp's TCP
//! parser with the same fields (and a checksum it verifies), and segments smoltcp emits are read by
//! holdfast's parser with the same fields. Restricted to what smoltcp can represent: non-zero ports, at
//! most one of SYN/FIN/RST, at most three SACK blocks, no urgent pointer.

use dataplane::wire::{Ipv4Address, SackBlocks, TcpFlags, TcpOptions, TcpPacket, TcpRepr, Timestamps};
use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, TcpControl, TcpPacket as SmolPacket, TcpRepr as SmolRepr, TcpSeqNumber, TcpTimestampRepr,
};

#[derive(Clone, Debug)]
struct Case {
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    seq: u32,
    ack: Option<u32>,
    /// 0 none, 1 PSH, 2 SYN, 3 FIN, 4 RST.
    control: u8,
    window: u16,
    mss: Option<u16>,
    window_scale: Option<u8>,
    sack_permitted: bool,
    sack: Vec<(u32, u32)>,
    timestamps: Option<(u32, u32)>,
    payload: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<[u8; 4]>(), any::<[u8; 4]>(), 1u16.., 1u16..),
        (any::<u32>(), proptest::option::of(any::<u32>()), 0u8..5, any::<u16>()),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=14),
            any::<bool>(),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=3),
            proptest::option::of((any::<u32>(), any::<u32>())),
        ),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|((src, dst, p1, p2), (seq, ack, control, window), (mss, ws, sp, sack, ts), payload)| {
            Case {
                src,
                dst,
                ports: (p1, p2),
                seq,
                ack,
                control,
                window,
                mss,
                window_scale: ws,
                sack_permitted: sp,
                sack,
                timestamps: ts,
                payload,
            }
        })
        // smoltcp emits options unaligned and refuses nothing, so keep within a 60-byte header for it.
        .prop_filter("fits smoltcp's header", |c| {
            let mut len = 20 + c.mss.map_or(0, |_| 4) + c.window_scale.map_or(0, |_| 3);
            len += usize::from(c.sack_permitted) * 2 + c.timestamps.map_or(0, |_| 10);
            if !c.sack.is_empty() {
                len += 2 + 8 * c.sack.len();
            }
            len.div_ceil(4) * 4 <= 60
        })
}

impl Case {
    fn flags(&self) -> TcpFlags {
        let control = match self.control {
            1 => TcpFlags::PSH,
            2 => TcpFlags::SYN,
            3 => TcpFlags::FIN,
            4 => TcpFlags::RST,
            _ => TcpFlags::NONE,
        };
        if self.ack.is_some() {
            control | TcpFlags::ACK
        } else {
            control
        }
    }

    fn ours(&self) -> TcpRepr<'_> {
        let mut sack = SackBlocks::default();
        for &(l, r) in &self.sack {
            sack.push(l, r);
        }
        TcpRepr {
            src_port: self.ports.0,
            dst_port: self.ports.1,
            seq: self.seq,
            ack: self.ack.unwrap_or(0),
            flags: self.flags(),
            window: self.window,
            urgent: 0,
            options: TcpOptions {
                mss: self.mss,
                window_scale: self.window_scale,
                sack_permitted: self.sack_permitted,
                sack,
                timestamps: self.timestamps.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
            },
            payload: &self.payload,
        }
    }

    fn smol(&self) -> SmolRepr<'_> {
        let mut sack_ranges = [None; 3];
        for (slot, &block) in sack_ranges.iter_mut().zip(&self.sack) {
            *slot = Some(block);
        }
        SmolRepr {
            src_port: self.ports.0,
            dst_port: self.ports.1,
            control: match self.control {
                1 => TcpControl::Psh,
                2 => TcpControl::Syn,
                3 => TcpControl::Fin,
                4 => TcpControl::Rst,
                _ => TcpControl::None,
            },
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.window,
            window_scale: self.window_scale,
            max_seg_size: self.mss,
            sack_permitted: self.sack_permitted,
            sack_ranges,
            timestamp: self.timestamps.map(|(tsval, tsecr)| TcpTimestampRepr::new(tsval, tsecr)),
            payload: &self.payload,
        }
    }

    fn addrs(&self) -> (Ipv4Address, Ipv4Address, IpAddress, IpAddress) {
        let [a, b, c, d] = self.src;
        let [e, f, g, h] = self.dst;
        (Ipv4Address(self.src), Ipv4Address(self.dst), IpAddress::v4(a, b, c, d), IpAddress::v4(e, f, g, h))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn smoltcp_reads_what_holdfast_emits(mut c in case()) {
        // Holdfast drops the SACK blocks that do not fit its aligned layout; expect only those that do.
        let fit = c.ours().options.sack_blocks_that_fit();
        c.sack.truncate(fit);
        let (src, dst, smol_src, smol_dst) = c.addrs();
        let ours = c.ours();
        let mut buf = vec![0u8; ours.buffer_len()];
        ours.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), src, dst);
        let packet = SmolPacket::new_checked(&buf[..]).unwrap();
        let theirs = SmolRepr::parse(&packet, &smol_src, &smol_dst, &ChecksumCapabilities::default()).unwrap();
        prop_assert_eq!(theirs, c.smol());
        prop_assert_eq!(packet.psh(), ours.flags.contains(TcpFlags::PSH));
    }

    #[test]
    fn holdfast_reads_what_smoltcp_emits(c in case()) {
        let (src, dst, smol_src, smol_dst) = c.addrs();
        let smol = c.smol();
        // smoltcp sends SACK blocks only on an ACK and never next to SACK-permitted.
        let mut expected = c.clone();
        if c.ack.is_none() || c.sack_permitted {
            expected.sack.clear();
        }
        let mut buf = vec![0u8; smol.buffer_len()];
        smol.emit(&mut SmolPacket::new_unchecked(&mut buf[..]), &smol_src, &smol_dst, &ChecksumCapabilities::default());
        let packet = TcpPacket::new_checked(&buf[..]).unwrap();
        let parsed = TcpRepr::parse(&packet, src, dst, true).unwrap();
        prop_assert_eq!(parsed, expected.ours());
    }
}
