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

/// One local stage, as the supervisor gets it.
pub struct ChildSpec {
    pub stage: Stage,
    pub shared: Arc<Mutex<StageShared>>,
    pub metrics: Arc<crate::StageMetrics>,
    /// The other local stages its restart strategy restarts with it
    /// (`rest_for_one`: those downstream; `one_for_all`: all).
    pub peers: Vec<usize>,
}

/// OTP-style restart intensity and exponential backoff for one stage: at
/// most `max_restarts` restarts within `within`; the n-th restart in the
/// window waits `min(initial × multiplier^(n-1), max)` plus jitter.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: rill_core::spec::RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(policy: rill_core::spec::RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Records a failure now: the delay before the restart, or `None` when
    /// the intensity is exceeded. `rand` in [0, 1) scales the jitter.
    pub fn on_failure(&mut self, rand: f64) -> Option<Duration> {
        self.on_failure_at(Instant::now(), rand)
    }

    /// [`Self::on_failure`] at a given time (the tests drive the clock).
    pub fn on_failure_at(&mut self, now: Instant, rand: f64) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.within.0)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.policy.max_restarts {
            return None;
        }
        self.recent.push_back(now);
        let delay = self.policy.backoff.delay(self.recent.len() as u32);
        Some(delay + delay.mul_f64(self.policy.backoff.jitter * rand))
    }
}

pub struct SupervisorArgs {
    pub stages: Vec<ChildSpec>,
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

/// The stop reason of a stage stopped to restart with a failed peer.
pub const RESTART: &str = "restart with a peer";

/// How long a graceful stop may take.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(8);

struct Child {
    stage: Stage,
    shared: Arc<Mutex<StageShared>>,
    metrics: Arc<crate::StageMetrics>,
    peers: Vec<usize>,
    attempt: u32,
    tracker: RestartTracker,
    history: Vec<String>,
    done: bool,
    actor: Option<ActorRef<crate::stage::StageMsg>>,
    /// Stopped by the supervisor to restart with a failed peer.
    restarting: bool,
    /// To be spawned again once its actor has stopped.
    respawn_when_stopped: bool,
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
    /// the restart intensity is exceeded and the run must fail. Its
    /// strategy's peers are stopped now and restarted with it.
    fn schedule_restart(
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        i: usize,
        error: &str,
    ) -> bool {
        let since = st.started.elapsed();
        let c = &mut st.children[i];
        c.history
            .push(format!("{:.3}s: {error}", since.as_secs_f64()));
        let Some(delay) = c.tracker.on_failure(fastrand::f64()) else {
            return false;
        };
        c.attempt += 1;
        c.metrics
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = c.stage.name.clone();
        let strategy = c.stage.restart.strategy;
        warn!(stage = %name, attempt = c.attempt, delay_ms = delay.as_millis() as u64, "stage failed: {error}; restarting");
        for j in c.peers.clone() {
            let p = &mut st.children[j];
            if p.done || p.restarting {
                continue;
            }
            p.restarting = true;
            p.attempt += 1;
            p.metrics
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            p.history.push(format!(
                "{:.3}s: restarted with `{name}` ({strategy:?})",
                since.as_secs_f64()
            ));
            warn!(stage = %p.stage.name, "restarting with `{name}` ({strategy:?})");
            if let Some(a) = &p.actor {
                a.stop(Some(RESTART.into()));
            }
        }
        myself.send_after(delay, move || SupervisorMsg::Respawn(name));
        true
    }

    /// A peer stopped for a failed stage's restart has stopped: spawn it
    /// again if the failed stage has already come back (else the failed
    /// stage's respawn does).
    async fn peer_stopped(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, i: usize) {
        if std::mem::take(&mut st.children[i].respawn_when_stopped) {
            st.children[i].restarting = false;
            if let Err(e) = Self::spawn_child(myself, st, i).await {
                Self::on_failure(myself, st, i, e);
            }
        }
    }

    /// A stage stopped during a graceful stop (drained, or failed while
    /// draining: its last commit stands).
    fn drained(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, i: usize) {
        st.children[i].done = true;
        if st.children.iter().all(|c| c.done || c.actor.is_none()) {
            myself.stop(None);
        }
    }

    fn fail(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, i: usize, error: String) {
        let c = &st.children[i];
        if unmendable(&error) {
            error!(stage = %c.stage.name, "stage failed: {error}");
        } else {
            error!(stage = %c.stage.name, "stage failed and its restart limit is spent: {error}");
        }
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
        if unmendable(&error) {
            // more records fail than the stage tolerates, or its input is
            // not what it was: restarting would not help
            st.children[i].history.push(format!(
                "{:.3}s: {error}",
                st.started.elapsed().as_secs_f64()
            ));
            Self::fail(myself, st, i, error);
            return;
        }
        if !Self::schedule_restart(myself, st, i, &error) {
            Self::fail(myself, st, i, error);
        }
    }
}

/// Whether a stage error is one no restart can mend.
fn unmendable(error: &str) -> bool {
    error.starts_with(crate::stage::THRESHOLD_EXCEEDED) || is_bad_input(error)
}

/// Whether a stage failed on bad input (the CLI exits 2): the error starts
/// with [`crate::stage::BAD_INPUT`] (a node's [`NodeError::BadInput`] does,
/// also when a rebuild of the node says so).
///
/// [`NodeError::BadInput`]: rill_core::node::NodeError::BadInput
pub fn is_bad_input(error: &str) -> bool {
    error.starts_with(crate::stage::BAD_INPUT)
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
                .map(|spec| Child {
                    tracker: RestartTracker::new(spec.stage.restart),
                    stage: spec.stage,
                    shared: spec.shared,
                    metrics: spec.metrics,
                    peers: spec.peers,
                    attempt: 0,
                    history: Vec::new(),
                    done: false,
                    actor: None,
                    restarting: false,
                    respawn_when_stopped: false,
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
                // the peers stopped with it come back with it
                for j in st.children[i].peers.clone() {
                    if !st.children[j].restarting {
                        continue;
                    }
                    st.children[j].respawn_when_stopped = true;
                    if st.children[j].actor.is_none() {
                        Self::peer_stopped(&myself, st, j).await;
                    }
                }
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
                if st.children[i].restarting && reason.as_deref() != Some(DONE) {
                    // stopped to restart with a failed peer
                    Self::peer_stopped(&myself, st, i).await;
                    return Ok(());
                }
                st.children[i].restarting = false;
                let stopping = matches!(*st.outcome.lock().unwrap(), Outcome::Stopped);
                if stopping {
                    Self::drained(&myself, st, i);
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
                if st.children[i].restarting {
                    // it failed while being stopped for a peer's restart
                    Self::peer_stopped(&myself, st, i).await;
                    return Ok(());
                }
                if matches!(*st.outcome.lock().unwrap(), Outcome::Stopped) {
                    Self::drained(&myself, st, i);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::spec::{Backoff, RestartPolicy};
    use rill_core::units::Dur;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            within: Dur(Duration::from_secs(10)),
            backoff: Backoff {
                initial: Dur(Duration::from_millis(100)),
                max: Dur(Duration::from_millis(300)),
                multiplier: 2.0,
                jitter: 0.5,
            },
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn backoff_and_intensity_window_are_exact() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = RestartTracker::new(policy());
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        // the n-th restart in the window: 100, 200, then capped at 300 ms
        assert_eq!(ms(t.on_failure_at(at(0), 0.0)), Some(100));
        assert_eq!(ms(t.on_failure_at(at(1000), 0.0)), Some(200));
        assert_eq!(ms(t.on_failure_at(at(2000), 0.0)), Some(300));
        // a 4th failure within 10 s of the first exceeds the intensity
        assert_eq!(ms(t.on_failure_at(at(10_000), 0.0)), None);
        // once the first restart is more than 10 s old, one is allowed
        // again, and the backoff counts only the restarts in the window
        assert_eq!(ms(t.on_failure_at(at(10_001), 0.0)), Some(300));
        // ... and after a quiet window the sequence starts over
        assert_eq!(ms(t.on_failure_at(at(30_000), 0.0)), Some(100));
        // jitter adds up to `jitter` x the delay
        let mut t = RestartTracker::new(policy());
        assert_eq!(ms(t.on_failure_at(at(0), 0.999_999)), Some(149));
    }
}
