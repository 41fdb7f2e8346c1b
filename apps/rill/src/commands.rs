//! The commands behind the CLI. Exit codes: 0 success, 1 pipeline failure,
//! 2 bad input.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rill_core::spec::{self, Pipeline};
use rill_runtime::{Run, RunError, RunOptions};

use crate::{Cli, summary};

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const BAD_INPUT: u8 = 2;

pub(crate) fn load(cli: &Cli, file: &Path) -> Result<Pipeline, u8> {
    load_for(cli, file, &rill_ml::detect_machine())
}

/// Loads and checks `file` against `machine`'s budgets.
fn load_for(cli: &Cli, file: &Path, machine: &spec::Machine) -> Result<Pipeline, u8> {
    spec::load(file, cli.registry(), machine).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("error: {e}");
        }
        let n = errs.0.len();
        eprintln!(
            "{} error{} in {}",
            n,
            if n == 1 { "" } else { "s" },
            file.display()
        );
        BAD_INPUT
    })
}

pub fn with_runtime(fut: impl std::future::Future<Output = u8>) -> u8 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
        )
        .enable_all()
        .build();
    match rt {
        Ok(rt) => {
            let code = rt.block_on(fut);
            // a node call that overran its timeout may still be stuck on a
            // blocking thread: do not wait for it
            rt.shutdown_timeout(std::time::Duration::from_millis(500));
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            FAILED
        }
    }
}

/// `rill machine`: this machine as JSON.
pub fn machine() -> u8 {
    let m = rill_ml::detect_machine();
    let described = spec::MachineFile {
        cpus: m.cpus,
        memory: spec::Bytes::Count(m.memory),
        gpus: rill_ml::gpus()
            .iter()
            .map(|g| spec::GpuFile {
                name: Some(g.name.clone()),
                memory: spec::Bytes::Count(g.memory),
            })
            .collect(),
    };
    match serde_json::to_string_pretty(&described) {
        Ok(j) => {
            println!("{j}");
            OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

pub fn validate(cli: &Cli, file: &Path, machines: &[String]) -> u8 {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|t| spec::Machine::from_json(&t, path))
    };
    let mut m = None;
    let mut hosts = std::collections::BTreeMap::new();
    for arg in machines {
        // `NAME=FILE`: a host's machine (a host name has no `/` or `.`)
        let host = arg
            .split_once('=')
            .filter(|(h, _)| !h.is_empty() && !h.contains(['/', '.']));
        let got = match host {
            Some((h, path)) => read(path).map(|mm| {
                hosts.insert(h.to_owned(), mm);
            }),
            None if m.is_some() => Err(format!(
                "--machine `{arg}`: only one machine without a host name (NAME=FILE for a host)"
            )),
            None => read(arg).map(|mm| m = Some(mm)),
        };
        if let Err(e) = got {
            eprintln!("error: {e}");
            return BAD_INPUT;
        }
    }
    let mut m = m.unwrap_or_else(rill_ml::detect_machine);
    m.hosts = hosts;
    match load_for(cli, file, &m) {
        Ok(p) => {
            println!(
                "{}: pipeline `{}` is valid: {} stage{}",
                file.display(),
                p.name,
                p.stages.len(),
                if p.stages.len() == 1 { "" } else { "s" }
            );
            for s in &p.stages {
                let inputs: Vec<String> = s.inputs.iter().map(|i| i.to_string()).collect();
                let from = if inputs.is_empty() {
                    String::new()
                } else {
                    format!(" <- {}", inputs.join(", "))
                };
                let on = s
                    .placement
                    .as_ref()
                    .map(|p| format!(" on {}", p.host))
                    .unwrap_or_default();
                println!("  {} ({}, {}){on}{from}", s.name, s.type_name, s.kind);
            }
            for h in m.hosts.keys() {
                if !p.options.hosts.contains_key(h) {
                    eprintln!("warning: --machine {h}=...: the pipeline has no host `{h}`");
                }
            }
            OK
        }
        Err(code) => code,
    }
}

pub fn types(cli: &Cli) -> u8 {
    for (name, doc) in cli.registry().docs() {
        println!("{name:<16} {doc}");
    }
    println!("\nmodel handlers (RunInference `model_handler.type`):");
    for (name, doc) in rill_ml::handler_docs() {
        println!("  {name:<16} {doc}");
    }
    let gpus = rill_ml::gpus();
    println!(
        "\ndevices: cpu ({} cores){}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        gpus.iter()
            .map(|g| format!(", cuda:{} ({}, {} MiB)", g.index, g.name, g.memory >> 20))
            .collect::<String>()
    );
    OK
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether stage `s` is placed on host `h`.
fn on_host(s: &spec::Stage, h: &str) -> bool {
    s.placement.as_ref().is_some_and(|p| p.host == h)
}

/// A graph's stage lines: one per stage, or one box per host (`boxed`
/// gives a host's opening and closing lines) around its stages.
fn stage_lines(
    p: &Pipeline,
    out: &mut String,
    node: impl Fn(&spec::Stage) -> String,
    boxed: impl Fn(usize, &str) -> (String, String),
) {
    if p.options.hosts.is_empty() {
        for s in &p.stages {
            out.push_str(&format!("    {}\n", node(s)));
        }
        return;
    }
    for (i, h) in p.options.hosts.keys().enumerate() {
        let (open, close) = boxed(i, h);
        out.push_str(&open);
        for s in p.stages.iter().filter(|s| on_host(s, h)) {
            out.push_str(&format!("        {}\n", node(s)));
        }
        out.push_str(&close);
    }
}

pub fn graph(cli: &Cli, file: &Path, mermaid: bool) -> u8 {
    let p = match load(cli, file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let mut out = String::new();
    if mermaid {
        out.push_str("flowchart LR\n");
        let id = |name: &str| {
            format!(
                "s{}",
                p.stages.iter().position(|s| s.name == name).unwrap_or(0)
            )
        };
        let node = |s: &spec::Stage| {
            let label = format!("{}<br/><i>{}</i>", s.name, s.type_name).replace('"', "#quot;");
            format!("{}[\"{label}\"]", id(&s.name))
        };
        stage_lines(&p, &mut out, node, |i, h| {
            (
                format!("    subgraph h{i}[\"host {}\"]\n", h.replace('"', "#quot;")),
                "    end\n".to_owned(),
            )
        });
        for s in &p.stages {
            for i in &s.inputs {
                match &i.output {
                    Some(o) => out.push_str(&format!(
                        "    {} -. {o} .-> {}\n",
                        id(&i.stage),
                        id(&s.name)
                    )),
                    None => out.push_str(&format!("    {} --> {}\n", id(&i.stage), id(&s.name))),
                }
            }
        }
    } else {
        out.push_str(&format!(
            "digraph {} {{\n    rankdir=LR;\n    node [shape=box];\n",
            dot_id(&p.name)
        ));
        let node = |s: &spec::Stage| {
            format!(
                "{} [label={}];",
                dot_id(&s.name),
                dot_id(&format!("{}\n{}", s.name, s.type_name))
            )
        };
        stage_lines(&p, &mut out, node, |i, h| {
            (
                format!(
                    "    subgraph cluster_{i} {{\n        label={};\n",
                    dot_id(&format!("host {h}"))
                ),
                "    }\n".to_owned(),
            )
        });
        for s in &p.stages {
            for i in &s.inputs {
                match &i.output {
                    Some(o) => out.push_str(&format!(
                        "    {} -> {} [label={}, style=dashed];\n",
                        dot_id(&i.stage),
                        dot_id(&s.name),
                        dot_id(o)
                    )),
                    None => out.push_str(&format!(
                        "    {} -> {};\n",
                        dot_id(&i.stage),
                        dot_id(&s.name)
                    )),
                }
            }
        }
        out.push_str("}\n");
    }
    print!("{out}");
    OK
}

/// `rill router`: an embedded Zenoh router (no `zenohd` needed) that the
/// processes of a pipeline on several boxes connect to; it runs until
/// SIGTERM or Ctrl-C.
#[derive(clap::Args, Debug)]
pub struct RouterArgs {
    /// Endpoint to listen on, e.g. tcp/0.0.0.0:7447 (repeatable).
    #[arg(long = "listen", value_name = "ENDPOINT", required = true)]
    listen: Vec<String>,
    /// Another router to connect to (repeatable).
    #[arg(long = "connect", value_name = "ENDPOINT")]
    connect: Vec<String>,
}

pub async fn router(args: RouterArgs) -> u8 {
    let mut signals = StopSignals::register();
    let opts = rill_core::spec::ZenohOptions {
        mode: "router".into(),
        listen: args.listen,
        connect: args.connect,
        ..Default::default()
    };
    let session = match rill_runtime::transport::open(&opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return BAD_INPUT;
        }
    };
    eprintln!(
        "rill router {} listening on {} (SIGTERM or Ctrl-C stops it)",
        session.zid(),
        opts.listen.join(", ")
    );
    let why = signals.next().await;
    eprintln!("router stopping ({why})");
    let _ = session.close().await;
    OK
}

/// The flags of `rill run`.
#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// Run only these stages (comma separated); run the rest elsewhere.
    #[arg(long, value_delimiter = ',', conflicts_with = "host")]
    stages: Option<Vec<String>>,
    /// Run the stages placed on this host (`placement: {host: NAME}`),
    /// with its endpoints and mode from `options.hosts.NAME` (flags given
    /// here win).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Zenoh endpoint to listen on (replaces options.zenoh.listen).
    #[arg(long = "listen", value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Zenoh endpoint to connect to (replaces options.zenoh.connect).
    #[arg(long = "connect", value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// Zenoh mode of this process (replaces options.zenoh.mode): a router
    /// routes for the processes connected to it, and once finished stays
    /// up until the other processes of the pipeline have left.
    #[arg(long, value_parser = ["peer", "client", "router"])]
    mode: Option<String>,
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
}

/// `rill serve MODEL_DIR ...`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The model folder: numbered versions inside (`1/`, `2/`...), as
    /// RunInference's `model.dir`; a new version is swapped in while serving.
    model_dir: PathBuf,
    /// The model handler type.
    #[arg(long, default_value = "BurnMlp")]
    handler: String,
    /// The handler's config, as YAML, e.g. '{task: classify, labels: [a, b, c]}'.
    #[arg(long, value_name = "YAML")]
    handler_config: Option<String>,
    /// Where the HTTP server listens.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "HOST:PORT")]
    http: String,
    /// Also answer on the Zenoh queryable rill/serve-NAME/NAME/predict.
    #[arg(long)]
    zenoh: bool,
    /// The field holding the model's input (a list of numbers).
    #[arg(long, value_name = "FIELD")]
    input: Option<String>,
    /// An expression making the model's input from a request's fields
    /// (instead of --input), e.g. '[(temp - 60) / 10, vibration]'.
    #[arg(long, value_name = "EXPR")]
    preprocess: Option<String>,
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
    /// How long requests wait for others to fill a batch.
    #[arg(long, default_value = "2ms", value_name = "DURATION")]
    max_batch_delay: String,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The environment variable holding the bearer token requests must carry.
    #[arg(long, value_name = "NAME")]
    token_env: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics too (they are on the
    /// serving address already).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// No start-up lines and no summary.
    #[arg(long, short)]
    quiet: bool,
}

impl ServeArgs {
    pub fn run_flags(&self) -> RunFlags {
        RunFlags {
            stages: None,
            host: None,
            listen: Vec::new(),
            connect: Vec::new(),
            mode: None,
            quiet: self.quiet,
            reset_state: false,
            metrics_addr: self.metrics_addr,
        }
    }
}

/// Writes the one-stage pipeline of `rill serve` to
/// `.rill/serve/NAME.yaml` and returns its path.
pub fn serve_pipeline(a: &ServeArgs) -> Result<PathBuf, String> {
    let dir = &a.model_dir;
    if !dir.is_dir() {
        return Err(format!(
            "{}: no such folder (a model folder holds numbered versions: 1/, 2/...)",
            dir.display()
        ));
    }
    let name: String = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // JSON strings are YAML strings: paths and expressions quoted safely
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut cfg = format!(
        "        model_handler: {{type: {}, config: {}}}\n        model: {{dir: {}, watch: true}}\n",
        q(&a.handler),
        a.handler_config.as_deref().unwrap_or("{}"),
        q(&dir.to_string_lossy())
    );
    match (&a.preprocess, &a.input) {
        (Some(p), _) => cfg.push_str(&format!("        preprocess: {}\n", q(p))),
        (None, Some(i)) => cfg.push_str(&format!("        input: {}\n", q(i))),
        (None, None) => {}
    }
    cfg.push_str(&format!(
        "        batching: {{max_batch_size: {}, max_batch_delay: {}}}\n",
        a.max_batch_size,
        q(&a.max_batch_delay)
    ));
    let mut serve = format!("{{http: {}", q(&a.http));
    if a.zenoh {
        serve.push_str(", zenoh: true");
    }
    if let Some(t) = &a.token_env {
        serve.push_str(&format!(", token_env: {}", q(t)));
    }
    serve.push('}');
    let text = format!(
        "# written by `rill serve`: a RunInference stage that answers requests\npipeline:\n  name: serve-{name}\n  transforms:\n    - type: RunInference\n      name: {name}\n      resources: {{device: {}}}\n      serve: {serve}\n      config:\n{cfg}",
        q(&a.device)
    );
    let out = PathBuf::from(".rill/serve").join(format!("{name}.yaml"));
    std::fs::create_dir_all(".rill/serve")
        .and_then(|_| std::fs::write(&out, text))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    if !a.quiet {
        eprintln!("pipeline: {}", out.display());
    }
    Ok(out)
}

/// SIGTERM and SIGINT (Ctrl-C), registered before the run starts so a
/// signal during start-up is a graceful stop too.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on the next SIGTERM or SIGINT.
    async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => "SIGTERM",
            _ = recv(&mut self.int) => "Ctrl-C",
        }
    }
}

pub async fn run(cli: &Cli, file: PathBuf, flags: RunFlags) -> u8 {
    let RunFlags {
        mut stages,
        host,
        listen,
        connect,
        mut mode,
        quiet,
        reset_state,
        metrics_addr,
    } = flags;
    let mut signals = StopSignals::register();
    let mut listen = (!listen.is_empty()).then_some(listen);
    let mut connect = (!connect.is_empty()).then_some(connect);
    let mut machine = rill_ml::detect_machine();
    machine.only_host = host.clone();
    let pipeline = match load_for(cli, &file, &machine) {
        Ok(p) => Arc::new(p),
        Err(c) => return c,
    };
    if let Some(h) = &host {
        let Some(spec) = pipeline.options.hosts.get(h) else {
            let names: Vec<&str> = pipeline.options.hosts.keys().map(String::as_str).collect();
            eprintln!(
                "error: --host `{h}`: {}",
                if names.is_empty() {
                    format!("pipeline `{}` has no `options.hosts`", pipeline.name)
                } else {
                    format!(
                        "`options.hosts` has no such host (hosts: {})",
                        names.join(", ")
                    )
                }
            );
            return BAD_INPUT;
        };
        let here: Vec<String> = pipeline
            .stages
            .iter()
            .filter(|s| on_host(s, h))
            .map(|s| s.name.clone())
            .collect();
        if here.is_empty() {
            eprintln!(
                "error: --host `{h}`: no stage is placed on it (to route for the other hosts, run `rill router --listen ...` there)"
            );
            return BAD_INPUT;
        }
        stages = Some(here);
        listen = listen.or_else(|| spec.listen.clone());
        connect = connect.or_else(|| spec.connect.clone());
        mode = mode.or_else(|| spec.mode.clone());
    }
    // bound before any stage starts: a taken port is bad input, not a
    // half-started run
    let mut http = match bind_http(&pipeline, stages.as_deref(), metrics_addr).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return BAD_INPUT;
        }
    };
    let opts = RunOptions {
        stages,
        listen,
        connect,
        mode,
        base_dir: None,
        reset_state,
        keep_state: false,
        extensions: cli.extensions.clone(),
    };
    let run = match Run::start(pipeline.clone(), opts).await {
        Ok(r) => r,
        Err(e @ RunError::AlreadyFinished { .. }) => {
            eprintln!("{e}");
            return OK;
        }
        Err(RunError::BadInput(e)) => {
            eprintln!("error: {e}");
            return BAD_INPUT;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    let stopper = run.stopper();
    let metrics: Vec<_> = run.metrics().to_vec();
    let servers = match start_servers(&run, &pipeline, &mut http, quiet).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            stopper.stop();
            let _ = run.wait().await;
            return BAD_INPUT;
        }
    };
    let progress = (!quiet && std::io::stderr().is_terminal())
        .then(|| summary::Progress::start(metrics.clone()));
    let signals = tokio::spawn(async move {
        let first = signals.next().await;
        eprintln!(
            "\nstopping ({first}): committing what was processed; a second signal stops at once"
        );
        stopper.stop();
        let second = signals.next().await;
        // every commit is atomic and durable: stopping here is as safe as a
        // crash, and the next run resumes from the last commit
        eprintln!("stopped at once ({second}); the next run resumes from the last commit");
        std::process::exit(130);
    });
    let result = run.wait().await;
    signals.abort();
    for s in servers {
        s.abort();
    }
    if let Some(p) = progress {
        p.finish();
    }
    match result {
        Ok(report) => {
            if !quiet {
                summary::print(&report, "finished");
            }
            OK
        }
        Err(RunError::StageFailed {
            stage,
            error,
            restarts,
            history,
            report,
        }) => {
            if !quiet {
                summary::print(&report, "failed");
            }
            eprintln!(
                "error: pipeline `{}` failed: stage `{stage}` failed after {restarts} restart(s): {error}",
                pipeline.name
            );
            if history.len() > 1 {
                eprintln!("restart history of `{stage}`:");
                for h in history {
                    eprintln!("  {h}");
                }
            }
            if rill_runtime::supervisor::is_bad_input(&error) {
                BAD_INPUT
            } else {
                FAILED
            }
        }
        Err(RunError::Stopped(report)) => {
            if !quiet {
                summary::print(&report, "stopped");
                eprintln!(
                    "stopped on request; run the same command again to resume from where it stopped"
                );
            }
            OK
        }
        Err(RunError::BadInput(e)) => {
            eprintln!("error: {e}");
            BAD_INPUT
        }
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

/// A bound HTTP address: its listener, the served stages on it, and
/// whether it is `--metrics-addr`.
struct HttpListener {
    listener: tokio::net::TcpListener,
    stages: Vec<String>,
    metrics: bool,
}

/// Binds `--metrics-addr` and the `serve.http` address of every stage this
/// process runs (one listener per address), and checks their tokens are
/// set: all of it before any stage starts.
async fn bind_http(
    pipeline: &Pipeline,
    only: Option<&[String]>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<Vec<HttpListener>, String> {
    let mut wanted: Vec<(std::net::SocketAddr, Option<String>)> = Vec::new();
    if let Some(a) = metrics_addr {
        wanted.push((a, None));
    }
    for s in &pipeline.stages {
        if only.is_some_and(|o| !o.contains(&s.name)) {
            continue;
        }
        let Some(spec) = &s.serve else {
            continue;
        };
        if let Some(var) = &spec.token_env
            && std::env::var(var).map_or(true, |t| t.is_empty())
        {
            return Err(format!(
                "stage `{}`: `serve.token_env` names `{var}`, which is not set (or empty) in the environment",
                s.name
            ));
        }
        if let Some(a) = spec.http {
            wanted.push((a.0, Some(s.name.clone())));
        }
    }
    let mut out: Vec<(std::net::SocketAddr, HttpListener)> = Vec::new();
    for (addr, stage) in wanted {
        // port 0 binds a listener of its own each time
        let same = out.iter_mut().find(|(a, _)| *a == addr && addr.port() != 0);
        let l = match same {
            Some((_, l)) => l,
            None => {
                let listener =
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| match &stage {
                            Some(s) => format!("stage `{s}`: serve.http {addr}: {e}"),
                            None => format!("--metrics-addr {addr}: {e}"),
                        })?;
                out.push((
                    addr,
                    HttpListener {
                        listener,
                        stages: Vec::new(),
                        metrics: false,
                    },
                ));
                &mut out.last_mut().expect("pushed").1
            }
        };
        match stage {
            Some(s) => l.stages.push(s),
            None => l.metrics = true,
        }
    }
    Ok(out.into_iter().map(|(_, l)| l).collect())
}

/// Starts the HTTP servers bound by [`bind_http`] and the Zenoh
/// queryables of the served stages.
async fn start_servers(
    run: &Run,
    pipeline: &Pipeline,
    http: &mut Vec<HttpListener>,
    quiet: bool,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let served = run.served()?;
    let mut tasks = Vec::new();
    for l in http.drain(..) {
        let on: Vec<_> = served
            .iter()
            .filter(|s| l.stages.contains(&s.stage))
            .cloned()
            .collect();
        let addr = l.listener.local_addr().map_err(|e| e.to_string())?;
        if !quiet {
            if l.metrics {
                eprintln!("metrics: http://{addr}/metrics");
            }
            for s in &on {
                let name = s.queue.model().map_or(s.stage.clone(), |m| m.name);
                eprintln!(
                    "serving `{name}` (stage `{}`) on http://{addr}: KServe v2 /v2/models/{name}/infer, Vertex AI /v1/models/{name}:predict",
                    s.stage
                );
            }
        }
        if !on.is_empty() && !addr.ip().is_loopback() {
            let guarded = on.iter().all(|s| s.token.is_some());
            tracing::warn!(
                "serving on {addr}, which is not a loopback address: anyone who reaches it can query the model{}",
                if guarded {
                    ""
                } else {
                    " (no serve.token_env is set)"
                }
            );
        }
        let max_body = on
            .iter()
            .map(|s| s.spec.max_body.0)
            .max()
            .unwrap_or(1 << 20) as usize;
        let router = rill_runtime::serve::http::router(rill_runtime::serve::http::HttpConfig {
            pipeline: pipeline.name.clone(),
            stages: run.metrics().to_vec(),
            served: on,
            max_body,
        });
        tasks.push(rill_runtime::serve::http::spawn(l.listener, router));
    }
    for s in served.into_iter().filter(|s| s.spec.zenoh) {
        if !quiet {
            eprintln!("serving stage `{}` on Zenoh: {}", s.stage, s.predict_key());
        }
        tasks.push(rill_runtime::serve::zenoh::spawn(run.session(), s).await?);
    }
    Ok(tasks)
}

pub async fn tap(key: String, listen: Vec<String>, connect: Vec<String>, count: Option<u64>) -> u8 {
    if let Err(e) = zenoh::key_expr::KeyExpr::try_from(key.clone()) {
        eprintln!("error: `{key}` is not a valid Zenoh key expression: {e}");
        return BAD_INPUT;
    }
    let mut z = spec::ZenohOptions::default();
    if !listen.is_empty() {
        z.listen = listen;
    }
    z.connect = connect;
    let session = match rill_runtime::transport::open(&z).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return BAD_INPUT;
        }
    };
    let sub = match session
        .declare_subscriber(key.clone())
        .with(zenoh::handlers::FifoChannel::new(1024))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot subscribe to {key}: {e}");
            return FAILED;
        }
    };
    let mut seen = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let sample = tokio::select! {
            s = sub.recv_async() => match s { Ok(s) => s, Err(_) => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        let bytes = sample.payload().to_bytes();
        let lines: Vec<String> = match rill_core::wire::decode_data(&bytes) {
            Ok(rill_core::wire::DataMsg::Batch { records, .. }) => {
                records.iter().map(rill_core::json::record_to_json_line).collect()
            }
            Ok(_) => Vec::new(),
            Err(_) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(j) => vec![j.to_string()],
                Err(_) => vec![serde_json::json!({"key_expr": sample.key_expr().as_str(), "bytes": bytes.len()}).to_string()],
            },
        };
        for l in lines {
            if writeln!(stdout, "{l}").is_err() {
                return OK;
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                let _ = stdout.flush();
                let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
                return OK;
            }
        }
        let _ = stdout.flush();
    }
    OK
}
