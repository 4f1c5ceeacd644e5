//! Tests of the config file: the shipped example parses, defaults fill in, and each kind of mistake is
//! reported under its field.

use super::*;

const MINIMAL: &str = r#"
[box]
name = "t"

[ports.client]
backend = "mem"

[ports.server]
backend = "mem"

[addresses]
vip = "198.18.1.1"
snat = "198.18.2.1"
client_subnet = "198.18.1.0/24"
server_subnet = "198.18.2.0/24"

[[listeners]]
port = 80
backends = ["198.18.2.10:80"]
"#;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/holdfast.example.toml")
}

/// The field errors of a document that must parse as TOML but fail validation.
fn errors(doc: &str) -> Vec<String> {
    match Config::from_toml_str(doc) {
        Ok(_) => panic!("accepted:\n{doc}"),
        Err(ConfigError::Invalid(v)) => v.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("not a validation error: {e}"),
    }
}

/// Asserts that `doc` is rejected with exactly one error, equal to `want`.
fn rejects(doc: &str, want: &str) {
    let e = errors(doc);
    assert_eq!(e, vec![want.to_string()], "for:\n{doc}");
}

fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

fn replace(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "{from}");
    MINIMAL.replacen(from, to, 1)
}

#[test]
fn the_example_parses() {
    let c = Config::load(&example_path()).unwrap();
    assert_eq!(c.box_.name, "hf-primary");
    assert_eq!(c.box_.role, Role::Primary);
    assert_eq!(c.addresses.vip, Ipv4Addr::new(198, 18, 1, 1));
    assert_eq!(c.addresses.snat, Ipv4Addr::new(198, 18, 2, 1));
    assert_eq!(c.ports.client.backend, PortBackend::AfPacket);
    assert_eq!(c.ports.client.interface.as_deref(), Some("hfp-c"));
    let l = c.listener(5201).unwrap();
    assert_eq!(l.backends, vec![BackendEntry { addr: "198.18.2.10:5201".parse().unwrap(), weight: 1 }]);
    assert_eq!(l.ack_policy, AckPolicy::Backend);
    assert_eq!(l.health.fall, 3);
    assert!(c.replication.is_some());
    assert_eq!(c.core_pairs(), 1);
    assert_eq!(
        c.summary(),
        "box hf-primary (primary), 1 core pair(s); client port afpacket on hfp-c, server port afpacket on hfp-s, \
         replication port afpacket on hfp-r\nVIP 198.18.1.1, SNAT 198.18.2.1\n\
         listener iperf on port 5201: 1 backend(s), maglev, ack policy backend"
    );
}

#[test]
fn defaults_fill_in() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.box_.role, Role::Primary);
    assert_eq!(c.listeners[0].name, "port-80");
    assert_eq!(c.listeners[0].balance, Algorithm::Maglev);
    assert_eq!(c.listeners[0].ack_policy, AckPolicy::Backend);
    assert_eq!(c.listeners[0].no_standby, NoStandby::Degraded);
    assert_eq!(c.listeners[0].maglev_table_size, 65_537);
    assert_eq!(c.limits.max_flows, 100_000);
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.cores.poll, PollMode::Adaptive);
    assert_eq!(c.addresses.snat_ports, (20_000, 59_999));
    assert_eq!(c.replication, None);
    assert_eq!(c.control.mode, 0o660);
    assert_eq!(c.log.level, LogLevel::Info);
}

#[test]
fn demo_is_valid_and_means_what_it_says() {
    let d = Config::demo();
    assert_eq!(d.ports.client.backend, PortBackend::Mem);
    assert_eq!(d.listeners.len(), 1);
    assert_eq!(d.listeners[0].backends.len(), 1);
    assert_eq!(d.listeners[0].ack_policy, AckPolicy::Backend);
    // The same box written as a file validates to the same thing.
    let doc = r#"
[box]
name = "demo"
[ports.client]
backend = "mem"
[ports.server]
backend = "mem"
[ports.replication]
backend = "mem"
[addresses]
vip = "198.18.1.1"
snat = "198.18.2.1"
client_subnet = "198.18.1.0/24"
server_subnet = "198.18.2.0/24"
[[listeners]]
name = "demo"
port = 5201
backends = ["198.18.2.10:5201"]
[replication]
"#;
    assert_eq!(Config::from_toml_str(doc).unwrap(), d);
}

#[test]
fn backends_in_both_forms() {
    let doc = replace(
        r#"backends = ["198.18.2.10:80"]"#,
        r#"backends = ["198.18.2.10:80", { addr = "198.18.2.11:80", weight = 3 }, { addr = "198.18.2.12:80" }]"#,
    );
    let c = Config::from_toml_str(&doc).unwrap();
    let w: Vec<u32> = c.listeners[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(w, vec![1, 3, 1]);
}

#[test]
fn parse_errors_name_the_place() {
    for (doc, needle) in [
        (with("[limits]\nmax_flow = 5"), "unknown field `max_flow`"),
        (replace("[box]", "[boxx]"), "unknown field `boxx`"),
        (replace(r#"name = "t""#, "name = 5"), "invalid type"),
        (
            replace(
                r#"backends = ["198.18.2.10:80"]"#,
                r#"backends = [{ addr = "198.18.2.10:80", wieght = 2 }]"#,
            ),
            "wieght",
        ),
        ("this is not toml".to_string(), "line 1"),
        (replace("vip = \"198.18.1.1\"\n", ""), "missing field `vip`"),
    ] {
        match Config::from_toml_str(&doc) {
            Err(ConfigError::Parse(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("{other:?} for {doc}"),
        }
    }
}

#[test]
fn bad_addresses() {
    let doc =
        replace(r#"backends = ["198.18.2.10:80"]"#, r#"backends = ["198.18.2.10:80", "198.18.2.300:80"]"#);
    rejects(&doc, r#"listeners[0].backends[1]: "198.18.2.300:80" is not an IPv4 socket address"#);
    rejects(
        &replace(r#"vip = "198.18.1.1""#, r#"vip = "198.18.1""#),
        r#"addresses.vip: "198.18.1" is not an IPv4 address"#,
    );
    rejects(
        &replace(r#"client_subnet = "198.18.1.0/24""#, r#"client_subnet = "198.18.1.1/24""#),
        r#"addresses.client_subnet: "198.18.1.1/24" is not an IPv4 subnet (a.b.c.d/len with the host bits zero)"#,
    );
    rejects(
        &with("").replace(r#"snat = "198.18.2.1""#, r#"snat = "198.18.3.1""#),
        "addresses.snat: 198.18.3.1 is not in the server subnet 198.18.2.0/24",
    );
    rejects(
        &with("").replace(r#"backends = ["198.18.2.10:80"]"#, r#"backends = ["198.18.2.1:80"]"#),
        "listeners[0].backends[0]: 198.18.2.1:80 is the proxy's own address",
    );
    rejects(
        &with("").replace(r#"backends = ["198.18.2.10:80"]"#, r#"backends = ["10.0.0.1:80"]"#),
        "listeners[0].backends[0]: 10.0.0.1:80 is outside the server subnet 198.18.2.0/24 and no server_gateway is set",
    );
    // With a gateway, an off-subnet backend is fine.
    let doc = replace(r#"backends = ["198.18.2.10:80"]"#, r#"backends = ["10.0.0.1:80"]"#).replace(
        "server_subnet = \"198.18.2.0/24\"",
        "server_subnet = \"198.18.2.0/24\"\nserver_gateway = \"198.18.2.254\"",
    );
    assert!(Config::from_toml_str(&doc).is_ok());
    rejects(
        &replace(
            r#"server_subnet = "198.18.2.0/24""#,
            "server_subnet = \"198.18.2.0/24\"\nserver_gateway = \"198.18.9.1\"",
        ),
        "addresses.server_gateway: 198.18.9.1 is not in its subnet 198.18.2.0/24",
    );
    rejects(
        &replace(
            r#"server_subnet = "198.18.2.0/24""#,
            "server_subnet = \"198.18.2.0/24\"\nvirtual_mac = \"01:00:5e:00:00:01\"",
        ),
        r#"addresses.virtual_mac: "01:00:5e:00:00:01" is not a unicast MAC address"#,
    );
    rejects(
        &replace(
            r#"server_subnet = "198.18.2.0/24""#,
            "server_subnet = \"198.18.2.0/24\"\nvirtual_mac = \"02:00:00:00:00\"",
        ),
        r#"addresses.virtual_mac: "02:00:00:00:00" is not a MAC address (six hex bytes, colon-separated)"#,
    );
}

#[test]
fn vip_must_not_be_in_the_server_subnet() {
    let doc = replace(r#"vip = "198.18.1.1""#, r#"vip = "198.18.2.5""#);
    assert_eq!(
        errors(&doc),
        vec![
            "addresses.vip: 198.18.2.5 is not in the client subnet 198.18.1.0/24".to_string(),
            "addresses.vip: 198.18.2.5 is in the server subnet 198.18.2.0/24; the VIP lives on the client side"
                .to_string(),
        ]
    );
    let doc = replace(r#"server_subnet = "198.18.2.0/24""#, r#"server_subnet = "198.18.0.0/16""#);
    assert!(errors(&doc).contains(
        &"addresses.server_subnet: 198.18.0.0/16 overlaps the client subnet 198.18.1.0/24".to_string()
    ));
}

#[test]
fn port_ranges() {
    rejects(&replace("port = 80", "port = 70000"), "listeners[0].port: 70000 is out of range 1..=65535");
    rejects(&replace("port = 80", "port = 0"), "listeners[0].port: 0 is out of range 1..=65535");
    rejects(
        &replace(
            r#"server_subnet = "198.18.2.0/24""#,
            "server_subnet = \"198.18.2.0/24\"\nsnat_port_min = 30000\nsnat_port_max = 20000",
        ),
        "addresses.snat_port_max: 20000 is below snat_port_min (30000)",
    );
    rejects(
        &replace(
            r#"server_subnet = "198.18.2.0/24""#,
            "server_subnet = \"198.18.2.0/24\"\nprobe_port_min = 59000",
        ),
        "addresses.probe_port_min: probe ports 59000..=60999 overlap the SNAT ports 20000..=59999",
    );
    rejects(
        &replace(
            r#"server_subnet = "198.18.2.0/24""#,
            "server_subnet = \"198.18.2.0/24\"\nsnat_port_min = 80",
        ),
        "addresses.snat_port_min: 80 is out of range 1024..=65535",
    );
}

#[test]
fn listener_rules() {
    rejects(
        &replace(r#"backends = ["198.18.2.10:80"]"#, "backends = []"),
        "listeners[0].backends: missing: a listener needs at least one backend",
    );
    rejects(
        &replace(r#"backends = ["198.18.2.10:80"]"#, "").replace("[[listeners]]\nport = 80\n", ""),
        "listeners: missing: at least one [[listeners]] is needed",
    );
    rejects(
        &with("[[listeners]]\nport = 80\nbackends = [\"198.18.2.11:80\"]"),
        "listeners[1].port: 80 is already used by listeners[0]",
    );
    rejects(
        &with("[[listeners]]\nname = \"port-80\"\nport = 81\nbackends = [\"198.18.2.11:80\"]"),
        "listeners[1].name: \"port-80\" is already used by listeners[0]",
    );
    rejects(
        &replace(r#"backends = ["198.18.2.10:80"]"#, r#"backends = ["198.18.2.10:80", "198.18.2.10:80"]"#),
        "listeners[0].backends[1]: 198.18.2.10:80 is already listed as backends[0]",
    );
    rejects(
        &replace(
            r#"backends = ["198.18.2.10:80"]"#,
            r#"backends = [{ addr = "198.18.2.10:80", weight = 0 }]"#,
        ),
        "listeners[0].backends: every backend has weight 0: nothing could take a flow",
    );
    rejects(
        &replace(
            r#"backends = ["198.18.2.10:80"]"#,
            r#"backends = [{ addr = "198.18.2.10:80", weight = -1 }]"#,
        ),
        "listeners[0].backends[0].weight: -1 is out of range 0..=256",
    );
    rejects(
        &with("").replace("port = 80\n", "port = 80\nbalance = \"round-robin\"\n"),
        r#"listeners[0].balance: "round-robin" is not one of "maglev", "least-conn""#,
    );
    rejects(
        &with("").replace("port = 80\n", "port = 80\nack_policy = \"always\"\n"),
        r#"listeners[0].ack_policy: "always" is not one of "none", "backend", "replica", "app""#,
    );
    rejects(
        &with("").replace("port = 80\n", "port = 80\nack_policy = \"app\"\n"),
        r#"listeners[0].application: missing: ack_policy "app" needs the application's name"#,
    );
    rejects(
        &with("").replace("port = 80\n", "port = 80\napplication = \"ingest\"\n"),
        r#"listeners[0].application: given, but ack_policy is "backend", not "app""#,
    );
    rejects(
        &with("").replace("port = 80\n", "port = 80\nno_standby = \"maybe\"\n"),
        r#"listeners[0].no_standby: "maybe" is not one of "degraded", "refuse""#,
    );
    rejects(
        &with("").replace("port = 80\n", "port = 80\nmaglev_table_size = 65536\n"),
        "listeners[0].maglev_table_size: 65536 is not prime",
    );
    let ok =
        with("").replace("port = 80\n", "port = 80\nack_policy = \"app\"\napplication = \"line-ingest\"\n");
    assert_eq!(Config::from_toml_str(&ok).unwrap().listeners[0].application.as_deref(), Some("line-ingest"));
}

#[test]
fn health_rules() {
    rejects(
        &with("[listeners.health]\ninterval_ms = 100\ntimeout_ms = 500"),
        "listeners[0].health.timeout_ms: 500 is longer than interval_ms (100)",
    );
    rejects(&with("[listeners.health]\nrise = 0"), "listeners[0].health.rise: 0 is out of range 1..=255");
    let c = Config::from_toml_str(&with("[listeners.health]\ninterval_ms = 500\ntimeout_ms = 200\nfall = 1"))
        .unwrap();
    assert_eq!(c.listeners[0].health.interval, Duration::from_millis(500));
    assert_eq!(c.listeners[0].health.fall, 1);
    assert_eq!(c.listeners[0].health.rise, 2);
}

#[test]
fn replica_policy_and_standby_role_need_replication() {
    let doc = with("").replace("port = 80\n", "port = 80\nack_policy = \"replica\"\n");
    rejects(
        &doc,
        r#"listeners[0].ack_policy: "replica" needs a [replication] section and a [ports.replication] port"#,
    );
    let fixed = format!("{doc}\n[replication]\n")
        .replace("[addresses]", "[ports.replication]\nbackend = \"mem\"\n\n[addresses]");
    assert_eq!(Config::from_toml_str(&fixed).unwrap().listeners[0].ack_policy, AckPolicy::Replica);
    rejects(
        &with("[replication]"),
        "ports.replication: missing: [replication] is set, so a replication port is needed",
    );
    rejects(
        &replace("[addresses]", "[ports.replication]\nbackend = \"mem\"\n\n[addresses]"),
        "replication: missing: [ports.replication] is set, so a [replication] section is needed",
    );
    rejects(
        &replace(r#"name = "t""#, "name = \"t\"\nrole = \"standby\""),
        r#"box.role: "standby" needs a [replication] section and a [ports.replication] port"#,
    );
    rejects(
        &replace(r#"name = "t""#, "name = \"t\"\nrole = \"backup\""),
        r#"box.role: "backup" is not one of "primary", "standby""#,
    );
}

#[test]
fn port_backend_rules() {
    rejects(
        &replace("[ports.client]\nbackend = \"mem\"", "[ports.client]\nbackend = \"afpacket\""),
        r#"ports.client.interface: missing: backend "afpacket" needs an interface"#,
    );
    rejects(
        &replace("[ports.client]\nbackend = \"mem\"", "[ports.client]\nbackend = \"netmap\""),
        r#"ports.client.backend: "netmap" is not one of "mem", "afpacket", "afxdp", "dpdk""#,
    );
    rejects(
        &replace(
            "[ports.client]\nbackend = \"mem\"",
            "[ports.client]\nbackend = \"afpacket\"\ninterface = \"a-very-long-interface\"",
        ),
        r#"ports.client.interface: "a-very-long-interface" is not an interface name (1 to 15 characters, no '/' or spaces)"#,
    );
    rejects(
        &replace(
            "[ports.client]\nbackend = \"mem\"",
            "[ports.client]\nbackend = \"afpacket\"\ninterface = \"x\"\neal_args = [\"--no-huge\"]",
        ),
        r#"ports.client.eal_args: only the "dpdk" backend takes EAL arguments"#,
    );
    rejects(
        &replace(
            "[ports.client]\nbackend = \"mem\"",
            "[ports.client]\nbackend = \"afxdp\"\ninterface = \"x\"\nxdp_mode = \"skb\"\nzero_copy = true",
        ),
        r#"ports.client.zero_copy: zero-copy is impossible in "skb" (generic) XDP mode"#,
    );
    rejects(
        &replace("[ports.client]\nbackend = \"mem\"", "[ports.client]\nbackend = \"mem\"\nqueues = 2"),
        "ports.server.queues: 1 differs from ports.client.queues (2): each core pair owns one queue of each",
    );
    rejects(
        &replace("[ports.client]\nbackend = \"mem\"", "[ports.client]\nbackend = \"mem\"\nqueues = 0"),
        "ports.client.queues: 0 is out of range 1..=64",
    );
    rejects(
        &replace("[ports.client]\nbackend = \"mem\"", "[ports.client]\nbackend = \"mem\"\nring_size = 1000"),
        "ports.client.ring_size: 1000 is not a power of two",
    );
    let dpdk = replace(
        "[ports.client]\nbackend = \"mem\"",
        "[ports.client]\nbackend = \"dpdk\"\ninterface = \"hfq-c\"\neal_args = [\"--no-huge\", \"--vdev=net_af_packet0,iface=hfq-c\"]",
    );
    assert_eq!(Config::from_toml_str(&dpdk).unwrap().ports.client.eal_args.len(), 2);
}

#[test]
fn limits_cores_control_log() {
    rejects(&with("[limits]\nmax_flows = 0"), "limits.max_flows: 0 is out of range 1..=16777216");
    rejects(
        &with("[limits]\nmax_flows = 10\nsyn_backlog = 20"),
        "limits.syn_backlog: 20 is above max_flows (10)",
    );
    rejects(&with("[limits]\nidle_timeout_s = 0"), "limits.idle_timeout_s: 0 is out of range 1..=604800");
    rejects(&with("[cores]\npoll = \"spin\""), r#"cores.poll: "spin" is not one of "busy", "adaptive""#);
    rejects(
        &with("[cores]\npin = [1]"),
        "cores.pin: 1 core ids given; 1 core pair(s) need 2 (or none, for no pinning)",
    );
    rejects(&with("[cores]\npin = [1, 1]"), "cores.pin[1]: core 1 is listed twice");
    assert_eq!(
        Config::from_toml_str(&with("[cores]\npoll = \"busy\"\npin = [0, 1]")).unwrap().cores.pin,
        vec![0, 1]
    );
    rejects(
        &with("[control]\nsocket = \"holdfast.sock\""),
        r#"control.socket: "holdfast.sock" is not an absolute path"#,
    );
    rejects(
        &with("[control]\nmode = \"0999\""),
        r#"control.mode: "0999" is not an octal permission mode such as "0660""#,
    );
    rejects(
        &with("[control]\nmetrics_listen = \"localhost\""),
        r#"control.metrics_listen: "localhost" is not a socket address"#,
    );
    rejects(
        &with("[log]\nlevel = \"loud\""),
        r#"log.level: "loud" is not one of "error", "warn", "info", "debug", "trace""#,
    );
    let with_repl = replace("[addresses]", "[ports.replication]\nbackend = \"mem\"\n\n[addresses]");
    rejects(
        &format!("{with_repl}\n[replication]\nmiss_threshold = 0"),
        "replication.miss_threshold: 0 is out of range 1..=1000",
    );
    rejects(
        &format!("{with_repl}\n[replication]\npeer_mac = \"zz:00:00:00:00:01\""),
        r#"replication.peer_mac: "zz:00:00:00:00:01" is not a MAC address (six hex bytes, colon-separated)"#,
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let doc = replace("port = 80", "port = 0").replace(r#"vip = "198.18.1.1""#, r#"vip = "nope""#);
    let e = errors(&doc);
    assert_eq!(e.len(), 2, "{e:?}");
    let msg = Config::from_toml_str(&doc).unwrap_err().to_string();
    assert!(msg.contains("addresses.vip") && msg.contains("listeners[0].port"), "{msg}");
}

#[test]
fn load_reports_missing_files() {
    let e = Config::load(Path::new("/nonexistent/holdfast.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/holdfast.toml: "), "{e}");
}
