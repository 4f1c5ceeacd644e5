//! `holdfastctl`: the control client. Speaks the JSON control socket; prints readable tables, or the raw
//! reply with `--json`. Exit codes: 0 ok, 1 the server answered with an error, 2 usage error, 3 cannot
//! connect, timeout, or a reply that is not the protocol.

use clap::{Args, Parser, Subcommand, ValueEnum};
use control::ctl::protocol::{
    AckPolicy, BackendAction, CaptureArgs, DrainArgs, FlowArgs, FlowPhase, FlowsArgs, LogLevel, NoArgs,
    PeerFilter, PortName, Request, SetArgs, SwitchoverArgs, DEFAULT_FLOWS_LIMIT,
};
use control::ctl::{render::render, Client};
use std::io::Write;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where the daemon puts its socket unless configured otherwise.
const DEFAULT_SOCKET: &str = "/run/holdfast/control.sock";

const EXIT_ERROR_REPLY: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

#[derive(Parser, Debug)]
#[command(name = "holdfastctl", version, about = "Control a running holdfast box over its control socket")]
struct Cli {
    /// The control socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the raw JSON reply instead of tables.
    #[arg(long)]
    json: bool,
    /// Milliseconds to wait for the connection and the reply.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Role, peer state, epoch, degraded or not, uptime.
    Status,
    /// Counters per port, core and listener; latency percentiles.
    Stats,
    /// List flows, optionally filtered.
    Flows(FlowsCli),
    /// One flow's full state.
    Flow {
        /// The flow id that `flows` shows.
        id: u64,
    },
    /// Change a setting at run time.
    Set {
        #[command(subcommand)]
        setting: SetCli,
    },
    /// Move service to the standby, with nothing lost.
    Switchover {
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Stop taking new flows (one listener, or all) and let the existing ones finish.
    Drain {
        #[arg(long)]
        listener: Option<String>,
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Write COUNT packets of PORT to a pcap FILE (an absolute path on the daemon's machine).
    Capture {
        #[arg(value_enum)]
        port: PortArg,
        count: u32,
        file: PathBuf,
        #[arg(long)]
        snaplen: Option<u32>,
    },
    /// Prometheus text exposition.
    Metrics,
}

#[derive(Args, Debug)]
struct FlowsCli {
    #[arg(long)]
    listener: Option<String>,
    #[arg(long, value_enum)]
    state: Option<PhaseArg>,
    /// IPv4 address, or IPv4:port, of either peer.
    #[arg(long)]
    peer: Option<String>,
    #[arg(long, default_value_t = DEFAULT_FLOWS_LIMIT)]
    limit: u32,
}

#[derive(Subcommand, Debug)]
enum SetCli {
    /// Ack policy of a listener.
    AckPolicy {
        listener: String,
        #[arg(value_enum)]
        policy: PolicyArg,
    },
    HeartbeatIntervalMs {
        value: u64,
    },
    MissThreshold {
        value: u32,
    },
    BatchSize {
        value: u32,
    },
    FlushDeadlineUs {
        value: u64,
    },
    /// Add, remove or drain a backend of a listener's pool.
    Backend {
        #[arg(value_enum)]
        action: ActionArg,
        listener: String,
        addr: SocketAddrV4,
        #[arg(long)]
        weight: Option<u32>,
    },
    LogLevel {
        #[arg(value_enum)]
        level: LevelArg,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum PortArg {
    Client,
    Server,
    Replication,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum PhaseArg {
    Opening,
    Established,
    Closing,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum PolicyArg {
    None,
    Backend,
    Replica,
    App,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ActionArg {
    Add,
    Remove,
    Drain,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LevelArg {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

fn build_request(cmd: Command) -> Result<Request, String> {
    Ok(match cmd {
        Command::Status => Request::Status(NoArgs {}),
        Command::Stats => Request::Stats(NoArgs {}),
        Command::Metrics => Request::Metrics(NoArgs {}),
        Command::Flow { id } => Request::Flow(FlowArgs { id }),
        Command::Flows(f) => Request::Flows(FlowsArgs {
            listener: f.listener,
            state: f.state.map(|s| match s {
                PhaseArg::Opening => FlowPhase::Opening,
                PhaseArg::Established => FlowPhase::Established,
                PhaseArg::Closing => FlowPhase::Closing,
            }),
            peer: f.peer.map(PeerFilter::try_from).transpose()?,
            limit: f.limit,
        }),
        Command::Set { setting } => Request::Set(match setting {
            SetCli::AckPolicy { listener, policy } => SetArgs::AckPolicy {
                listener,
                policy: match policy {
                    PolicyArg::None => AckPolicy::None,
                    PolicyArg::Backend => AckPolicy::Backend,
                    PolicyArg::Replica => AckPolicy::Replica,
                    PolicyArg::App => AckPolicy::App,
                },
            },
            SetCli::HeartbeatIntervalMs { value } => SetArgs::HeartbeatIntervalMs { value },
            SetCli::MissThreshold { value } => SetArgs::MissThreshold { value },
            SetCli::BatchSize { value } => SetArgs::BatchSize { value },
            SetCli::FlushDeadlineUs { value } => SetArgs::FlushDeadlineUs { value },
            SetCli::Backend { action, listener, addr, weight } => SetArgs::Backend {
                action: match action {
                    ActionArg::Add => BackendAction::Add,
                    ActionArg::Remove => BackendAction::Remove,
                    ActionArg::Drain => BackendAction::Drain,
                },
                listener,
                addr,
                weight,
            },
            SetCli::LogLevel { level } => SetArgs::LogLevel {
                level: match level {
                    LevelArg::Off => LogLevel::Off,
                    LevelArg::Error => LogLevel::Error,
                    LevelArg::Warn => LogLevel::Warn,
                    LevelArg::Info => LogLevel::Info,
                    LevelArg::Debug => LogLevel::Debug,
                    LevelArg::Trace => LogLevel::Trace,
                },
            },
        }),
        Command::Switchover { timeout_ms } => Request::Switchover(SwitchoverArgs { timeout_ms }),
        Command::Drain { listener, timeout_ms } => Request::Drain(DrainArgs { listener, timeout_ms }),
        Command::Capture { port, count, file, snaplen } => Request::Capture(CaptureArgs {
            port: match port {
                PortArg::Client => PortName::Client,
                PortArg::Server => PortName::Server,
                PortArg::Replication => PortName::Replication,
            },
            count,
            file,
            snaplen,
        }),
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not usage errors.
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let request = match build_request(cli.command) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("holdfastctl: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The same checks the server makes: a bad value is a usage error, caught before connecting.
    if let Err(e) = request.validate() {
        eprintln!("holdfastctl: {}", e.message);
        return ExitCode::from(EXIT_USAGE);
    }
    let mut timeout = Duration::from_millis(cli.timeout);
    if let Request::Switchover(a) = &request {
        // The box answers when the switchover is done or called off: wait for that, and a little more.
        let wait = a.timeout_ms.map_or(control::switchover::DEFAULT_TIMEOUT, Duration::from_millis);
        timeout = timeout.max(wait + Duration::from_secs(2));
    }
    let reply = match Client::connect(&cli.socket, timeout).and_then(|mut c| c.call(&request)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("holdfastctl: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    // Written with errors ignored: `holdfastctl flows | head` closing the pipe is not a failure.
    let mut out = std::io::stdout().lock();
    if cli.json {
        let _ = writeln!(out, "{}", serde_json::to_string(&reply).unwrap_or_default());
    } else if let Some(err) = &reply.error {
        eprintln!("holdfastctl: {} failed: {} ({})", request.name(), err.message, err.code);
    } else {
        let text = render(request.name(), reply.result.as_ref().unwrap_or(&serde_json::Value::Null));
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = writeln!(out);
        }
    }
    let _ = out.flush();
    if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR_REPLY)
    }
}
