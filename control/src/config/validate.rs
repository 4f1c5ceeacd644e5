//! From the file as written ([`super::raw`]) to a [`Config`]: every value checked, every cross-field
//! rule enforced, and all problems reported at once, each under its field's path.

use super::raw::*;
use super::*;
use dataplane::balance::{is_prime, MAX_WEIGHT};
use std::collections::HashMap;
use std::ops::RangeInclusive;

/// Collects field errors.
struct V {
    errs: Vec<FieldError>,
}

impl V {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errs.push(FieldError { field: field.into(), message: message.into() });
    }

    fn int<T: TryFrom<i64>>(&mut self, field: &str, v: i64, range: RangeInclusive<i64>) -> Option<T> {
        if !range.contains(&v) {
            self.err(field, format!("{v} is out of range {}..={}", range.start(), range.end()));
            return None;
        }
        match T::try_from(v) {
            Ok(t) => Some(t),
            Err(_) => {
                self.err(field, format!("{v} is out of range"));
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, field: &str, v: &str, choices: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v) {
            return Some(*t);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.err(field, format!("\"{v}\" is not one of {}", names.join(", ")));
        None
    }

    fn ip(&mut self, field: &str, v: &str) -> Option<Ipv4Addr> {
        let r = v.parse().ok();
        if r.is_none() {
            self.err(field, format!("\"{v}\" is not an IPv4 address"));
        }
        r
    }

    fn subnet(&mut self, field: &str, v: &str) -> Option<Subnet> {
        let r = v.parse().ok();
        if r.is_none() {
            self.err(field, format!("\"{v}\" is not an IPv4 subnet (a.b.c.d/len with the host bits zero)"));
        }
        r
    }

    fn sockaddr(&mut self, field: &str, v: &str) -> Option<SocketAddrV4> {
        let r = v.parse().ok();
        if r.is_none() {
            self.err(field, format!("\"{v}\" is not an IPv4 socket address"));
        }
        r
    }

    fn mac(&mut self, field: &str, v: &str) -> Option<[u8; 6]> {
        let r = parse_mac(v);
        match r {
            None => self.err(field, format!("\"{v}\" is not a MAC address (six hex bytes, colon-separated)")),
            Some(m) if m[0] & 1 == 1 || m == [0; 6] => {
                self.err(field, format!("\"{v}\" is not a unicast MAC address"));
                return None;
            }
            Some(_) => {}
        }
        r
    }

    fn name(&mut self, field: &str, v: &str) -> Option<String> {
        let ok = !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            self.err(field, format!("\"{v}\" is not a name (1 to 64 of A-Z a-z 0-9 - _ .)"));
        }
        ok.then(|| v.to_owned())
    }
}

fn parse_mac(v: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = v.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

const BACKENDS: &[(&str, PortBackend)] = &[
    ("mem", PortBackend::Mem),
    ("afpacket", PortBackend::AfPacket),
    ("afxdp", PortBackend::AfXdp),
    ("dpdk", PortBackend::Dpdk),
];

const POLICIES: &[(&str, AckPolicy)] = &[
    ("none", AckPolicy::None),
    ("backend", AckPolicy::Backend),
    ("replica", AckPolicy::Replica),
    ("app", AckPolicy::App),
];

pub(super) fn validate(raw: &RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut v = V { errs: Vec::new() };
    let box_ = check_box(&mut v, &raw.box_);
    let client = check_port(&mut v, "ports.client", &raw.ports.client);
    let server = check_port(&mut v, "ports.server", &raw.ports.server);
    let repl_port = raw.ports.replication.as_ref().map(|p| check_port(&mut v, "ports.replication", p));
    if let (Some(c), Some(s)) = (&client, &server) {
        if c.queues != s.queues {
            v.err(
                "ports.server.queues",
                format!(
                    "{} differs from ports.client.queues ({}): each core pair owns one queue of each",
                    s.queues, c.queues
                ),
            );
        }
    }
    let replication = raw.replication.as_ref().map(|r| check_replication(&mut v, r));
    match (raw.ports.replication.is_some(), raw.replication.is_some()) {
        (true, false) => {
            v.err("replication", "missing: [ports.replication] is set, so a [replication] section is needed")
        }
        (false, true) => {
            v.err("ports.replication", "missing: [replication] is set, so a replication port is needed")
        }
        _ => {}
    }
    if let (Some(b), None) = (&box_, &raw.replication) {
        if b.role == Role::Standby {
            v.err("box.role", "\"standby\" needs a [replication] section and a [ports.replication] port");
        }
    }
    let queues = client.as_ref().map_or(1, |c| c.queues);
    let addresses = check_addresses(&mut v, &raw.addresses, queues);
    let listeners = check_listeners(&mut v, &raw.listeners, addresses.as_ref(), raw.replication.is_some());
    let limits = check_limits(&mut v, &raw.limits);
    let cores = check_cores(&mut v, &raw.cores, queues);
    let control = check_control(&mut v, &raw.control);
    let log = check_log(&mut v, &raw.log);

    match (box_, client, server, addresses, limits, cores, control, log) {
        (
            Some(box_),
            Some(client),
            Some(server),
            Some(addresses),
            Some(limits),
            Some(cores),
            Some(control),
            Some(log),
        ) if v.errs.is_empty() => {
            let replication = replication.flatten();
            let repl_port = repl_port.flatten();
            Ok(Config {
                box_,
                ports: Ports { client, server, replication: repl_port },
                addresses,
                listeners,
                limits,
                cores,
                replication,
                control,
                log,
            })
        }
        _ => {
            if v.errs.is_empty() {
                v.err("config", "invalid");
            }
            Err(v.errs)
        }
    }
}

fn check_box(v: &mut V, b: &RawBox) -> Option<BoxConfig> {
    let name = v.name("box.name", &b.name);
    let role = v.choice("box.role", &b.role, &[("primary", Role::Primary), ("standby", Role::Standby)]);
    let epoch_file = match &b.epoch_file {
        Some(p) if !p.starts_with('/') => {
            v.err("box.epoch_file", format!("\"{p}\" is not an absolute path"));
            return None;
        }
        other => other.as_ref().map(PathBuf::from),
    };
    Some(BoxConfig { name: name?, role: role?, epoch_file })
}

fn check_port(v: &mut V, at: &str, p: &RawPort) -> Option<PortConfig> {
    let errs = v.errs.len();
    let backend = v.choice(&format!("{at}.backend"), &p.backend, BACKENDS);
    let queues = v.int::<u16>(&format!("{at}.queues"), p.queues, 1..=64);
    let ring_size = p.ring_size.and_then(|r| {
        let n = v.int::<u32>(&format!("{at}.ring_size"), r, 64..=65_536)?;
        if !n.is_power_of_two() {
            v.err(format!("{at}.ring_size"), format!("{n} is not a power of two"));
        }
        Some(n)
    });
    match (&p.interface, backend) {
        (None, Some(b)) if b != PortBackend::Mem => {
            v.err(
                format!("{at}.interface"),
                format!("missing: backend \"{}\" needs an interface", p.backend),
            );
        }
        (Some(i), Some(PortBackend::Mem)) => {
            v.err(format!("{at}.interface"), format!("\"{i}\" given, but backend \"mem\" has no interface"));
        }
        (Some(i), _) if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\0']) => {
            v.err(
                format!("{at}.interface"),
                format!("\"{i}\" is not an interface name (1 to 15 characters, no '/' or spaces)"),
            );
        }
        _ => {}
    }
    if p.eal_args.is_some() && backend != Some(PortBackend::Dpdk) {
        v.err(format!("{at}.eal_args"), "only the \"dpdk\" backend takes EAL arguments");
    }
    if (p.xdp_mode.is_some() || p.zero_copy.is_some()) && backend != Some(PortBackend::AfXdp) {
        let field = if p.xdp_mode.is_some() { "xdp_mode" } else { "zero_copy" };
        v.err(format!("{at}.{field}"), "only the \"afxdp\" backend takes this option");
    }
    let xdp_mode = p.xdp_mode.as_deref().and_then(|m| {
        v.choice(
            &format!("{at}.xdp_mode"),
            m,
            &[("auto", XdpMode::Auto), ("skb", XdpMode::Skb), ("native", XdpMode::Native)],
        )
    });
    if xdp_mode == Some(XdpMode::Skb) && p.zero_copy == Some(true) {
        v.err(format!("{at}.zero_copy"), "zero-copy is impossible in \"skb\" (generic) XDP mode");
    }
    if v.errs.len() != errs {
        return None;
    }
    Some(PortConfig {
        backend: backend?,
        interface: p.interface.clone(),
        queues: queues?,
        ring_size,
        eal_args: p.eal_args.clone().unwrap_or_default(),
        xdp_mode,
        zero_copy: p.zero_copy,
    })
}

fn check_addresses(v: &mut V, a: &RawAddresses, queues: u16) -> Option<Addresses> {
    let errs = v.errs.len();
    let vip = v.ip("addresses.vip", &a.vip);
    let snat = v.ip("addresses.snat", &a.snat);
    let cnet = v.subnet("addresses.client_subnet", &a.client_subnet);
    let snet = v.subnet("addresses.server_subnet", &a.server_subnet);
    let cgw = a.client_gateway.as_deref().and_then(|g| v.ip("addresses.client_gateway", g));
    let sgw = a.server_gateway.as_deref().and_then(|g| v.ip("addresses.server_gateway", g));
    let virtual_mac = a.virtual_mac.as_deref().and_then(|m| v.mac("addresses.virtual_mac", m));
    if let (Some(c), Some(s)) = (cnet, snet) {
        if c.overlaps(&s) {
            v.err("addresses.server_subnet", format!("{s} overlaps the client subnet {c}"));
        }
    }
    if let (Some(vip), Some(c)) = (vip, cnet) {
        if !c.contains(vip.octets()) {
            v.err("addresses.vip", format!("{vip} is not in the client subnet {c}"));
        }
    }
    if let (Some(vip), Some(s)) = (vip, snet) {
        if s.contains(vip.octets()) {
            v.err(
                "addresses.vip",
                format!("{vip} is in the server subnet {s}; the VIP lives on the client side"),
            );
        }
    }
    if let (Some(snat), Some(s)) = (snat, snet) {
        if !s.contains(snat.octets()) {
            v.err("addresses.snat", format!("{snat} is not in the server subnet {s}"));
        }
    }
    for (field, gw, net, own) in
        [("addresses.client_gateway", cgw, cnet, vip), ("addresses.server_gateway", sgw, snet, snat)]
    {
        if let (Some(gw), Some(net)) = (gw, net) {
            if !net.contains(gw.octets()) {
                v.err(field, format!("{gw} is not in its subnet {net}"));
            }
            if Some(gw) == own {
                v.err(field, format!("{gw} is the proxy's own address"));
            }
        }
    }
    let snat_lo = v.int::<u16>("addresses.snat_port_min", a.snat_port_min, 1024..=65_535);
    let snat_hi = v.int::<u16>("addresses.snat_port_max", a.snat_port_max, 1024..=65_535);
    let probe_lo = v.int::<u16>("addresses.probe_port_min", a.probe_port_min, 1024..=65_535);
    let probe_hi = v.int::<u16>("addresses.probe_port_max", a.probe_port_max, 1024..=65_535);
    if let (Some(lo), Some(hi)) = (snat_lo, snat_hi) {
        if lo > hi {
            v.err("addresses.snat_port_max", format!("{hi} is below snat_port_min ({lo})"));
        } else if u32::from(hi - lo) + 1 < u32::from(queues) {
            v.err(
                "addresses.snat_port_max",
                format!("the range {lo}..={hi} has fewer ports than core pairs ({queues})"),
            );
        }
    }
    if let (Some(lo), Some(hi)) = (probe_lo, probe_hi) {
        if lo > hi {
            v.err("addresses.probe_port_max", format!("{hi} is below probe_port_min ({lo})"));
        }
    }
    if let (Some(sl), Some(sh), Some(pl), Some(ph)) = (snat_lo, snat_hi, probe_lo, probe_hi) {
        if pl <= sh && sl <= ph {
            v.err(
                "addresses.probe_port_min",
                format!("probe ports {pl}..={ph} overlap the SNAT ports {sl}..={sh}"),
            );
        }
    }
    if v.errs.len() != errs {
        return None;
    }
    Some(Addresses {
        vip: vip?,
        snat: snat?,
        client_subnet: cnet?,
        server_subnet: snet?,
        client_gateway: cgw,
        server_gateway: sgw,
        virtual_mac,
        snat_ports: (snat_lo?, snat_hi?),
        probe_ports: (probe_lo?, probe_hi?),
    })
}

fn check_listeners(
    v: &mut V,
    ls: &[RawListener],
    addrs: Option<&Addresses>,
    has_replication: bool,
) -> Vec<Listener> {
    if ls.is_empty() {
        v.err("listeners", "missing: at least one [[listeners]] is needed");
    }
    let mut out = Vec::new();
    let mut ports: HashMap<i64, usize> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, l) in ls.iter().enumerate() {
        let at = format!("listeners[{i}]");
        let errs = v.errs.len();
        let port = v.int::<u16>(&format!("{at}.port"), l.port, 1..=65_535);
        let port_dup = if let Some(first) = ports.insert(l.port, i) {
            v.err(format!("{at}.port"), format!("{} is already used by listeners[{first}]", l.port));
            ports.insert(l.port, first);
            true
        } else {
            false
        };
        let name = match &l.name {
            Some(n) => v.name(&format!("{at}.name"), n),
            None => Some(format!("port-{}", l.port)),
        };
        if let Some(n) = &name {
            // A defaulted name repeats only where the port does, which is already reported.
            if let Some(first) = names.get(n).filter(|_| l.name.is_some() || !port_dup) {
                v.err(format!("{at}.name"), format!("\"{n}\" is already used by listeners[{first}]"));
            } else {
                names.insert(n.clone(), i);
            }
        }
        let balance = v.choice(
            &format!("{at}.balance"),
            &l.balance,
            &[("maglev", Algorithm::Maglev), ("least-conn", Algorithm::LeastConn)],
        );
        let table = v.int::<u32>(&format!("{at}.maglev_table_size"), l.maglev_table_size, 3..=(1 << 24) - 1);
        if let Some(t) = table {
            if !is_prime(t) {
                v.err(format!("{at}.maglev_table_size"), format!("{t} is not prime"));
            }
        }
        let policy = v.choice(&format!("{at}.ack_policy"), &l.ack_policy, POLICIES);
        match (policy, &l.application) {
            (Some(AckPolicy::App), None) => {
                v.err(
                    format!("{at}.application"),
                    "missing: ack_policy \"app\" needs the application's name",
                );
            }
            (Some(p), Some(_)) if p != AckPolicy::App => {
                v.err(format!("{at}.application"), format!("given, but ack_policy is \"{p}\", not \"app\""));
            }
            (_, Some(a)) => {
                v.name(&format!("{at}.application"), a);
            }
            _ => {}
        }
        if policy == Some(AckPolicy::Replica) && !has_replication {
            v.err(
                format!("{at}.ack_policy"),
                "\"replica\" needs a [replication] section and a [ports.replication] port",
            );
        }
        let no_standby = v.choice(
            &format!("{at}.no_standby"),
            &l.no_standby,
            &[("degraded", NoStandby::Degraded), ("refuse", NoStandby::Refuse)],
        );
        let h = &l.health;
        let interval = v.int::<u64>(&format!("{at}.health.interval_ms"), h.interval_ms, 1..=3_600_000);
        let timeout = v.int::<u64>(&format!("{at}.health.timeout_ms"), h.timeout_ms, 1..=3_600_000);
        if let (Some(i), Some(t)) = (interval, timeout) {
            if t > i {
                v.err(format!("{at}.health.timeout_ms"), format!("{t} is longer than interval_ms ({i})"));
            }
        }
        let rise = v.int::<u8>(&format!("{at}.health.rise"), h.rise, 1..=255);
        let fall = v.int::<u8>(&format!("{at}.health.fall"), h.fall, 1..=255);

        if l.backends.is_empty() {
            v.err(format!("{at}.backends"), "missing: a listener needs at least one backend");
        }
        let mut backends = Vec::new();
        let mut seen: HashMap<SocketAddrV4, usize> = HashMap::new();
        for (j, b) in l.backends.iter().enumerate() {
            let bat = format!("{at}.backends[{j}]");
            let addr = v.sockaddr(&bat, &b.addr);
            let weight = v.int::<u32>(&format!("{bat}.weight"), b.weight, 0..=i64::from(MAX_WEIGHT));
            let Some(addr) = addr else { continue };
            if let Some(first) = seen.insert(addr, j) {
                v.err(&bat, format!("{addr} is already listed as backends[{first}]"));
            }
            if addr.port() == 0 {
                v.err(&bat, format!("{addr} has port 0"));
            }
            if let Some(a) = addrs {
                let ip = *addr.ip();
                if ip == a.snat || ip == a.vip {
                    v.err(&bat, format!("{addr} is the proxy's own address"));
                } else if !a.server_subnet.contains(ip.octets()) && a.server_gateway.is_none() {
                    v.err(
                        &bat,
                        format!(
                            "{addr} is outside the server subnet {} and no server_gateway is set",
                            a.server_subnet
                        ),
                    );
                }
            }
            if let Some(weight) = weight {
                backends.push(BackendEntry { addr, weight });
            }
        }
        if !l.backends.is_empty() && l.backends.iter().all(|b| b.weight == 0) {
            v.err(format!("{at}.backends"), "every backend has weight 0: nothing could take a flow");
        }
        if v.errs.len() != errs {
            continue;
        }
        if let (Some(name), Some(port), Some(balance), Some(table), Some(policy), Some(no_standby)) =
            (name, port, balance, table, policy, no_standby)
        {
            if let (Some(i), Some(t), Some(rise), Some(fall)) = (interval, timeout, rise, fall) {
                out.push(Listener {
                    name,
                    port,
                    backends,
                    balance,
                    maglev_table_size: table,
                    ack_policy: policy,
                    application: l.application.clone(),
                    no_standby,
                    health: HealthParams {
                        interval: Duration::from_millis(i),
                        timeout: Duration::from_millis(t),
                        rise,
                        fall,
                    },
                });
            }
        }
    }
    out
}

fn check_limits(v: &mut V, l: &RawLimits) -> Option<Limits> {
    let max_flows = v.int::<u32>("limits.max_flows", l.max_flows, 1..=16_777_216);
    let client_buffer = v.int::<u32>("limits.client_buffer", l.client_buffer, 4096..=64 << 20);
    let server_buffer = v.int::<u32>("limits.server_buffer", l.server_buffer, 4096..=64 << 20);
    let idle = v.int::<u64>("limits.idle_timeout_s", l.idle_timeout_s, 1..=7 * 86_400);
    let syn_backlog = v.int::<u32>("limits.syn_backlog", l.syn_backlog, 1..=1 << 20);
    let quarantine = v.int::<u64>("limits.snat_quarantine_s", l.snat_quarantine_s, 0..=600);
    if let (Some(m), Some(s)) = (max_flows, syn_backlog) {
        if s > m {
            v.err("limits.syn_backlog", format!("{s} is above max_flows ({m})"));
            return None;
        }
    }
    Some(Limits {
        max_flows: max_flows?,
        client_buffer: client_buffer?,
        server_buffer: server_buffer?,
        idle_timeout: Duration::from_secs(idle?),
        syn_backlog: syn_backlog?,
        snat_quarantine: Duration::from_secs(quarantine?),
    })
}

fn check_cores(v: &mut V, c: &RawCores, queues: u16) -> Option<Cores> {
    let poll = v.choice("cores.poll", &c.poll, &[("busy", PollMode::Busy), ("adaptive", PollMode::Adaptive)]);
    let want = usize::from(queues) * 2;
    let mut ok = true;
    if !c.pin.is_empty() && c.pin.len() != want {
        v.err(
            "cores.pin",
            format!(
                "{} core ids given; {queues} core pair(s) need {want} (or none, for no pinning)",
                c.pin.len()
            ),
        );
        ok = false;
    }
    let mut pin = Vec::new();
    for (i, &id) in c.pin.iter().enumerate() {
        match v.int::<usize>(&format!("cores.pin[{i}]"), id, 0..=1023) {
            Some(id) if pin.contains(&id) => {
                v.err(format!("cores.pin[{i}]"), format!("core {id} is listed twice"));
                ok = false;
            }
            Some(id) => pin.push(id),
            None => ok = false,
        }
    }
    ok.then_some(Cores { poll: poll?, pin })
}

fn check_replication(v: &mut V, r: &RawReplication) -> Option<Replication> {
    let hb = v.int::<u64>("replication.heartbeat_interval_us", r.heartbeat_interval_us, 10..=10_000_000);
    let miss = v.int::<u32>("replication.miss_threshold", r.miss_threshold, 1..=1000);
    let batch = v.int::<u32>("replication.batch_size", r.batch_size, 1..=1024);
    let flush = v.int::<u64>("replication.flush_deadline_us", r.flush_deadline_us, 1..=1_000_000);
    let peer_mac = match &r.peer_mac {
        Some(m) => Some(v.mac("replication.peer_mac", m)?),
        None => None,
    };
    Some(Replication {
        heartbeat_interval: Duration::from_micros(hb?),
        miss_threshold: miss?,
        batch_size: batch?,
        flush_deadline: Duration::from_micros(flush?),
        peer_mac,
    })
}

fn check_control(v: &mut V, c: &RawControl) -> Option<ControlConfig> {
    let errs = v.errs.len();
    if !c.socket.starts_with('/') {
        v.err("control.socket", format!("\"{}\" is not an absolute path", c.socket));
    }
    let mode = match u32::from_str_radix(&c.mode, 8) {
        Ok(m) if m <= 0o777 && !c.mode.is_empty() => Some(m),
        _ => {
            v.err("control.mode", format!("\"{}\" is not an octal permission mode such as \"0660\"", c.mode));
            None
        }
    };
    if let Some(g) = &c.group {
        v.name("control.group", g);
    }
    let metrics_listen = match &c.metrics_listen {
        Some(m) => match m.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                v.err("control.metrics_listen", format!("\"{m}\" is not a socket address"));
                None
            }
        },
        None => None,
    };
    if v.errs.len() != errs {
        return None;
    }
    Some(ControlConfig {
        socket: PathBuf::from(&c.socket),
        mode: mode?,
        group: c.group.clone(),
        metrics_listen,
    })
}

fn check_log(v: &mut V, l: &RawLog) -> Option<LogConfig> {
    let level = v.choice(
        "log.level",
        &l.level,
        &[
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ],
    );
    let format = v.choice("log.format", &l.format, &[("text", LogFormat::Text), ("json", LogFormat::Json)]);
    Some(LogConfig { level: level?, format: format? })
}
