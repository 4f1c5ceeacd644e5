//! Errors of the wire layer: every way a received frame can be unusable, and every way building one can fail.
//!
//! Both are small `Copy` enums so the receive path can count them without allocating; `as_str()` gives each
//! a stable name that statistics and Prometheus counters use as a label (never rename one).

use core::fmt;

/// Why a received frame (or one of its headers) was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than an Ethernet header (or its 802.1Q tag).
    EthernetTruncated,
    /// An EtherType (after at most one VLAN tag) that holdfast does not handle.
    UnsupportedEthertype,
    /// Shorter than an ARP packet for Ethernet/IPv4.
    ArpTruncated,
    /// ARP for a hardware or protocol type other than Ethernet/IPv4, or with other address lengths.
    ArpUnsupported,
    /// ARP operation other than request or reply.
    ArpBadOperation,
    /// Shorter than an IPv4 header, or than the header or total length it announces.
    Ipv4Truncated,
    /// IP version field is not 4.
    Ipv4BadVersion,
    /// IHL below 5 (a header shorter than 20 bytes).
    Ipv4BadIhl,
    /// Total length smaller than the header length.
    Ipv4BadTotalLength,
    /// The IPv4 header checksum does not verify.
    Ipv4BadChecksum,
    /// A fragment (MF set or a non-zero offset): holdfast does not reassemble.
    Ipv4Fragment,
    /// An IP protocol other than TCP and ICMP.
    UnsupportedProtocol,
    /// Shorter than a TCP header, or than the data offset announces.
    TcpTruncated,
    /// Data offset below 5 (a header shorter than 20 bytes).
    TcpBadDataOffset,
    /// The TCP checksum (with the IPv4 pseudo-header) does not verify.
    TcpBadChecksum,
    /// An option whose length is 0 or 1, missing, or runs past the end of the header.
    TcpBadOption,
    /// Shorter than an ICMP echo header.
    IcmpTruncated,
    /// The ICMP checksum does not verify.
    IcmpBadChecksum,
    /// An ICMP message other than echo request and echo reply.
    IcmpUnsupported,
}

impl FrameError {
    /// Every variant, in declaration order (for counter tables indexed by error).
    pub const ALL: [FrameError; 19] = [
        FrameError::EthernetTruncated,
        FrameError::UnsupportedEthertype,
        FrameError::ArpTruncated,
        FrameError::ArpUnsupported,
        FrameError::ArpBadOperation,
        FrameError::Ipv4Truncated,
        FrameError::Ipv4BadVersion,
        FrameError::Ipv4BadIhl,
        FrameError::Ipv4BadTotalLength,
        FrameError::Ipv4BadChecksum,
        FrameError::Ipv4Fragment,
        FrameError::UnsupportedProtocol,
        FrameError::TcpTruncated,
        FrameError::TcpBadDataOffset,
        FrameError::TcpBadChecksum,
        FrameError::TcpBadOption,
        FrameError::IcmpTruncated,
        FrameError::IcmpBadChecksum,
        FrameError::IcmpUnsupported,
    ];

    /// A stable snake_case name, used as a counter label.
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameError::EthernetTruncated => "eth_truncated",
            FrameError::UnsupportedEthertype => "eth_unsupported_ethertype",
            FrameError::ArpTruncated => "arp_truncated",
            FrameError::ArpUnsupported => "arp_unsupported",
            FrameError::ArpBadOperation => "arp_bad_operation",
            FrameError::Ipv4Truncated => "ipv4_truncated",
            FrameError::Ipv4BadVersion => "ipv4_bad_version",
            FrameError::Ipv4BadIhl => "ipv4_bad_ihl",
            FrameError::Ipv4BadTotalLength => "ipv4_bad_total_length",
            FrameError::Ipv4BadChecksum => "ipv4_bad_checksum",
            FrameError::Ipv4Fragment => "ipv4_fragment",
            FrameError::UnsupportedProtocol => "ipv4_unsupported_protocol",
            FrameError::TcpTruncated => "tcp_truncated",
            FrameError::TcpBadDataOffset => "tcp_bad_data_offset",
            FrameError::TcpBadChecksum => "tcp_bad_checksum",
            FrameError::TcpBadOption => "tcp_bad_option",
            FrameError::IcmpTruncated => "icmp_truncated",
            FrameError::IcmpBadChecksum => "icmp_bad_checksum",
            FrameError::IcmpUnsupported => "icmp_unsupported",
        }
    }

    /// Position in [`FrameError::ALL`], for indexing a counter array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

// A variant added without its place in `ALL` (which counter tables are sized by) fails the build here.
const _: () = assert!(FrameError::IcmpUnsupported as usize + 1 == FrameError::ALL.len());

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FrameError {}

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildError {
    /// The output buffer is smaller than the frame.
    BufferTooSmall,
    /// The IP packet would exceed 65535 bytes.
    PayloadTooLarge,
}

impl BuildError {
    /// A stable snake_case name, used as a counter label.
    pub const fn as_str(self) -> &'static str {
        match self {
            BuildError::BufferTooSmall => "build_buffer_too_small",
            BuildError::PayloadTooLarge => "build_payload_too_large",
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BuildError {}
