//! The pipeline supervisor: spawns the local stages as linked actors,
//! restarts failed ones by their restart policy (OTP-style intensity and
//! exponential backoff), and ends the run when every stage is done or one
//! has failed past its limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use rill_core::node::Extensions;
use rill_core::spec::Stage;
use tokio::sync::Mutex;
use tracing::{error, info, warn};
use zenoh::Session;

use crate::stage::{DONE, StageActor, StageArgs, StageShared};

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Running,
    Completed,
    Failed {
        stage: String,
        error: String,
        restarts: u32,
        history: Vec<String>,
    },
    Stopped,
}

pub struct SupervisorArgs {
    pub stages: Vec<(Stage, Arc<Mutex<StageShared>>)>,
    pub session: Session,
    pub base_dir: std::path::PathBuf,
    pub extensions: Extensions,
    pub outcome: Arc<std::sync::Mutex<Outcome>>,
}

pub enum SupervisorMsg {
    Respawn(String),
    /// Graceful stop (a signal): every stage commits what it processed and
    /// stops; after [`DRAIN_LIMIT`] the rest are stopped as they are.
    Shutdown,
    /// Stop at once.
    ForceStop,
}

/// How long a graceful stop may take.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(8);

struct Child {
    stage: Stage,
    shared: Arc<Mutex<StageShared>>,
    attempt: u32,
    /// Restart times within the intensity window.
    recent: VecDeque<Instant>,
    history: Vec<String>,
    done: bool,
    actor: Option<ActorRef<crate::stage::StageMsg>>,
}

pub struct SupervisorState {
    children: Vec<Child>,
    by_id: HashMap<ractor::ActorId, usize>,
    session: Session,
    base_dir: std::path::PathBuf,
    extensions: Extensions,
    outcome: Arc<std::sync::Mutex<Outcome>>,
    started: Instant,
}

pub struct Supervisor;

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        i: usize,
    ) -> Result<(), String> {
        let c = &st.children[i];
        let args = StageArgs {
            shared: c.shared.clone(),
            session: st.session.clone(),
            attempt: c.attempt,
            base_dir: st.base_dir.clone(),
            extensions: st.extensions.clone(),
        };
        match Actor::spawn_linked(None, StageActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                st.by_id.insert(actor.get_id(), i);
                st.children[i].actor = Some(actor);
                Ok(())
            }
            Err(e) => Err(format!("could not start: {e}")),
        }
    }

    /// Applies the restart policy of child `i` after a failure; false when
    /// the restart intensity is exceeded and the run must fail.
    fn schedule_restart(
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        i: usize,
        error: &str,
    ) -> bool {
        let since = st.started.elapsed();
        let c = &mut st.children[i];
        let policy = c.stage.restart;
        let now = Instant::now();
        c.history
            .push(format!("{:.3}s: {error}", since.as_secs_f64()));
        while c
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.within.0)
        {
            c.recent.pop_front();
        }
        if c.recent.len() as u32 >= policy.max_restarts {
            return false;
        }
        c.recent.push_back(now);
        c.attempt += 1;
        let n = c.recent.len() as u32;
        let mut delay = policy.backoff.delay(n);
        if policy.backoff.jitter > 0.0 {
            delay += delay.mul_f64(policy.backoff.jitter * fastrand::f64());
        }
        let name = c.stage.name.clone();
        warn!(stage = %name, attempt = c.attempt, delay_ms = delay.as_millis() as u64, "stage failed: {error}; restarting");
        if let Ok(sh) = c.shared.try_lock() {
            sh.metrics
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            let shared = c.shared.clone();
            tokio::spawn(async move {
                shared
                    .lock()
                    .await
                    .metrics
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        myself.send_after(delay, move || SupervisorMsg::Respawn(name));
        true
    }

    fn fail(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, i: usize, error: String) {
        let c = &st.children[i];
        error!(stage = %c.stage.name, "stage failed and its restart limit is spent: {error}");
        *st.outcome.lock().unwrap() = Outcome::Failed {
            stage: c.stage.name.clone(),
            error,
            restarts: c.attempt,
            history: c.history.clone(),
        };
        myself.stop_children(None);
        myself.stop(None);
    }

    fn on_failure(
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        i: usize,
        error: String,
    ) {
        if st.children[i].done || !matches!(*st.outcome.lock().unwrap(), Outcome::Running) {
            return;
        }
        if !Self::schedule_restart(myself, st, i, &error) {
            Self::fail(myself, st, i, error);
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut st = SupervisorState {
            children: args
                .stages
                .into_iter()
                .map(|(stage, shared)| Child {
                    stage,
                    shared,
                    attempt: 0,
                    recent: VecDeque::new(),
                    history: Vec::new(),
                    done: false,
                    actor: None,
                })
                .collect(),
            by_id: HashMap::new(),
            session: args.session,
            base_dir: args.base_dir,
            extensions: args.extensions,
            outcome: args.outcome,
            started: Instant::now(),
        };
        // consumers first, so their subscriptions exist when producers start
        for i in (0..st.children.len()).rev() {
            if let Err(e) = Self::spawn_child(&myself, &mut st, i).await {
                return Err(format!("stage `{}` {e}", st.children[i].stage.name).into());
            }
        }
        if st.children.is_empty() {
            *st.outcome.lock().unwrap() = Outcome::Completed;
            myself.stop(None);
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Respawn(name) => {
                if !matches!(*st.outcome.lock().unwrap(), Outcome::Running) {
                    return Ok(());
                }
                let Some(i) = st.children.iter().position(|c| c.stage.name == name) else {
                    return Ok(());
                };
                info!(stage = %name, attempt = st.children[i].attempt, "restarting stage");
                if let Err(e) = Self::spawn_child(&myself, st, i).await {
                    Self::on_failure(&myself, st, i, e);
                }
            }
            SupervisorMsg::Shutdown => {
                {
                    let mut o = st.outcome.lock().unwrap();
                    if !matches!(*o, Outcome::Running) {
                        return Ok(());
                    }
                    *o = Outcome::Stopped;
                }
                info!("stopping: every stage commits what it has processed");
                let mut live = 0;
                for c in &st.children {
                    if let Some(a) = &c.actor
                        && !c.done
                    {
                        live += 1;
                        let _ = a.cast(crate::stage::StageMsg::Drain);
                    }
                }
                if live == 0 {
                    myself.stop(None);
                } else {
                    myself.send_after(DRAIN_LIMIT, || SupervisorMsg::ForceStop);
                }
            }
            SupervisorMsg::ForceStop => {
                warn!("stages did not stop in time; stopping them as they are");
                myself.stop_children(None);
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(i) = child_index(st, &cell) else {
                    return Ok(());
                };
                st.children[i].actor = None;
                let stopping = matches!(*st.outcome.lock().unwrap(), Outcome::Stopped);
                if stopping {
                    // draining (or failed while draining: its last commit
                    // stands)
                    st.children[i].done = true;
                    if st.children.iter().all(|c| c.done || c.actor.is_none()) {
                        myself.stop(None);
                    }
                } else if reason.as_deref() == Some(DONE) {
                    st.children[i].done = true;
                    info!(stage = %st.children[i].stage.name, "stage finished");
                    if st.children.iter().all(|c| c.done) {
                        let mut o = st.outcome.lock().unwrap();
                        if matches!(*o, Outcome::Running) {
                            *o = Outcome::Completed;
                        }
                        drop(o);
                        myself.stop(None);
                    }
                } else if matches!(*st.outcome.lock().unwrap(), Outcome::Running) {
                    let why = reason.unwrap_or_else(|| "stopped unexpectedly".into());
                    Self::on_failure(&myself, st, i, why);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(i) = child_index(st, &cell) else {
                    return Ok(());
                };
                st.children[i].actor = None;
                if matches!(*st.outcome.lock().unwrap(), Outcome::Stopped) {
                    st.children[i].done = true;
                    if st.children.iter().all(|c| c.done || c.actor.is_none()) {
                        myself.stop(None);
                    }
                    return Ok(());
                }
                let msg = err.to_string();
                let msg = if msg.is_empty() {
                    "panicked".to_owned()
                } else {
                    msg
                };
                Self::on_failure(&myself, st, i, msg);
            }
            _ => {}
        }
        Ok(())
    }
}

fn child_index(st: &mut SupervisorState, cell: &ActorCell) -> Option<usize> {
    st.by_id.remove(&cell.get_id())
}

/// Waits up to `d` in small steps until `f` holds.
pub async fn wait_until(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
