//! # rill-runtime
//!
//! Runs a checked [`Pipeline`]: every stage is a ractor actor under one
//! [`supervisor::Supervisor`] per process, and stages exchange records over
//! Zenoh using the protocol in [`protocol`], also when they share a process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let mut registry = rill_core::registry::Registry::new();
//! // rill_nodes::register_all(&mut registry);
//! let machine = rill_core::spec::Machine::detect();
//! let pipeline = rill_core::spec::load("configs/quickstart.yaml".as_ref(), &registry, &machine)?;
//! let report = rill_runtime::Run::start(Arc::new(pipeline), rill_runtime::RunOptions::default())
//!     .await?
//!     .wait()
//!     .await?;
//! println!("{} stages finished", report.stages.len());
//! # Ok(()) }
//! ```

pub mod dlq;
pub mod durable;
pub mod log;
pub mod metrics;
pub mod prometheus;
pub mod protocol;
pub mod replay;
pub mod resume;
pub mod serve;
pub mod stage;
pub mod store;
pub mod supervisor;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use rill_core::node::Extensions;
use rill_core::spec::{Delivery, Pipeline, Strategy};
use rill_core::state::{MemStore, StateStore, WriteBatch};
use rill_core::wire::{CtlMsg, encode_ctl};
use tokio::sync::Mutex;

pub use metrics::{StageMetrics, StageSnapshot};
pub use supervisor::Outcome;

use crate::stage::StageShared;
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};

/// How to run a pipeline in this process.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only these stages (all when `None`); the others run elsewhere.
    pub stages: Option<Vec<String>>,
    /// Zenoh endpoints to listen on / connect to, replacing `options.zenoh`.
    pub listen: Option<Vec<String>>,
    pub connect: Option<Vec<String>>,
    /// Zenoh mode (`peer`, `client` or `router`), replacing
    /// `options.zenoh.mode`.
    pub mode: Option<String>,
    /// Directory relative paths in configs resolve against (default: the
    /// working directory).
    pub base_dir: Option<PathBuf>,
    /// Discard the local stages' stored state before starting.
    pub reset_state: bool,
    /// Keep the stages' state when the run finishes (a finished run
    /// clears it otherwise): run again, the finished stages finish at once.
    pub keep_state: bool,
    /// Given to every node's build (besides the Zenoh session).
    pub extensions: Extensions,
}

impl RunOptions {
    /// The options of a whole run in `dir` (its state, and the paths of its
    /// pipeline, relative to it).
    pub fn in_dir(dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            base_dir: Some(dir.into()),
            ..Default::default()
        }
    }
}

/// Why a run could not start or did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Bad input: unknown stage names, bad endpoints, a node that cannot be
    /// built (missing file, ...). The CLI exits 2.
    #[error("{0}")]
    BadInput(String),
    /// A stage failed past its restart policy. The CLI exits 1.
    #[error(
        "stage `{stage}` failed after {restarts} restart(s): {error}{}",
        history_text(history)
    )]
    StageFailed {
        stage: String,
        error: String,
        restarts: u32,
        history: Vec<String>,
        report: RunReport,
    },
    /// Stopped by a signal before the end.
    #[error("stopped before the end")]
    Stopped(RunReport),
    /// Every stage this process runs finished an earlier run, which left
    /// its mark (`m/finished`) instead of its state: running it again would
    /// start over and cut its sinks' outputs back. Nothing was run; the CLI
    /// says so and exits 0 (`--reset-state` runs it again on purpose).
    #[error(
        "pipeline `{pipeline}` already finished{}: its outputs are as that run left them; nothing was run (to run it again from the start, discarding that run's record, use --reset-state)",
        finished_at(*at)
    )]
    AlreadyFinished {
        pipeline: String,
        /// When the last of its stages finished (seconds since the epoch).
        at: u64,
        stages: Vec<String>,
    },
    #[error("runtime error: {0}")]
    Internal(String),
}

/// ` at <UTC time>`, or nothing for an unknown time.
fn finished_at(secs: u64) -> String {
    if secs == 0 {
        return String::new();
    }
    format!(" at {}", rill_core::window::format_time(secs as i64 * 1000))
}

/// How long a finished consumer waits for an unreachable producer to
/// confirm the end of its stream (`RILL_END_WAIT_SECS`, default 300 s).
fn end_wait() -> Duration {
    Duration::from_secs(
        std::env::var("RILL_END_WAIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    )
}

/// The key a finished run leaves in each of its stages' stores, in place
/// of their state: the time it finished (seconds since the epoch, decimal).
/// Not the node's own `m/finished` ([`durable::FINISHED_KEY`]), which is
/// state: a stage whose node finished in a run that was then killed
/// resumes with the others.
pub const FINISHED_KEY: &[u8] = b"m/run_finished";

/// Beside [`FINISHED_KEY`]: the last acknowledgements a finished stage sent
/// to producers in other processes (JSON, a list of [`FinalAck`]), sent
/// again when the same stages are run again, for a producer that never
/// got them (it was cut off at the end, past the consumer's wait).
pub const FINAL_ACKS_KEY: &[u8] = b"m/final_acks";

/// A last acknowledgement kept with the finished mark.
#[derive(serde::Serialize, serde::Deserialize)]
struct FinalAck {
    stage: String,
    producer: String,
    ctl: String,
    consumer: String,
    epoch: u64,
    next: u64,
}

fn history_text(h: &[String]) -> String {
    if h.len() <= 1 {
        return String::new();
    }
    let mut s = String::from("\nrestart history:");
    for e in h {
        s.push_str("\n  ");
        s.push_str(e);
    }
    s
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub pipeline: String,
    pub stages: Vec<StageSnapshot>,
    pub elapsed: Duration,
}

/// A running pipeline.
pub struct Run {
    pipeline: Arc<Pipeline>,
    metrics: Vec<Arc<StageMetrics>>,
    supervisor: ActorRef<SupervisorMsg>,
    join: tokio::task::JoinHandle<()>,
    outcome: Arc<std::sync::Mutex<Outcome>>,
    session: zenoh::Session,
    started: Instant,
    stores: Vec<Arc<dyn StateStore>>,
    keep_state: bool,
    /// The local stages' shared state, for the last acknowledgements.
    shared: Vec<Arc<Mutex<stage::StageShared>>>,
    /// The process is a Zenoh router: once finished, it stays up while
    /// stages of other processes may route through it.
    router: bool,
    /// Set by [`Stopper::stop`]: ends the routing after the run too.
    stop_asked: Arc<std::sync::atomic::AtomicBool>,
}

/// How long a finished process keeps acknowledging the end of its input to
/// a producer in another process that has not finished yet.
const LINGER: Duration = Duration::from_secs(10);

impl Run {
    /// Opens the Zenoh session, builds every local node (a node that cannot
    /// be built is [`RunError::BadInput`]), and starts the stages.
    pub async fn start(pipeline: Arc<Pipeline>, opts: RunOptions) -> Result<Run, RunError> {
        let started = Instant::now();
        let local: Vec<_> = match &opts.stages {
            None => pipeline.stages.iter().collect(),
            Some(names) => {
                for n in names {
                    if pipeline.stage(n).is_none() {
                        let known: Vec<&str> =
                            pipeline.stages.iter().map(|s| s.name.as_str()).collect();
                        return Err(RunError::BadInput(format!(
                            "--stages names `{n}`, which is not a stage of `{}`; stages are: {}",
                            pipeline.name,
                            known.join(", ")
                        )));
                    }
                }
                pipeline
                    .stages
                    .iter()
                    .filter(|s| names.contains(&s.name))
                    .collect()
            }
        };
        let mut zopts = pipeline.options.zenoh.clone();
        if let Some(l) = &opts.listen {
            zopts.listen = l.clone();
        }
        if let Some(c) = &opts.connect {
            zopts.connect = c.clone();
        }
        if let Some(m) = &opts.mode {
            if !matches!(m.as_str(), "peer" | "client" | "router") {
                return Err(RunError::BadInput(format!(
                    "unknown Zenoh mode `{m}`: expected peer, client or router"
                )));
            }
            zopts.mode = m.clone();
        }
        let session = transport::open(&zopts).await.map_err(RunError::BadInput)?;
        let base_dir = match opts.base_dir {
            Some(d) => d,
            None => std::env::current_dir().map_err(|e| RunError::Internal(e.to_string()))?,
        };
        let mut extensions = opts.extensions.clone();
        extensions.insert(session.clone());

        let stores = open_stores(&pipeline, &local, &base_dir, opts.reset_state)
            .map_err(RunError::BadInput)?;
        if !opts.keep_state
            && let Some(e) = check_finished(&pipeline, &local, &stores)
        {
            if matches!(e, RunError::AlreadyFinished { .. }) {
                send_final_acks(&session, &pipeline.name, &stores).await;
            }
            let _ = session.close().await;
            return Err(e);
        }
        let mut stages = Vec::new();
        let mut metrics = Vec::new();
        for (s, store) in local.iter().zip(stores) {
            let m = Arc::new(StageMetrics::new(&s.name, &s.type_name));
            let state_root = base_dir.join(&pipeline.options.state_dir);
            let mut shared = StageShared::new(
                &session,
                &pipeline,
                s,
                store.clone(),
                m.clone(),
                &state_root,
            )
            .await
            .map_err(|e| match e {
                stage::SetupError::Store(reason) => RunError::BadInput(
                    store::StoreOpenError {
                        stage: s.name.clone(),
                        dir: store::stage_dir(
                            &base_dir.join(&pipeline.options.state_dir),
                            &pipeline.name,
                            &s.key_name(),
                        ),
                        reason,
                        reset_helps: true,
                    }
                    .to_string(),
                ),
                stage::SetupError::Threads(e) => {
                    RunError::Internal(format!("stage `{}`: {e}", s.name))
                }
                stage::SetupError::Zenoh(e) => {
                    RunError::Internal(format!("stage `{}`: {e}", s.name))
                }
            })?;
            // built on a thread of its own, within the startup timeout (a
            // slow model load is not a hang; a hung one is reported)
            let node = match stage::build_node(&shared, 0, &base_dir, &extensions).await {
                Ok(node) => node,
                Err(e) => {
                    // the stage's place in the file, as the checks give it
                    let place = pipeline
                        .place_of(s)
                        .map(|p| format!("{p}: "))
                        .unwrap_or_default();
                    let msg = format!("{place}stage `{}` ({}): {e}", s.name, s.type_name);
                    return Err(match e {
                        stage::BuildError::Node(_) => RunError::BadInput(msg),
                        _ => RunError::Internal(msg),
                    });
                }
            };
            *shared.prebuilt.get_mut().unwrap() = Some(node);
            metrics.push(m);
            stages.push(((*s).clone(), store, Arc::new(Mutex::new(shared))));
        }
        if let Err(e) = link_local_outputs(&stages, &local).await {
            let _ = session.close().await;
            return Err(e);
        }
        let stores: Vec<Arc<dyn StateStore>> = stages.iter().map(|(_, st, _)| st.clone()).collect();
        let names: Vec<String> = stages.iter().map(|(s, _, _)| s.name.clone()).collect();
        let shared: Vec<_> = stages.iter().map(|(_, _, sh)| sh.clone()).collect();
        let stages = stages
            .into_iter()
            .zip(metrics.iter().cloned())
            .map(|((s, _, shared), metrics)| {
                let peers: Vec<usize> = match s.restart.strategy {
                    Strategy::OneForOne => Vec::new(),
                    Strategy::RestForOne => {
                        let down = pipeline.downstream(&s.name);
                        (0..names.len())
                            .filter(|&j| down.contains(&names[j]))
                            .collect()
                    }
                    Strategy::OneForAll => {
                        (0..names.len()).filter(|&j| names[j] != s.name).collect()
                    }
                };
                supervisor::ChildSpec {
                    stage: s,
                    shared,
                    metrics,
                    peers,
                }
            })
            .collect();
        let outcome = Arc::new(std::sync::Mutex::new(Outcome::Running));
        let args = SupervisorArgs {
            stages,
            session: session.clone(),
            base_dir,
            extensions,
            outcome: outcome.clone(),
        };
        let (supervisor, join) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| RunError::Internal(e.to_string()))?;
        Ok(Run {
            pipeline,
            metrics,
            supervisor,
            join,
            outcome,
            session,
            started,
            stores,
            keep_state: opts.keep_state,
            shared,
            router: zopts.mode == "router",
            stop_asked: Arc::default(),
        })
    }

    /// A consumer's last acknowledgement (of its input's end) can be lost
    /// on the way (a link cut at the end of the stream), and a producer in
    /// another process waits for it: it is sent again, every 200 ms, until
    /// the producer shows it has it (its [`protocol::ended_key`] token for
    /// this consumer). While the producer is unreachable the process says
    /// what it waits for (after 10 s, then every 30 s), and gives up after
    /// `RILL_END_WAIT_SECS` (300 s) of it, with a warning naming the
    /// producer. A producer in this process has the acknowledgements
    /// already.
    async fn last_acks(&self) {
        let local = self.stage_keys_here();
        let end_wait = end_wait();
        for sh in &self.shared {
            let mut sh = sh.lock().await;
            let me = sh.consumer_id.clone();
            let stage = sh.stage.name.clone();
            for i in 0..sh.inputs.len() {
                let producer = sh.inputs[i].producer_key.clone();
                if local.contains(producer.as_str()) {
                    continue;
                }
                let ended = protocol::ended_key(&self.pipeline.name, &producer, &me);
                let alive = protocol::alive_keys(&self.pipeline.name, &producer);
                let started = Instant::now();
                let mut unreachable: Option<Instant> = None;
                let mut next_note = stage::UNREACHABLE_WARN;
                let mut said_waiting = false;
                loop {
                    if sh.ack(i).await.is_err() {
                        break;
                    }
                    // the producer has our acknowledgement of its end
                    if self.any_token(&ended).await {
                        if said_waiting {
                            tracing::warn!(
                                stage,
                                "producer `{producer}` confirmed the end of its stream after {:.1} s",
                                started.elapsed().as_secs_f64()
                            );
                        }
                        break;
                    }
                    let live = self.any_token(&alive).await;
                    if live {
                        unreachable = None;
                    } else if unreachable.is_none() {
                        unreachable = Some(Instant::now());
                    }
                    let waited = started.elapsed();
                    // unreachable that long, or reachable and silent that
                    // long (a producer of an older rill never confirms)
                    let gone_too_long = unreachable.is_some_and(|t| t.elapsed() >= end_wait);
                    if gone_too_long || waited >= end_wait * 2 {
                        let why = match unreachable {
                            Some(t) => {
                                format!("unreachable for {:.0} s", t.elapsed().as_secs_f64())
                            }
                            None => "reachable, but it did not confirm".to_owned(),
                        };
                        tracing::warn!(
                            stage,
                            "gave up after {:.0} s waiting for producer `{producer}` to confirm the end of its stream ({why}): if it still waits, run this command again once it is reachable; it acknowledges again and exits",
                            waited.as_secs_f64(),
                        );
                        break;
                    }
                    if waited >= next_note {
                        next_note += Duration::from_secs(30);
                        said_waiting = true;
                        match unreachable {
                            Some(t) => tracing::warn!(
                                stage,
                                "finished; waiting for producer `{producer}` to confirm it has the acknowledgement of its end: unreachable for {:.0} s (waiting at most {:.0} s for it)",
                                t.elapsed().as_secs_f64(),
                                end_wait.as_secs_f64()
                            ),
                            None => tracing::warn!(
                                stage,
                                "finished; waiting for producer `{producer}` (reachable) to confirm it has the acknowledgement of its end ({:.0} s)",
                                waited.as_secs_f64()
                            ),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Per stage, the last acknowledgements of its inputs whose producers
    /// run in other processes.
    async fn final_acks(&self) -> Vec<Vec<FinalAck>> {
        let local = self.stage_keys_here();
        let mut all = Vec::new();
        for sh in &self.shared {
            let sh = sh.lock().await;
            let mut v = Vec::new();
            for port in &sh.inputs {
                if local.contains(port.producer_key.as_str()) {
                    continue;
                }
                if let Some(epoch) = port.durable.epoch {
                    v.push(FinalAck {
                        stage: sh.stage.name.clone(),
                        producer: port.producer_key.clone(),
                        ctl: port.ctl.key_expr().as_str().to_owned(),
                        consumer: sh.consumer_id.clone(),
                        epoch,
                        next: port.durable.next,
                    });
                }
            }
            all.push(v);
        }
        all
    }

    /// Whether a liveliness token matching `keys` is visible now.
    async fn any_token(&self, keys: &str) -> bool {
        any_token(&self.session, keys).await
    }

    /// A producer that finished stays reachable until the consumers of its
    /// outputs in other processes have left (they leave once they see that
    /// their acknowledgement of its end arrived), for at most [`LINGER`].
    async fn linger_for_consumers(&self) {
        let local = self.stage_keys_here();
        let mut remote = std::collections::BTreeSet::new();
        for sh in &self.shared {
            let sh = sh.lock().await;
            for port in &sh.outputs {
                for (c, _) in port.log.log.acks() {
                    if !local.contains(c) {
                        remote.insert(c.to_owned());
                    }
                }
            }
        }
        let until = Instant::now() + LINGER;
        for c in remote {
            let keys = protocol::alive_keys(&self.pipeline.name, &c);
            while Instant::now() < until && self.any_token(&keys).await {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The key names of the stages this process runs.
    fn stage_keys_here(&self) -> std::collections::HashSet<String> {
        self.metrics
            .iter()
            .filter_map(|m| self.pipeline.stage(&m.stage))
            .map(|s| s.key_name())
            .collect()
    }

    /// The live counters of the local stages.
    /// The stages this process serves (`serve:`), with their tokens read
    /// from the environment; an error names a `serve.token_env` that is
    /// not set.
    pub fn served(&self) -> Result<Vec<serve::Served>, String> {
        let mut out = Vec::new();
        for m in &self.metrics {
            let Some(q) = m.requests.get() else {
                continue;
            };
            let Some(stage) = self.pipeline.stage(&m.stage) else {
                continue;
            };
            let Some(spec) = stage.serve.clone() else {
                continue;
            };
            let token = match &spec.token_env {
                None => None,
                Some(var) => match std::env::var(var) {
                    Ok(t) if !t.is_empty() => Some(t),
                    _ => {
                        return Err(format!(
                            "stage `{}`: `serve.token_env` names `{var}`, which is not set (or empty) in the environment",
                            stage.name
                        ));
                    }
                },
            };
            out.push(serve::Served {
                pipeline: self.pipeline.name.clone(),
                stage: stage.name.clone(),
                key: stage.key_name(),
                queue: q.clone(),
                spec,
                token,
            });
        }
        Ok(out)
    }

    /// The process's Zenoh session.
    pub fn session(&self) -> &zenoh::Session {
        &self.session
    }

    pub fn metrics(&self) -> &[Arc<StageMetrics>] {
        &self.metrics
    }

    /// A handle to ask the run to stop.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.supervisor.clone(), self.stop_asked.clone())
    }

    /// A router that finished stays up while stages of this pipeline run
    /// in other processes (their traffic may pass through it), until they
    /// have all left or the run is asked to stop; it says for whom.
    async fn route_for_others(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let me = self.session.zid().to_string();
        let keys = format!("rill/{}/*/alive/**", self.pipeline.name);
        let started = Instant::now();
        let mut next_note = Duration::ZERO;
        while !self.stop_asked.load(Relaxed) {
            let others = self.others_alive(&keys, &me).await;
            if others.is_empty() {
                if started.elapsed() >= Duration::from_secs(1) {
                    tracing::info!(
                        "every other process of the pipeline has left after {:.1} s; the router stops",
                        started.elapsed().as_secs_f64()
                    );
                }
                break;
            }
            if started.elapsed() >= next_note {
                let list = others.into_iter().collect::<Vec<_>>().join(", ");
                tracing::warn!(
                    "finished; still routing for the stages of other processes ({list}) until they leave (SIGTERM stops it)"
                );
                next_note += Duration::from_secs(60);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The stage keys of other sessions' liveliness tokens under `keys`.
    async fn others_alive(&self, keys: &str, me: &str) -> std::collections::BTreeSet<String> {
        let mut others = std::collections::BTreeSet::new();
        if let Ok(replies) = self.session.liveliness().get(keys).await {
            while let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_millis(500), replies.recv_async()).await
            {
                if let Ok(sample) = r.result() {
                    let key = sample.key_expr().as_str();
                    if let Some((_, session)) = protocol::token_of_alive_key(key)
                        && session != me
                    {
                        let stage = key.split('/').nth(2).unwrap_or_default();
                        others.insert(stage.to_owned());
                    }
                }
            }
        }
        others
    }

    /// Waits for the end of the run.
    pub async fn wait(mut self) -> Result<RunReport, RunError> {
        let _ = (&mut self.join).await;
        let report = RunReport {
            pipeline: self.pipeline.name.clone(),
            stages: self.metrics.iter().map(|m| m.snapshot()).collect(),
            elapsed: self.started.elapsed(),
        };
        if matches!(*self.outcome.lock().unwrap(), Outcome::Completed) {
            self.last_acks().await;
            self.linger_for_consumers().await;
            if self.router {
                self.route_for_others().await;
            }
        }
        let _ = self.session.close().await;
        let outcome = self.outcome.lock().unwrap().clone();
        match outcome {
            Outcome::Completed => {
                // a finished run leaves no state behind, only the mark that
                // it finished: running the same stages again says so instead
                // of starting over and cutting their outputs back
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let finals = self.final_acks().await;
                for (st, finals) in self.stores.iter().zip(finals).filter(|_| !self.keep_state) {
                    let mut mark = WriteBatch::default();
                    mark.put(FINISHED_KEY, now.to_string());
                    if !finals.is_empty()
                        && let Ok(v) = serde_json::to_vec(&finals)
                    {
                        mark.put(FINAL_ACKS_KEY, v);
                    }
                    if let Err(e) = st
                        .clear()
                        .and_then(|_| st.commit(mark))
                        .and_then(|_| st.flush())
                    {
                        tracing::warn!("cannot record that the run finished: {e}");
                    }
                }
                Ok(report)
            }
            Outcome::Failed {
                stage,
                error,
                restarts,
                history,
            } => Err(RunError::StageFailed {
                stage,
                error,
                restarts,
                history,
                report,
            }),
            Outcome::Stopped => Err(RunError::Stopped(report)),
            Outcome::Running => Err(RunError::Internal(
                "the supervisor stopped without an outcome".into(),
            )),
        }
    }
}

/// Asks a run to stop.
#[derive(Clone)]
pub struct Stopper(ActorRef<SupervisorMsg>, Arc<std::sync::atomic::AtomicBool>);

impl Stopper {
    pub fn stop(&self) {
        self.1.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.0.cast(SupervisorMsg::Shutdown);
    }
}

pub(crate) fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".into())
}

/// Opens the state stores of the local stages: sled, unless the pipeline
/// runs `best_effort` (memory only). A process that runs two or more stages
/// keeps them in one database, a tree per stage, so one flush makes all of
/// their commits durable: `<state_dir>/<pipeline>/_shared/` when it runs
/// the whole pipeline, `_shared-<hash of the set>/` when it runs some. A
/// process running one stage keeps it in `<state_dir>/<pipeline>/<stage>/`.
/// State left elsewhere by an earlier run (another layout, another split of
/// the stages over processes) is moved first; a store held by a process
/// running, or `--reset-state`, stops or discards it.
/// `RILL_STATE_LAYOUT=per-stage` keeps a store per stage in every process.
/// `RILL_TEST_FAIL_COMMITS_AFTER=N` wraps the stores in a store whose
/// commits fail after N (the fault tests' full disk).
fn open_stores(
    pipeline: &Pipeline,
    local: &[&rill_core::spec::Stage],
    base_dir: &std::path::Path,
    reset: bool,
) -> Result<Vec<Arc<dyn StateStore>>, String> {
    let root = base_dir.join(&pipeline.options.state_dir);
    let pipeline_dir = root.join(&pipeline.name);
    let fail_after: Option<u64> = std::env::var("RILL_TEST_FAIL_COMMITS_AFTER")
        .ok()
        .and_then(|v| v.parse().ok());
    let durable = pipeline.options.delivery != Delivery::BestEffort;
    let whole = local.len() == pipeline.stages.len();
    let keys: Vec<String> = local.iter().map(|s| s.key_name()).collect();
    let names: Vec<&str> = local.iter().map(|s| s.name.as_str()).collect();
    let target_dir = (durable
        && local.len() >= 2
        && std::env::var("RILL_STATE_LAYOUT").as_deref() != Ok("per-stage"))
    .then(|| store::shared_dir_for(&pipeline_dir, &keys, whole));
    let text = |e: store::StoreOpenError| e.to_string();
    // the starts of a pipeline's processes find and move their stages'
    // state one at a time (one may remove a store another is about to open)
    let _placement = if durable {
        Some(store::placement_lock(&pipeline_dir)?)
    } else {
        None
    };
    if reset && whole {
        // every stage's state is discarded: the shared stores go whole
        // (even one too damaged to open)
        for dir in store::shared_dirs(&pipeline_dir) {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("--reset-state: cannot remove {}: {e}", dir.display()))?;
        }
    }
    let target = match &target_dir {
        Some(dir) => Some(store::ProcessStore::open(dir, &names, Some(&keys)).map_err(text)?),
        None => None,
    };
    let mut out = Vec::new();
    let mut journal: Option<Arc<store::SlowJournal>> = None;
    for (s, key) in local.iter().zip(&keys) {
        let dir = store::stage_dir(&root, &pipeline.name, key);
        if reset {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| format!("--reset-state: cannot remove {}: {e}", dir.display()))?;
            }
            if let Some(t) = &target {
                t.drop_stage(key).map_err(text)?;
            }
        }
        if !durable {
            continue;
        }
        // the stage's own store, when another is its place now
        if let Some(t) = &target {
            store::move_into_shared(t, &dir, key, &s.name).map_err(text)?;
        }
    }
    if durable {
        // the stage's tree in a shared store of another set of stages
        for dir in store::shared_dirs(&pipeline_dir) {
            if Some(&dir) == target_dir.as_ref() {
                continue;
            }
            let held = store::shared_stages(&dir);
            let mine: Vec<usize> = (0..keys.len())
                .filter(|&i| held.as_ref().is_none_or(|h| h.contains(&keys[i])))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let other = store::ProcessStore::open(&dir, &names, None).map_err(text)?;
            for i in mine {
                let (key, name) = (&keys[i], &local[i].name);
                if reset || !other.has_data(key) {
                    if other.has_data(key) {
                        other.drop_stage(key).map_err(text)?;
                    }
                    continue;
                }
                let dest = match &target {
                    Some(t) => t.stage(key, name).map_err(text)?,
                    None => {
                        store::SledStore::open(&store::stage_dir(&root, &pipeline.name, key), name)
                            .map_err(text)?
                    }
                };
                store::move_out_of_shared(&other, &dest, key, name).map_err(text)?;
            }
            if other.is_empty() {
                // every stage has moved out: later starts need not open it
                drop(other);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    for (s, key) in local.iter().zip(&keys) {
        let store: Arc<dyn StateStore> = if !durable {
            Arc::new(MemStore::new())
        } else if let Some(t) = &target {
            Arc::new(t.stage(key, &s.name).map_err(text)?)
        } else {
            let dir = store::stage_dir(&root, &pipeline.name, key);
            Arc::new(store::SledStore::open(&dir, &s.name).map_err(text)?)
        };
        let store: Arc<dyn StateStore> = match fail_after {
            Some(n) => Arc::new(store::FailingStore::new(store, n)),
            None => store,
        };
        let store: Arc<dyn StateStore> = match slow_flush(&s.name) {
            Some((d, false)) => Arc::new(store::SlowFlushStore::new(store, d)),
            Some((d, true)) => Arc::new(store::SlowFlushStore::in_journal(
                store,
                d,
                journal.get_or_insert_with(Default::default).clone(),
            )),
            None => store,
        };
        out.push(store);
    }
    Ok(out)
}

/// `RILL_TEST_SLOW_FLUSH=STAGE:MS`: the flushes of stage STAGE's store
/// take MS milliseconds longer (a slow disk, for the fault tests); with
/// `*` for STAGE, every stage's, through one journal (true).
fn slow_flush(stage: &str) -> Option<(Duration, bool)> {
    let v = std::env::var("RILL_TEST_SLOW_FLUSH").ok()?;
    let (name, ms) = v.split_once(':')?;
    let d = Duration::from_millis(ms.parse().ok()?);
    match name {
        "*" => Some((d, true)),
        _ => (name == stage).then_some((d, false)),
    }
}

/// Why stages that finished an earlier run are not run: all of them
/// finished is [`RunError::AlreadyFinished`]; some is bad input (the
/// process runs a different set of stages than the run that finished).
fn check_finished(
    pipeline: &Pipeline,
    local: &[&rill_core::spec::Stage],
    stores: &[Arc<dyn StateStore>],
) -> Option<RunError> {
    let mut done = Vec::new();
    let mut not_done = Vec::new();
    let mut at = 0;
    for (s, st) in local.iter().zip(stores) {
        match st.get(FINISHED_KEY) {
            Ok(Some(v)) => {
                at = at.max(
                    std::str::from_utf8(&v)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0),
                );
                done.push(s.name.clone());
            }
            _ => not_done.push(s.name.clone()),
        }
    }
    if done.is_empty() {
        return None;
    }
    if not_done.is_empty() {
        return Some(RunError::AlreadyFinished {
            pipeline: pipeline.name.clone(),
            at,
            stages: done,
        });
    }
    Some(RunError::BadInput(format!(
        "in pipeline `{}`, stage(s) {} finished an earlier run and {} did not: this process runs another set of stages than that run did; run the stages as they were, or start the pipeline over with --reset-state",
        pipeline.name,
        done.join(", "),
        not_done.join(", ")
    )))
}

/// Whether a liveliness token matching `keys` is visible now.
async fn any_token(session: &zenoh::Session, keys: &str) -> bool {
    match session.liveliness().get(keys).await {
        Ok(replies) => {
            let mut any = false;
            while let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_millis(500), replies.recv_async()).await
            {
                any |= r.result().is_ok();
            }
            any
        }
        Err(_) => false,
    }
}

/// The stages of a finished run are run again: their last acknowledgements
/// to producers in other processes are sent again, for a producer that
/// still waits for one (it was unreachable when the run finished). A
/// producer that confirms, or cannot be reached within a few seconds, ends
/// it; one that is reachable is given up to 30 s.
async fn send_final_acks(session: &zenoh::Session, pipeline: &str, stores: &[Arc<dyn StateStore>]) {
    let finals: Vec<FinalAck> = stores
        .iter()
        .filter_map(|st| st.get(FINAL_ACKS_KEY).ok().flatten())
        .filter_map(|v| serde_json::from_slice::<Vec<FinalAck>>(&v).ok())
        .flatten()
        .collect();
    tracing::info!("{} last acknowledgement(s) to send again", finals.len());
    for f in finals {
        let ended = protocol::ended_key(pipeline, &f.producer, &f.consumer);
        let alive = protocol::alive_keys(pipeline, &f.producer);
        let Ok(msg) = encode_ctl(&CtlMsg::Ack {
            consumer: f.consumer.clone(),
            epoch: f.epoch,
            next: f.next,
        }) else {
            continue;
        };
        let started = Instant::now();
        let mut seen_live = false;
        loop {
            let _ = session.put(f.ctl.as_str(), msg.clone()).await;
            if any_token(session, &ended).await {
                tracing::warn!(
                    stage = f.stage,
                    "sent the last acknowledgement again: producer `{}` confirmed the end of its stream",
                    f.producer
                );
                break;
            }
            let live = any_token(session, &alive).await;
            if seen_live && !live {
                // it finished at once (no stage of this process holds it)
                tracing::warn!(
                    stage = f.stage,
                    "sent the last acknowledgement again: producer `{}` took it and finished",
                    f.producer
                );
                break;
            }
            seen_live |= live;
            let limit = if live { 30 } else { 10 };
            if started.elapsed() >= Duration::from_secs(limit) {
                if live {
                    tracing::warn!(
                        stage = f.stage,
                        "producer `{}` did not confirm the end of its stream in {limit} s",
                        f.producer
                    );
                } else {
                    tracing::info!(
                        stage = f.stage,
                        "producer `{}` is not reachable: the last acknowledgement sent to it again went nowhere (run this again while it runs, if it waits for it)",
                        f.producer
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs a pipeline to its end.
pub async fn run(pipeline: Arc<Pipeline>, opts: RunOptions) -> Result<RunReport, RunError> {
    Run::start(pipeline, opts).await?.wait().await
}

/// A stage of this process: its spec, its store, its shared part.
type LocalStage = (
    rill_core::spec::Stage,
    Arc<dyn StateStore>,
    Arc<Mutex<StageShared>>,
);

/// Under `exactly_once`, an output whose consumers all run in this process
/// publishes each commit as soon as it is written, before its flush; each
/// consumer's flushes wait for the producer's ([`stage::StageShared`]'s
/// durable marks), so a crash cannot leave a consumer's state durable with
/// input its producer lost. A record crossing N stages of one process then
/// waits for no flush on its way; the flushes follow it in order. Stages
/// whose stores share one log ([`StateStore::shared_log`]: the process's
/// shared store) need not wait for each other's flushes at all: the log
/// keeps the order, and one flush covers them all.
async fn link_local_outputs(
    stages: &[LocalStage],
    local: &[&rill_core::spec::Stage],
) -> Result<(), RunError> {
    let here: std::collections::HashSet<String> = local.iter().map(|s| s.key_name()).collect();
    let mut marks = std::collections::HashMap::new();
    for (_, store, sh) in stages {
        let mut sh = sh.lock().await;
        let exactly = sh.delivery == Delivery::ExactlyOnce && store.durable();
        for port in &mut sh.outputs {
            let mut consumers = port.log.log.acks().map(|(c, _)| c).peekable();
            port.local_early =
                exactly && consumers.peek().is_some() && consumers.all(|c| here.contains(c));
            // a consumer gets this output's messages only once the commit
            // holding them is written: through a log shared with it, its own
            // later commits cannot be durable without them
            let log = if port.local_early {
                store.shared_log()
            } else {
                None
            };
            marks.insert(
                port.publisher.key_expr().as_str().to_owned(),
                (port.mark.clone(), log),
            );
        }
    }
    for (_, store, sh) in stages {
        let mut sh = sh.lock().await;
        let stage = sh.stage.name.clone();
        for port in &mut sh.inputs {
            let Some((mark, log)) = marks.get(&port.data_key) else {
                continue;
            };
            // what the flush order promises, checked at every start: no
            // consumer's durable position passes its producer's durable log
            let (epoch, held) = *mark.borrow();
            if port.committed.epoch == Some(epoch) && port.committed.next > held {
                return Err(RunError::BadInput(format!(
                    "stage `{stage}` has consumed the records of `{}` up to {}, but the state of `{}` holds them only up to {held}: its state is older than `{stage}`'s (restored from an older copy?); run again with --reset-state",
                    port.label, port.committed.next, port.producer_key
                )));
            }
            if log.is_some() && *log == store.shared_log() {
                // one log for both: no flush of the producer to wait for
                continue;
            }
            port.upstream = Some(mark.subscribe());
        }
    }
    Ok(())
}
