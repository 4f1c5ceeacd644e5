//! `holdfast`: the daemon and the embedded demo.

use clap::{Parser, Subcommand};
use control::sim::{self, Report, Scenario};
use dataplane::gate::AckPolicy;
use std::io::Write;
use std::process::ExitCode;

/// `println!` that does not panic when stdout is a closed pipe (`holdfast sweep | head`): the output is
/// for a reader who left, so the write error is ignored.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Parser, Debug)]
#[command(name = "holdfast", version, about = "A TCP proxy whose connections survive the death of the box")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the box described by a config file: a primary or a standby, on the port backends built in.
    Run {
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Runs many seeded failover simulations (small, crash at a different moment each) and reports every
    /// seed that broke an invariant, so it can be replayed with `holdfast demo --seed`.
    Sweep {
        /// How many seeds, from --first.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1000)]
        first: u64,
        #[arg(long, default_value = "backend")]
        policy: AckPolicy,
    },
    /// Checks a config file: prints what it sets up, or every error with the field it concerns.
    CheckConfig { file: std::path::PathBuf },
    /// Runs the embedded demo: clients stream checksummed data through the proxy to a backend and back,
    /// over lossy in-memory links, and a verdict says whether every byte arrived exactly once.
    Demo {
        /// Prints one JSON object instead of prose.
        #[arg(long)]
        json: bool,
        /// Ack policy: none, backend, replica, app.
        #[arg(long, default_value = "backend")]
        policy: AckPolicy,
        /// Seed of the run (links' faults, ISNs); the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Client connections (spread over four client hosts).
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Bytes each connection streams to the backend (and gets echoed back).
        #[arg(long, default_value_t = 2 << 20)]
        bytes: u64,
        /// Loss on every link direction, in percent.
        #[arg(long, default_value_t = 1.0)]
        loss: f64,
        /// When the primary dies, in milliseconds of virtual time after the start.
        #[arg(long, default_value_t = 1500)]
        crash_at_ms: u64,
        /// Runs without a standby and without a failover (the relay and the ack gate alone).
        #[arg(long)]
        no_failover: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match control::config::Config::load(&file) {
            Ok(cfg) => {
                out!("{}: ok", file.display());
                out!("{}", cfg.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::Sweep { seeds, first, policy } => sweep(first, seeds, policy),
        Command::Run { config } => {
            let cfg = match control::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::FAILURE;
                }
            };
            control::logging::init(control::logging::level_of(cfg.log.level));
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            // SIGTERM (systemd's stop) and SIGINT end the loop: the cores stop, the control socket's file is
            // removed and an AF_XDP program is detached, which a default signal death would skip.
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
                    eprintln!("holdfast run: cannot handle signal {sig}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match control::boxrun::run(&cfg, stop) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holdfast run: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { json, policy, seed, connections, bytes, loss, crash_at_ms, no_failover } => {
            let mut sc = Scenario::demo(seed, policy);
            sc.client_hosts = connections.clamp(1, 4);
            sc.conns_per_host = connections.div_ceil(sc.client_hosts).max(1);
            sc.bytes_per_conn = bytes;
            sc.faults.loss = (loss / 100.0).clamp(0.0, 1.0);
            sc.crash_primary_at =
                if no_failover { None } else { Some(dataplane::time::Duration::from_millis(crash_at_ms)) };
            demo(&sc, json)
        }
    }
}

fn demo(sc: &Scenario, json: bool) -> ExitCode {
    if !json {
        out!(
            "holdfast demo: {} clients stream {:.1} MB each through the proxy (policy {}) to a backend that echoes it back,",
            sc.client_hosts * sc.conns_per_host,
            sc.bytes_per_conn as f64 / 1e6,
            sc.policy
        );
        out!(
            "over in-memory links losing {:.1}% of frames (and duplicating and reordering some); seed {}.",
            sc.faults.loss * 100.0,
            sc.seed
        );
        out!("The clients and the backend run smoltcp, an independent TCP; the proxy is holdfast's own two cores.");
    }
    let report = match sim::run(sc, |line| {
        if !json {
            eprintln!("{line}");
        }
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("holdfast demo: cannot set the simulation up: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string(&report) {
            Ok(s) => out!("{s}"),
            Err(e) => {
                eprintln!("holdfast demo: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_report(&report);
    }
    let _ = std::io::stdout().flush();
    if report.verdict == "pass" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(r: &Report) {
    let mb = |b: u64| b as f64 / 1e6;
    out!();
    out!("What happened ({} ms of virtual time, {} ms of wall time):", r.virtual_ms, r.wall_ms);
    out!(
        "  connections: {} opened, {} finished with their echo intact, {} reset or broken",
        r.connections,
        r.connections_complete,
        r.connections_reset
    );
    out!(
        "  client → backend: {:.2} MB sent, {:.2} MB acknowledged by the proxy, {:.2} MB delivered intact",
        mb(r.bytes_sent),
        mb(r.bytes_acked),
        mb(r.bytes_delivered)
    );
    out!("  backend → client: {:.2} MB echoed back intact", mb(r.bytes_echoed));
    out!(
        "  lost: {} bytes acknowledged but never delivered; duplicated or corrupted: {} bytes",
        r.bytes_lost,
        r.bytes_duplicated
    );
    out!(
        "  ack gate: {} moments where a client held an ACK for a byte the backend did not have",
        r.invariant1_violations
    );
    out!(
        "  longest stall seen by a client: {} ms; frames the links dropped: {}",
        r.stall_ms,
        r.frames_lost_by_links
    );
    for n in &r.notes {
        out!("  note: {n}");
    }
    out!();
    out!("verdict: {}", r.verdict.to_uppercase());
}

/// The scenario of one sweep seed: two client hosts with two connections each, 200 kB both ways, 1 % loss
/// on every link (the replication link too), and a fault somewhere in the first 21 ms. Six seeds in ten
/// kill the primary (the standby must take over); seeds ending in 6 run a planned switchover; seeds ending
/// in 7 kill the primary, bring the dead box back as the new standby and then kill the new primary; seeds
/// ending in 8 kill the standby (the primary must carry on, degraded, losing nothing); seeds ending in 9
/// cut the replication link for 5 to 500 ms (neither box died, so the standby must not take over:
/// invariant 4).
pub fn sweep_scenario(seed: u64, policy: AckPolicy) -> Scenario {
    use dataplane::time::Duration;
    let mut sc = Scenario::demo(seed, policy);
    sc.client_hosts = 2;
    sc.conns_per_host = 2;
    sc.bytes_per_conn = 200_000;
    sc.time_limit = Duration::from_secs(60);
    let at = Duration::from_micros(1000 + (seed.wrapping_mul(7919)) % 20_000);
    match seed % 10 {
        6 => sc.switchover_at = Some(at),
        7 => {
            // The primary dies, the dead box comes back as the new standby and gets the bulk copy, then
            // the new primary dies too: the rejoined box must hold every flow.
            sc.crash_primary_at = Some(at);
            sc.rejoin_after = Some(Duration::from_micros(2_000 + (seed.wrapping_mul(6_151)) % 8_000));
            sc.second_crash_at =
                Some(at + Duration::from_micros(15_000 + (seed.wrapping_mul(3_571)) % 30_000));
        }
        8 => sc.crash_standby_at = Some(at),
        9 => {
            let len = Duration::from_micros(5_000 + (seed.wrapping_mul(104_729)) % 495_000);
            sc.replication_outage = Some((at, len));
        }
        _ => sc.crash_primary_at = Some(at),
    }
    sc
}

fn sweep(first: u64, seeds: u64, policy: AckPolicy) -> ExitCode {
    let mut failed = Vec::new();
    for seed in first..first.saturating_add(seeds) {
        match sim::run(&sweep_scenario(seed, policy), |_| {}) {
            Ok(r) if r.verdict == "pass" => {}
            Ok(r) => {
                out!("{}", serde_json::json!({ "seed": seed, "report": r }));
                failed.push(seed);
            }
            Err(e) => {
                eprintln!("holdfast sweep: seed {seed}: {e}");
                failed.push(seed);
            }
        }
    }
    out!("{}", serde_json::json!({ "seeds": seeds, "failed": failed.len(), "failed_seeds": failed }));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
