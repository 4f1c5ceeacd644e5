//! Peers for the simulator: hosts running smoltcp, an independent TCP implementation, on in-memory ports.
//!
//! A [`SmolHost`] is one smoltcp interface with its sockets; [`ClientHost`] opens connections to the VIP
//! and streams checksummed data, verifying the echo; [`BackendHost`] accepts connections, verifies each
//! stream as it arrives and echoes it back.

// smoltcp's Interface and SocketSet have no Debug, so neither do the hosts built on them.
#![allow(missing_debug_implementations)]

use super::stream::{StreamReader, StreamWriter};
use dataplane::buf::PacketBuf;
use dataplane::port::Port;
use dataplane::time::Instant;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use std::collections::VecDeque;
use std::net::Ipv4Addr;

/// Debug aid: prints TCP frames a host sends or receives when `HOLDFAST_SIM_TRACE` names one of their ports
/// (comma-separated), within `HOLDFAST_SIM_TRACE_FROM_MS`..`HOLDFAST_SIM_TRACE_TO_MS` of virtual time.
fn trace_frame(dir: &str, now: Instant, frame: &[u8]) {
    use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
    static FILTER: std::sync::OnceLock<Option<(Vec<u16>, u64, u64)>> = std::sync::OnceLock::new();
    let f = FILTER.get_or_init(|| {
        let ports = std::env::var("HOLDFAST_SIM_TRACE").ok()?;
        let ports = ports.split(',').filter_map(|p| p.trim().parse().ok()).collect();
        let ms = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Some((ports, ms("HOLDFAST_SIM_TRACE_FROM_MS", 0), ms("HOLDFAST_SIM_TRACE_TO_MS", u64::MAX)))
    });
    let Some((ports, from, to)) = f else { return };
    let ms = now.as_millis();
    if ms < *from || ms > *to {
        return;
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return };
    if !ports.contains(&tcp.src_port()) && !ports.contains(&tcp.dst_port()) {
        return;
    }
    let flags = format!(
        "{}{}{}{}",
        if tcp.syn() { "S" } else { "" },
        if tcp.fin() { "F" } else { "" },
        if tcp.rst() { "R" } else { "" },
        if tcp.ack() { "." } else { "" }
    );
    eprintln!(
        "{now} {dir} {}:{} > {}:{} [{flags}] seq={} ack={} win={} len={}",
        ip.src_addr(),
        tcp.src_port(),
        ip.dst_addr(),
        tcp.dst_port(),
        tcp.seq_number().0 as u32,
        tcp.ack_number().0 as u32,
        tcp.window_len(),
        tcp.payload().len()
    );
}

fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.as_micros() as i64)
}

/// A smoltcp device over one of our ports.
pub struct PortDevice<P> {
    port: P,
    rx: VecDeque<PacketBuf>,
    rx_batch: Vec<PacketBuf>,
    tx_batch: Vec<PacketBuf>,
    now: Instant,
    mtu: usize,
}

impl<P: Port> PortDevice<P> {
    pub fn new(port: P) -> Self {
        let mtu = port.info().mtu + 14;
        PortDevice {
            port,
            rx: VecDeque::new(),
            rx_batch: Vec::new(),
            tx_batch: Vec::new(),
            now: Instant::ZERO,
            mtu,
        }
    }

    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }
}

pub struct PortRx(PacketBuf);

impl RxToken for PortRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0.data())
    }
}

pub struct PortTx<'a, P> {
    port: &'a mut P,
    batch: &'a mut Vec<PacketBuf>,
    now: Instant,
}

impl<P: Port> TxToken for PortTx<'_, P> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.port.alloc();
        let space = buf.as_mut().and_then(|b| b.append(len).ok());
        match space {
            Some(space) => {
                let r = f(space);
                trace_frame("out", self.now, space);
                if let Some(b) = buf {
                    self.batch.push(b);
                    self.port.send(self.now, self.batch);
                    // A full ring loses the frame, as a NIC would; TCP retransmits it.
                    self.batch.clear();
                }
                r
            }
            None => {
                let mut scratch = vec![0u8; len];
                f(&mut scratch)
            }
        }
    }
}

impl<P: Port> Device for PortDevice<P> {
    type RxToken<'a>
        = PortRx
    where
        Self: 'a;
    type TxToken<'a>
        = PortTx<'a, P>
    where
        Self: 'a;

    fn receive(&mut self, _ts: smoltcp::time::Instant) -> Option<(PortRx, PortTx<'_, P>)> {
        if self.rx.is_empty() {
            self.port.recv(self.now, &mut self.rx_batch, 64);
            self.rx.extend(self.rx_batch.drain(..));
        }
        let buf = self.rx.pop_front()?;
        trace_frame("in ", self.now, buf.data());
        Some((PortRx(buf), PortTx { port: &mut self.port, batch: &mut self.tx_batch, now: self.now }))
    }

    fn transmit(&mut self, _ts: smoltcp::time::Instant) -> Option<PortTx<'_, P>> {
        Some(PortTx { port: &mut self.port, batch: &mut self.tx_batch, now: self.now })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// One smoltcp host: an interface, its device and its sockets.
pub struct SmolHost<P> {
    pub iface: Interface,
    pub device: PortDevice<P>,
    pub sockets: SocketSet<'static>,
}

impl<P: Port> SmolHost<P> {
    pub fn new(port: P, mac: [u8; 6], ip: Ipv4Addr, prefix: u8, seed: u64, now: Instant) -> Self {
        let mut device = PortDevice::new(port);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, smol_now(now));
        iface.update_ip_addrs(|addrs| {
            let o = ip.octets();
            let _ =
                addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Address::new(o[0], o[1], o[2], o[3])), prefix));
        });
        SmolHost { iface, device, sockets: SocketSet::new(Vec::new()) }
    }

    /// Runs the interface; returns whether anything happened and when it wants to run again.
    pub fn poll(&mut self, now: Instant) -> (bool, Instant) {
        self.device.now = now;
        let changed = self.iface.poll(smol_now(now), &mut self.device, &mut self.sockets);
        let next = match self.iface.poll_delay(smol_now(now), &self.sockets) {
            Some(d) => now + std::time::Duration::from_micros(d.total_micros()),
            None => Instant::FAR_FUTURE,
        };
        let next = match self.device.port.poll_at() {
            Some(t) => next.min(t),
            None => next,
        };
        (changed != smoltcp::iface::PollResult::None, next)
    }

    pub fn device_port(&self) -> &P {
        &self.device.port
    }

    pub fn add_socket(&mut self, buffer: usize) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0; buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; buffer]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_nagle_enabled(false);
        self.sockets.add(s)
    }
}

/// How a connection ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Everything sent was echoed back intact and the connection closed cleanly.
    Complete,
    /// The connection closed without the echo complete (reset, or lost).
    Broken,
}

/// One client connection and its streams.
pub struct ClientConn {
    pub id: u32,
    pub handle: SocketHandle,
    pub local_port: u16,
    pub writer: StreamWriter,
    pub echo: StreamReader,
    pub outcome: Outcome,
    pub connected: bool,
    /// Bytes written into the socket (the socket keeps them until the proxy acknowledges them).
    pub written: u64,
    /// Bytes the proxy acknowledged: written minus what the socket still holds.
    pub acked: u64,
    pub closed_send: bool,
    /// Last time the echo advanced.
    pub last_progress: Instant,
    pub longest_stall: std::time::Duration,
    /// When the longest stall began (the last progress before it).
    pub longest_stall_from: Instant,
}

/// A host with client connections to the VIP.
pub struct ClientHost<P> {
    pub host: SmolHost<P>,
    pub conns: Vec<ClientConn>,
    buf: Vec<u8>,
}

impl<P: Port> ClientHost<P> {
    pub fn new(host: SmolHost<P>) -> Self {
        ClientHost { host, conns: Vec::new(), buf: vec![0; 16 * 1024] }
    }

    /// Opens a connection to `vip:port` from `local_port`, carrying stream `id` of `len` bytes.
    pub fn connect(
        &mut self,
        to: (Ipv4Addr, u16),
        local_port: u16,
        id: u32,
        len: u64,
        buffer: usize,
        now: Instant,
    ) {
        let (vip, port) = to;
        let handle = self.host.add_socket(buffer);
        let o = vip.octets();
        let remote = (IpAddress::Ipv4(Ipv4Address::new(o[0], o[1], o[2], o[3])), port);
        let socket = self.host.sockets.get_mut::<tcp::Socket>(handle);
        let ok = socket.connect(self.host.iface.context(), remote, local_port).is_ok();
        self.conns.push(ClientConn {
            id,
            handle,
            local_port,
            writer: StreamWriter::new(id, len),
            echo: StreamReader::new(),
            outcome: if ok { Outcome::Running } else { Outcome::Broken },
            connected: false,
            written: 0,
            acked: 0,
            closed_send: false,
            last_progress: now,
            longest_stall: std::time::Duration::ZERO,
            longest_stall_from: now,
        });
    }

    /// Moves data: writes more of each stream, reads and verifies echoes, closes finished streams.
    pub fn pump(&mut self, now: Instant) -> bool {
        let mut work = false;
        for c in &mut self.conns {
            if c.outcome != Outcome::Running {
                continue;
            }
            let s = self.host.sockets.get_mut::<tcp::Socket>(c.handle);
            if s.state() == tcp::State::Established {
                c.connected = true;
            }
            while s.can_send() && !c.writer.is_done() {
                let n = c.writer.fill(&mut self.buf);
                let Ok(sent) = s.send_slice(&self.buf[..n]) else { break };
                if sent == 0 {
                    break;
                }
                c.writer.advance(sent);
                c.written += sent as u64;
                work = true;
            }
            c.acked = c.written.saturating_sub(s.send_queue() as u64);
            // Close only once the whole echo is back: the backend then has nothing in flight when the
            // FIN reaches it (smoltcp 0.12 stops its retransmission timer when a FIN arrives, so data
            // lost in flight at that moment would never be resent — a peer bug the demo steers around).
            if c.writer.is_done() && !c.closed_send && s.send_queue() == 0 && c.echo.is_complete() {
                s.close();
                c.closed_send = true;
                work = true;
            }
            while s.can_recv() {
                let Ok(n) = s.recv_slice(&mut self.buf) else { break };
                if n == 0 {
                    break;
                }
                c.echo.feed(&self.buf[..n]);
                if now - c.last_progress > c.longest_stall {
                    c.longest_stall = now - c.last_progress;
                    c.longest_stall_from = c.last_progress;
                }
                c.last_progress = now;
                work = true;
            }
            match s.state() {
                tcp::State::Closed | tcp::State::TimeWait => {
                    c.outcome = if c.echo.is_complete() && c.closed_send {
                        Outcome::Complete
                    } else {
                        Outcome::Broken
                    };
                    work = true;
                }
                _ => {}
            }
        }
        work
    }
}

/// One connection at the backend.
struct BackendConn {
    handle: SocketHandle,
    reader: StreamReader,
    echo: VecDeque<u8>,
    received: u64,
    closed: bool,
}

/// A backend host: listens on a port and echoes every stream after verifying it.
pub struct BackendHost<P> {
    pub host: SmolHost<P>,
    port: u16,
    buffer: usize,
    conns: Vec<BackendConn>,
    /// Reports of finished (or broken) streams.
    pub finished: Vec<(super::stream::StreamReport, u64)>,
    buf: Vec<u8>,
}

impl<P: Port> BackendHost<P> {
    pub fn new(host: SmolHost<P>, port: u16, listeners: usize, buffer: usize) -> Self {
        let mut b = BackendHost {
            host,
            port,
            buffer,
            conns: Vec::new(),
            finished: Vec::new(),
            buf: vec![0; 16 * 1024],
        };
        for _ in 0..listeners {
            b.add_listener();
        }
        b
    }

    fn add_listener(&mut self) {
        let handle = self.host.add_socket(self.buffer);
        let _ = self.host.sockets.get_mut::<tcp::Socket>(handle).listen(self.port);
        self.conns.push(BackendConn {
            handle,
            reader: StreamReader::new(),
            echo: VecDeque::new(),
            received: 0,
            closed: false,
        });
    }

    /// Bytes each stream id has delivered to this backend so far (read plus waiting in the socket).
    pub fn held(&self, id: u32) -> u64 {
        self.conns
            .iter()
            .filter(|c| c.reader.report().id == Some(id))
            .map(|c| {
                let queued = self.host.sockets.get::<tcp::Socket>(c.handle).recv_queue() as u64;
                c.received + queued
            })
            .sum::<u64>()
            + self.finished.iter().filter(|(r, _)| r.id == Some(id)).map(|(_, n)| *n).sum::<u64>()
    }

    pub fn pump(&mut self) -> bool {
        let mut work = false;
        let mut relisten = 0;
        for c in &mut self.conns {
            if c.closed {
                continue;
            }
            let s = self.host.sockets.get_mut::<tcp::Socket>(c.handle);
            // Echo what is pending before reading more, so a slow client slows its own stream only.
            while !c.echo.is_empty() && s.can_send() {
                let (head, _) = c.echo.as_slices();
                let Ok(n) = s.send_slice(head) else { break };
                if n == 0 {
                    break;
                }
                c.echo.drain(..n);
                work = true;
            }
            while c.echo.len() < 4 << 20 && s.can_recv() {
                let Ok(n) = s.recv_slice(&mut self.buf) else { break };
                if n == 0 {
                    break;
                }
                c.reader.feed(&self.buf[..n]);
                c.received += n as u64;
                c.echo.extend(&self.buf[..n]);
                work = true;
            }
            if !s.may_recv() && c.echo.is_empty() && s.state() == tcp::State::CloseWait {
                s.close();
                work = true;
            }
            if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) && s.recv_queue() == 0 {
                let was_used = c.received > 0 || c.reader.report().id.is_some();
                if was_used || s.state() == tcp::State::TimeWait {
                    self.finished.push((c.reader.report().clone(), c.received));
                    c.closed = true;
                    relisten += 1;
                    work = true;
                } else if s.state() == tcp::State::Closed {
                    // A listener that was reset before any data: listen again.
                    let _ = s.listen(self.port);
                }
            }
        }
        for _ in 0..relisten {
            self.add_listener();
        }
        work
    }

    pub fn debug(&self) -> String {
        let mut out = String::new();
        for c in &self.conns {
            let s = self.host.sockets.get::<tcp::Socket>(c.handle);
            if c.received > 0 || s.state() != tcp::State::Listen {
                out.push_str(&format!(
                    "\n  [{:?} {:?} received={} echo_pending={} sendq={} recvq={} {:?}] {} ",
                    s.remote_endpoint(),
                    s.state(),
                    c.received,
                    c.echo.len(),
                    s.send_queue(),
                    s.recv_queue(),
                    c.reader.report(),
                    if s.state() == tcp::State::CloseWait {
                        format!("{s:?}")
                            .split(", ")
                            .filter(|x| {
                                x.contains("remote_")
                                    || x.contains("local_seq")
                                    || x.contains("timer")
                                    || x.contains("max_seq")
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        out
    }

    /// Reports of the streams still open at the backend.
    pub fn open_reports(&self) -> Vec<(super::stream::StreamReport, u64)> {
        self.conns
            .iter()
            .filter(|c| !c.closed && c.received > 0)
            .map(|c| (c.reader.report().clone(), c.received))
            .collect()
    }
}
