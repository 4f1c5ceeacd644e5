//! Shared by the NIC backend tests (nic_dpdk.rs, nic_afxdp.rs): a veth pair between two network namespaces
//! that is removed even when a test fails, entering a namespace from the current thread, a kernel
//! AF_PACKET socket as the independent peer, and the numbered test frames both ends check.
//!
//! Each test binary uses its own namespace names (prefix `hfn`) and addresses in 198.18.210.0/24 and
//! 198.18.211.0/24, so the two can run at the same time.

// Entering a namespace (setns) and the raw AF_PACKET peer socket are libc calls; each block says why it
// is sound.
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

/// Ethertype of the test frames (IEEE 802 local experimental), so nothing else is mistaken for one.
pub const ETHERTYPE: u16 = 0x88b5;

/// Why this machine cannot run a root-only NIC test, or None when it can.
pub fn skip_reason() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned));
    if uid.as_deref() != Some("0") {
        return Some("needs root (network namespaces, veths)".into());
    }
    for tool in ["ip", "ethtool"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("`{tool}` not installed (scripts/install-nic-deps.sh)"));
        }
    }
    None
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Two namespaces joined by a veth pair; both are deleted (and the veths with them) on drop.
#[derive(Debug)]
pub struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
    pub dev_a: String,
    pub dev_b: String,
}

impl VethPair {
    /// Creates namespaces `ns_a`/`ns_b` with veths `dev_a`/`dev_b` (`net`.1 and `net`.2/24), IPv6 off and
    /// offloads off (so frames stay MTU-sized). Leftovers of a crashed earlier run are removed first.
    pub fn new(ns_a: &str, ns_b: &str, dev_a: &str, dev_b: &str, net: &str) -> Result<VethPair, String> {
        for ns in [ns_a, ns_b] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let pair =
            VethPair { ns_a: ns_a.into(), ns_b: ns_b.into(), dev_a: dev_a.into(), dev_b: dev_b.into() };
        run(&["ip", "netns", "add", ns_a])?;
        run(&["ip", "netns", "add", ns_b])?;
        run(&["ip", "-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b])?;
        for (ns, dev, host) in [(ns_a, dev_a, 1), (ns_b, dev_b, 2)] {
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
            run(&["ip", "-n", ns, "addr", "add", &format!("{net}.{host}/24"), "dev", dev])?;
            run(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off",
                "tx", "off", "rx", "off",
            ])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(ns: &str, dev: &str) -> Result<[u8; 6], String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", &format!("/sys/class/net/{dev}/address")])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut mac = [0u8; 6];
        let mut parts = text.trim().split(':');
        for b in &mut mac {
            let p = parts.next().ok_or("short MAC")?;
            *b = u8::from_str_radix(p, 16).map_err(|e| e.to_string())?;
        }
        Ok(mac)
    }

    /// `ip -d link show` of `dev` in `ns` (tests look for an attached XDP program in it).
    pub fn link_details(ns: &str, dev: &str) -> String {
        Command::new("ip")
            .args(["-n", ns, "-d", "link", "show", dev])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Moves the calling thread into network namespace `ns` (sockets it opens from now on live there).
pub fn enter_netns(ns: &str) -> Result<(), String> {
    let f = File::open(format!("/var/run/netns/{ns}")).map_err(|e| format!("open netns {ns}: {e}"))?;
    // SAFETY: f is an open namespace file descriptor for the duration of the call; setns changes only this
    // thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A kernel AF_PACKET socket bound to one interface: the peer the backends are checked against.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens it on `dev` in the calling thread's namespace, with a large receive buffer so that a burst
    /// the test has not read yet is not dropped.
    pub fn open(dev: &str) -> Result<RawSocket, String> {
        let name = CString::new(dev).map_err(|e| e.to_string())?;
        // SAFETY: name is NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(format!("no interface {dev}"));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = RawSocket { fd, ifindex };
        let size: libc::c_int = 64 << 20;
        // SAFETY: valid socket, option value points to a c_int of the given size.
        unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!("bind: {}", std::io::Error::last_os_error()));
        }
        Ok(sock)
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> Result<(), String> {
        // SAFETY: sll is plain data (all-zero is valid); the frame pointer and length come from a slice.
        let rc = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 || rc as usize != frame.len() {
            return Err(format!("sendto: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receives one frame into `buf`, waiting at most `timeout`; None on timeout. Frames this socket sent
    /// itself are skipped.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Option<usize> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: pfd is one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
            if n <= 0 {
                return None;
            }
            // SAFETY: sll is plain data; recvfrom writes at most buf.len() bytes and sizeof(sll).
            let (rc, pkttype) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                let rc = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                );
                (rc, sll.sll_pkttype)
            };
            if rc < 0 {
                return None;
            }
            if pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Some(rc as usize);
        }
    }
}

/// Length of test frame number `seq`: 60 to 1514 bytes, varied.
pub fn frame_len(seq: u32) -> usize {
    60 + (seq as usize * 397) % 1455
}

/// Builds test frame `seq` from `src` to `dst` into `buf`, returning its length.
pub fn build_frame(buf: &mut [u8], seq: u32, src: [u8; 6], dst: [u8; 6]) -> usize {
    let len = frame_len(seq);
    buf[..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    buf[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in buf[18..len].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    len
}

/// The sequence number of a test frame from `src`, if `frame` is one.
pub fn frame_seq(frame: &[u8], src: [u8; 6]) -> Option<u32> {
    if frame.len() < 18 || frame[6..12] != src || frame[12..14] != ETHERTYPE.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes([frame[14], frame[15], frame[16], frame[17]]))
}

/// Checks that `frame` is exactly test frame `seq` from `src` to `dst`.
pub fn check_frame(frame: &[u8], seq: u32, src: [u8; 6], dst: [u8; 6]) -> Result<(), String> {
    let mut want = vec![0u8; 2048];
    let len = build_frame(&mut want, seq, src, dst);
    if frame.len() != len {
        return Err(format!("frame {seq}: length {} != {len}", frame.len()));
    }
    if frame != &want[..len] {
        return Err(format!("frame {seq}: content differs"));
    }
    Ok(())
}

/// Throughput of one direction, for the report (printed, never asserted: the machine is shared).
#[derive(Debug)]
pub struct Blast {
    pub offered: u32,
    pub delivered: u32,
    pub frames_per_sec: f64,
}

/// Transmits `n` 60-byte frames through `port` as fast as it takes them, then counts how many the kernel
/// peer received. The rate is the port's (allocation, copy and transmit ring included).
pub fn blast_tx<P: dataplane::port::Port>(
    port: &mut P,
    peer: &RawSocket,
    src: [u8; 6],
    dst: [u8; 6],
    n: u32,
) -> Result<Blast, String> {
    let now = dataplane::time::Instant::ZERO;
    let mut frame = [0u8; 60];
    let mut out = Vec::with_capacity(32);
    let start = std::time::Instant::now();
    let mut seq = 0u32;
    while seq < n || !out.is_empty() {
        while out.len() < 32 && seq < n {
            let Some(mut p) = port.alloc() else { break };
            frame[..6].copy_from_slice(&dst);
            frame[6..12].copy_from_slice(&src);
            frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
            frame[14..18].copy_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&frame).map_err(|e| e.to_string())?;
            out.push(p);
            seq += 1;
        }
        if port.send(now, &mut out) == 0 {
            std::thread::yield_now();
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err("blast_tx: transmit stalled".into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut buf = vec![0u8; 2048];
    let mut delivered = 0;
    while let Some(len) = peer.recv(&mut buf, Duration::from_millis(300)) {
        if frame_seq(&buf[..len], src).is_some() {
            delivered += 1;
        }
    }
    Ok(Blast { offered: n, delivered, frames_per_sec: f64::from(n) / secs })
}

/// The kernel peer sends `n` 60-byte frames as fast as it can (on a thread of its own) while `port`
/// receives; the rate is what the port received per second, until 300 ms pass without a frame.
pub fn blast_rx<P: dataplane::port::Port>(
    port: &mut P,
    peer: &RawSocket,
    src: [u8; 6],
    dst: [u8; 6],
    n: u32,
) -> Result<Blast, String> {
    let now = dataplane::time::Instant::ZERO;
    let mut got = Vec::with_capacity(64);
    let mut delivered = 0u32;
    let start = std::time::Instant::now();
    let mut last = start;
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut frame = [0u8; 60];
            frame[..6].copy_from_slice(&dst);
            frame[6..12].copy_from_slice(&src);
            frame[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
            for seq in 0..n {
                frame[14..18].copy_from_slice(&seq.to_be_bytes());
                // ENOBUFS under pressure: that frame is simply not offered.
                let _ = peer.send(&frame);
            }
        });
        while last.elapsed() < Duration::from_millis(300) && delivered < n {
            got.clear();
            if port.recv(now, &mut got, 64) == 0 {
                std::thread::yield_now();
                continue;
            }
            last = std::time::Instant::now();
            delivered += got.iter().filter(|p| frame_seq(p.data(), src).is_some()).count() as u32;
        }
        let _ = sender.join();
    });
    let secs = last.duration_since(start).as_secs_f64().max(1e-9);
    Ok(Blast { offered: n, delivered, frames_per_sec: f64::from(delivered) / secs })
}

/// Frame rates of a checked exchange (lock-step batches, so a lower bound, for the report only).
#[derive(Debug)]
pub struct Exchanged {
    pub tx_frames_per_sec: f64,
    pub rx_frames_per_sec: f64,
}

/// Sends `frames` numbered frames of varied sizes from `port` to the kernel `peer` and as many back, in
/// batches of `batch`, each batch checked (every byte, and the order) before the next goes out, so that no
/// ring or socket buffer can overflow and any loss is a failure.
pub fn exchange_checked<P: dataplane::port::Port>(
    port: &mut P,
    peer: &RawSocket,
    mac_port: [u8; 6],
    mac_peer: [u8; 6],
    frames: u32,
    batch: u32,
) -> Result<Exchanged, String> {
    const WAIT: Duration = Duration::from_secs(5);
    let now = dataplane::time::Instant::ZERO;
    let name = port.info().name;

    // port -> kernel
    let start = std::time::Instant::now();
    let mut out = Vec::with_capacity(batch as usize);
    let mut buf = vec![0u8; 2048];
    for base in (0..frames).step_by(batch as usize) {
        let end = (base + batch).min(frames);
        for seq in base..end {
            let mut p = port.alloc().ok_or("pool empty")?;
            let n = build_frame(&mut buf, seq, mac_port, mac_peer);
            p.extend_from_slice(&buf[..n]).map_err(|e| e.to_string())?;
            out.push(p);
        }
        let deadline = std::time::Instant::now() + WAIT;
        while !out.is_empty() {
            port.send(now, &mut out);
            if std::time::Instant::now() > deadline {
                return Err(format!("{name}: transmit stuck at frame {base}"));
            }
        }
        let mut seq = base;
        while seq < end {
            let n = peer
                .recv(&mut buf, WAIT)
                .ok_or(format!("kernel peer: frame {seq} from {name} never arrived"))?;
            if frame_seq(&buf[..n], mac_port).is_none() {
                continue;
            }
            check_frame(&buf[..n], seq, mac_port, mac_peer)?;
            seq += 1;
        }
    }
    let tx_secs = start.elapsed().as_secs_f64();

    // kernel -> port
    let start = std::time::Instant::now();
    let mut got = Vec::with_capacity(64);
    for base in (0..frames).step_by(batch as usize) {
        let end = (base + batch).min(frames);
        for seq in base..end {
            let n = build_frame(&mut buf, seq, mac_peer, mac_port);
            peer.send(&buf[..n])?;
        }
        let deadline = std::time::Instant::now() + WAIT;
        let mut seq = base;
        while seq < end {
            got.clear();
            if port.recv(now, &mut got, 32) == 0 {
                if std::time::Instant::now() > deadline {
                    return Err(format!("{name}: frame {seq} from the kernel peer never arrived"));
                }
                std::thread::yield_now();
            }
            for p in &got {
                if frame_seq(p.data(), mac_peer).is_none() {
                    continue;
                }
                check_frame(p.data(), seq, mac_peer, mac_port)?;
                seq += 1;
            }
        }
    }
    let rx_secs = start.elapsed().as_secs_f64();
    Ok(Exchanged {
        tx_frames_per_sec: f64::from(frames) / tx_secs.max(1e-9),
        rx_frames_per_sec: f64::from(frames) / rx_secs.max(1e-9),
    })
}
