//! The `rill` command line. `main` only parses arguments and sets up
//! logging; each command lives in [`commands`].

mod commands;
mod dlq;
mod summary;

/// mimalloc rather than the system allocator: records are many small
/// allocations made on one thread and freed on another, which glibc's
/// allocator handles poorly (`rill-bench`, which uses it too, measured the
/// 3-stage `best_effort` pipeline 1.35 times faster with it).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// rill: machine-learning pipelines over streaming data, on your own box.
#[derive(Parser, Debug)]
#[command(name = "rill", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline (all its stages, or some with --stages).
    Run {
        /// The pipeline YAML file.
        file: PathBuf,
        /// Run only these stages (comma separated); run the rest elsewhere.
        #[arg(long, value_delimiter = ',')]
        stages: Option<Vec<String>>,
        /// Zenoh endpoint to listen on (replaces options.zenoh.listen).
        #[arg(long = "listen", value_name = "ENDPOINT")]
        listen: Vec<String>,
        /// Zenoh endpoint to connect to (replaces options.zenoh.connect).
        #[arg(long = "connect", value_name = "ENDPOINT")]
        connect: Vec<String>,
        /// No progress and no summary.
        #[arg(long, short)]
        quiet: bool,
        /// Discard the stored state of the stages this process runs (their
        /// output logs, positions and node state) and start them over.
        #[arg(long)]
        reset_state: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
        /// 127.0.0.1:9464; port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Check a pipeline without running it: against this machine, or the
    /// one described in a JSON file (`rill machine` prints this one's).
    Validate {
        file: PathBuf,
        /// A machine's description (cores, memory, CUDA devices), as JSON.
        #[arg(long, value_name = "MACHINE.json")]
        machine: Option<PathBuf>,
    },
    /// Print this machine's cores, memory and CUDA devices as JSON (for
    /// `rill validate --machine` elsewhere).
    Machine,
    /// Print the pipeline graph.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Print the records published on a Zenoh key as JSON lines.
    Tap {
        /// Key expression, e.g. `rill/quickstart/enrich/out`.
        key: String,
        #[arg(long = "listen", value_name = "ENDPOINT")]
        listen: Vec<String>,
        #[arg(long = "connect", value_name = "ENDPOINT")]
        connect: Vec<String>,
        /// Exit after this many records.
        #[arg(long)]
        count: Option<u64>,
    },
    /// List the node types this build knows.
    Types,
    /// Inspect and replay the dead letters of a pipeline.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand, Debug)]
enum DlqAction {
    /// Count the dead letters per stage, with their most common errors.
    List {
        file: PathBuf,
        #[arg(long)]
        stage: Option<String>,
    },
    /// Print dead letters as JSON lines.
    Show {
        file: PathBuf,
        #[arg(long)]
        stage: Option<String>,
        /// Only these ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Run dead letters through their stage again (after a fix): what
    /// succeeds flows on to the sinks, what fails comes back as a new
    /// dead letter.
    Replay {
        file: PathBuf,
        #[arg(long)]
        stage: String,
        /// Only these ids (repeatable); all of the stage's by default.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    // state and dead letters hold whole records: owner-only (file sinks
    // give their outputs the usual permissions back)
    rill_core::perms::private_by_default();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RILL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,zenoh=error,zenoh_transport=error")
    });
    // colours only on a terminal: a log written to a file stays plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let code = match cli.command {
        Command::Validate { file, machine } => commands::validate(&file, machine.as_deref()),
        Command::Machine => commands::machine(),
        Command::Graph { file, format } => commands::graph(&file, format == GraphFormat::Mermaid),
        Command::Types => commands::types(),
        Command::Dlq { action } => match action {
            DlqAction::List { file, stage } => dlq::list(&file, stage.as_deref()),
            DlqAction::Show {
                file,
                stage,
                ids,
                limit,
            } => dlq::show(&file, stage.as_deref(), &ids, limit),
            DlqAction::Replay { file, stage, ids } => {
                commands::with_runtime(async move { dlq::replay(&file, &stage, &ids).await })
            }
        },
        Command::Run {
            file,
            stages,
            listen,
            connect,
            quiet,
            reset_state,
            metrics_addr,
        } => commands::with_runtime(commands::run(
            file,
            commands::RunFlags {
                stages,
                listen,
                connect,
                quiet,
                reset_state,
                metrics_addr,
            },
        )),
        Command::Tap {
            key,
            listen,
            connect,
            count,
        } => commands::with_runtime(commands::tap(key, listen, connect, count)),
    };
    ExitCode::from(code)
}
