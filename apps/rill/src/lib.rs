//! The `rill` command line as a library, so that an application's binary
//! is the `rill` binary plus its own node types and model handlers, with
//! every command (`run`, `validate`, `graph`, `tap`, `dlq`, `types`,
//! `machine`), `--metrics-addr` and the run summary:
//!
//! ```no_run
//! # use rill_core::node::*;
//! # #[derive(Debug, serde::Deserialize)]
//! # struct MyNode {}
//! # impl NodeConfig for MyNode {
//! #     fn kind(&self) -> NodeKind { NodeKind::Transform }
//! #     fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> { unimplemented!() }
//! # }
//! fn main() -> std::process::ExitCode {
//!     rill_cli::Cli::new()
//!         .register::<MyNode>("MyNode", "what it does, for `rill types`")
//!         .main()
//! }
//! ```
//!
//! `apps/custom-rill` is a whole example: a node and a model handler of its
//! own, a pipeline that uses both, and tests that run its binary.
//!
//! Exit codes: 0 success, 1 the pipeline failed, 2 bad input (the file, a
//! record, a flag).

mod commands;
mod dlq;
mod summary;

#[cfg(feature = "mimalloc")]
pub mod alloc;

/// mimalloc for small blocks, the system allocator for large ones (see
/// [`alloc`]). An application with an allocator of its own turns the
/// default `mimalloc` feature off.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: alloc::Allocator = alloc::Allocator;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rill_core::node::{Extensions, NodeConfig};
use rill_core::registry::Registry;

/// The command line, with the node types and model handlers it knows.
pub struct Cli {
    registry: Registry,
    extensions: Extensions,
}

impl Default for Cli {
    fn default() -> Cli {
        Cli::new()
    }
}

impl Cli {
    /// The built-in node types (and, with `RILL_TEST_NODES=1`, the
    /// test-only ones) and model handlers.
    pub fn new() -> Cli {
        let mut registry = rill_nodes::registry();
        rill_ml::register_all(&mut registry);
        #[cfg(feature = "iceberg")]
        rill_iceberg::register(&mut registry);
        if std::env::var("RILL_TEST_NODES").is_ok_and(|v| v == "1") {
            rill_nodes::testing::register_testing(&mut registry);
        }
        Cli {
            registry,
            extensions: Extensions::default(),
        }
    }

    /// Adds the node type `C` as `type: name` (replacing a built-in of the
    /// same name); `doc` is its line in `rill types`.
    pub fn register<C: NodeConfig>(mut self, name: &str, doc: &'static str) -> Cli {
        self.registry.register::<C>(name, doc);
        self
    }

    /// Adds the model handler `C` as `model_handler: {type: name}` for
    /// `RunInference`.
    pub fn handler<C: rill_ml::HandlerConfig>(self, name: &str, doc: &'static str) -> Cli {
        rill_ml::register_handler::<C>(name, doc);
        self
    }

    /// A value every node gets in `BuildContext::extensions` (a client, a
    /// shared cache), by its type.
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Cli {
        self.extensions.insert(value);
        self
    }

    /// The node types this command line knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Parses the process's arguments, runs the command and returns its
    /// exit code (also sets up logging from `RILL_LOG`).
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// [`Cli::main`] with the arguments given (the first is the program's
    /// name).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        #[cfg(feature = "mimalloc")]
        alloc::no_huge_pages();
        // state and dead letters hold whole records: owner-only (file sinks
        // give their outputs the usual permissions back)
        rill_core::perms::private_by_default();
        let args = Args::parse_from(args);
        let filter = tracing_subscriber::EnvFilter::try_from_env("RILL_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,zenoh=error,zenoh_transport=error")
        });
        // colours only on a terminal: a log written to a file stays plain text
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        // a second call in one process keeps the first subscriber
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        let code = match args.command {
            Command::Validate { file, machine } => commands::validate(&self, &file, &machine),
            Command::Machine => commands::machine(),
            Command::Graph { file, format } => {
                commands::graph(&self, &file, format == GraphFormat::Mermaid)
            }
            Command::Types => commands::types(&self),
            Command::Dlq { action } => {
                match action {
                    DlqAction::List { file, stage } => dlq::list(&self, &file, stage.as_deref()),
                    DlqAction::Show {
                        file,
                        stage,
                        ids,
                        limit,
                    } => dlq::show(&self, &file, stage.as_deref(), &ids, limit),
                    DlqAction::Replay { file, stage, ids } => commands::with_runtime(async move {
                        dlq::replay(&self, &file, &stage, &ids).await
                    }),
                }
            }
            Command::Run { file, flags } => {
                commands::with_runtime(commands::run(&self, file, flags))
            }
            Command::Router(args) => commands::with_runtime(commands::router(args)),
            Command::Serve(args) => match commands::serve_pipeline(&args) {
                Ok(file) => commands::with_runtime(commands::run(&self, file, args.run_flags())),
                Err(e) => {
                    eprintln!("error: {e}");
                    commands::BAD_INPUT
                }
            },
            Command::Tap {
                key,
                listen,
                connect,
                count,
            } => commands::with_runtime(commands::tap(key, listen, connect, count)),
        };
        ExitCode::from(code)
    }
}

/// rill: machine-learning pipelines over streaming data, on your own box.
#[derive(Parser, Debug)]
#[command(name = "rill", version, about, propagate_version = true)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline (all its stages, or some with --stages).
    Run {
        /// The pipeline YAML file.
        file: PathBuf,
        #[command(flatten)]
        flags: commands::RunFlags,
    },
    /// Serve a model folder over HTTP (KServe v2 and Vertex AI shapes)
    /// and Zenoh: a one-stage pipeline of `RunInference` with `serve:`,
    /// written to `.rill/serve/NAME.yaml` (copy it into a pipeline of your
    /// own to serve beside a stream).
    Serve(commands::ServeArgs),
    /// Run an embedded Zenoh router that the processes of a pipeline on
    /// several boxes connect to (`rill run --connect` to it); no `zenohd`
    /// needed. Runs until SIGTERM or Ctrl-C.
    Router(commands::RouterArgs),
    /// Check a pipeline without running it: against this machine, or the
    /// one described in a JSON file (`rill machine` prints this one's).
    Validate {
        file: PathBuf,
        /// A machine's description (cores, memory, CUDA devices), as JSON;
        /// `NAME=MACHINE.json` is the machine of host NAME of a pipeline that
        /// spans hosts (repeat it per host; a plain one is the others').
        #[arg(long, value_name = "MACHINE.json")]
        machine: Vec<String>,
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
