//! Dead-letter replay: the chosen letters of a stage run through it again
//! (after a fix) and through everything downstream of it. `rill dlq
//! replay` calls [`replay`]; the letters' files are in [`crate::dlq`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rill_core::Record;
use rill_core::node::{
    BuildContext, Emitter, Extensions, Node, NodeConfig, NodeError, NodeKind, ReplayRun, Source,
    SourceStatus,
};
use rill_core::spec::{Input, Pipeline, Stage, Timeouts};
use tracing::info;

use crate::dlq::{Letter, add_missing, dlq_path, read, remove, write_atomic};
use crate::{RunError, RunOptions};

/// A stage's dead-letter queue.
fn queue(p: &Pipeline, stage: &Stage) -> PathBuf {
    dlq_path(&p.options.state_dir, &p.name, &stage.key_name())
}

/// The source of a replay: the chosen dead letters' records.
#[derive(Debug, serde::Deserialize)]
struct DlqReplay {
    records: Vec<Record>,
}

impl NodeConfig for DlqReplay {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn build(&self, _: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Source(Box::new(ReplaySource(
            self.records.clone().into_iter(),
        ))))
    }
}

struct ReplaySource(std::vec::IntoIter<Record>);

impl Source for ReplaySource {
    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        for r in self.0.by_ref().take(max) {
            out.emit(r);
        }
        Ok(if self.0.len() == 0 {
            SourceStatus::Done
        } else {
            SourceStatus::More
        })
    }
}

const REPLAY: &str = "dlq-replay";

/// The pipeline of a replay: the letters as a source, the stage, and
/// everything downstream of it (inputs from elsewhere dropped).
fn replay_pipeline(p: &Pipeline, stage: &Stage, records: Vec<Record>, state: &Path) -> Pipeline {
    let down = p.downstream(&stage.name);
    let source = Stage {
        serve: None,
        name: REPLAY.into(),
        type_name: "DlqReplay".into(),
        kind: NodeKind::Source,
        node: Arc::new(DlqReplay { records }),
        inputs: Vec::new(),
        outputs: Vec::new(),
        error_output: None,
        retries: Default::default(),
        error_threshold: None,
        timeout: Timeouts::default(),
        restart: stage.restart,
        resources: Default::default(),
        placement: None,
        windowing_key: None,
        windowing: stage.windowing,
        watermark: stage.watermark,
        sends_watermarks: stage.sends_watermarks || stage.node.uses_watermarks(),
        mark: stage.mark,
    };
    let mut first = stage.clone();
    first.inputs = vec![Input {
        stage: REPLAY.into(),
        output: None,
        queue: p.options.queue,
        delivery: None,
        mark: stage.mark,
    }];
    let mut stages = vec![source, first];
    for s in &p.stages {
        if down.contains(&s.name) {
            let mut s = s.clone();
            s.inputs
                .retain(|i| i.stage == stage.name || down.contains(&i.stage));
            stages.push(s);
        }
    }
    let mut options = p.options.clone();
    options.state_dir = state.to_owned();
    options.zenoh = Default::default();
    Pipeline {
        name: format!("{}-{REPLAY}", p.name),
        file: p.file.clone(),
        stages,
        options,
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Letters run through the stage again.
    pub replayed: usize,
    /// Of those, how many failed again (back in the stage's queue).
    pub failed_again: usize,
    /// Whether this finished a replay that an earlier run left cut short.
    pub resumed: bool,
}

/// Why a replay did not run, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request cannot be done as asked (no such stage or letter, the
    /// pipeline is running, a stage cannot be built): exit 2.
    #[error("{0}")]
    BadInput(String),
    /// The replay failed while running; run it again to finish it.
    #[error("{0}")]
    Failed(String),
}

/// Runs the dead letters of `stage` (all, or those in `ids`) through the
/// stage again, as it is configured now, and through everything
/// downstream: what succeeds flows to the pipeline's sinks, what fails
/// again goes back to its queue, and the replayed letters leave the queue.
///
/// Crash-safe: the chosen letters first move, whole, to the replay's own
/// folder (`<state_dir>/<pipeline>/_dlq/<stage>.replay/`); a replay cut
/// short is found there and finished by the next call (with no `ids`).
/// Refused while the pipeline runs or has unfinished state.
pub async fn replay(p: &Pipeline, stage: &str, ids: &[String]) -> Result<Replayed, ReplayError> {
    let s = match p.stage(stage) {
        Some(s) if s.error_output.is_some() => s.clone(),
        Some(_) => {
            return Err(ReplayError::BadInput(format!(
                "stage `{stage}` has no `error_handling`, so it has no dead letters"
            )));
        }
        None => {
            let known: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(ReplayError::BadInput(format!(
                "`{stage}` is not a stage of `{}`; stages are: {}",
                p.name,
                known.join(", ")
            )));
        }
    };
    if s.kind == NodeKind::Source {
        return Err(ReplayError::BadInput(format!(
            "`{stage}` is a source: its dead letters are bad input; fix the input and run the pipeline again"
        )));
    }
    let path = queue(p, &s);
    let rp_probe = replay_pipeline(p, &s, Vec::new(), Path::new("."));
    check_idle(p, &rp_probe).map_err(ReplayError::BadInput)?;
    // the replay's own place: the letters it takes, its state, its sinks'
    // bases; a replay that was cut short is found there and finished
    let work = replay_dir(p, &s);
    let taken = work.join("letters.jsonl");
    let resumed = taken.exists();
    if !resumed && work.exists() {
        // a replay that finished, killed while its folder was removed (or
        // one killed before it had taken its letters): nothing in it counts
        std::fs::remove_dir_all(&work).map_err(|e| {
            ReplayError::Failed(format!("{} cannot be removed: {e}", work.display()))
        })?;
    }
    let chosen: Vec<Letter> = if resumed {
        if !ids.is_empty() {
            return Err(ReplayError::BadInput(format!(
                "an earlier replay of `{stage}` was cut short; replay the stage without ids to finish it first"
            )));
        }
        info!(stage, "finishing the replay that was cut short");
        read(&taken).map_err(ReplayError::BadInput)?
    } else {
        let letters = read(&path).map_err(ReplayError::BadInput)?;
        let chosen: Vec<Letter> = letters
            .into_iter()
            .filter(|l| ids.is_empty() || ids.contains(&l.id))
            .collect();
        if let Some(missing) = ids.iter().find(|i| !chosen.iter().any(|l| &l.id == *i)) {
            return Err(ReplayError::BadInput(format!(
                "no dead letter `{missing}` in {}",
                path.display()
            )));
        }
        if chosen.is_empty() {
            return Ok(Replayed {
                replayed: 0,
                failed_again: 0,
                resumed: false,
            });
        }
        // the chosen letters move to the replay first, whole, then leave
        // the queue: a crash leaves them in one place or both, never none
        let text: String = chosen.iter().map(|l| l.to_line()).collect();
        write_atomic(&taken, text.as_bytes()).map_err(ReplayError::Failed)?;
        chosen
    };
    let drop: HashSet<String> = chosen.iter().map(|l| l.id.clone()).collect();
    remove(&path, &drop).map_err(ReplayError::Failed)?;
    let records: Vec<Record> = chosen.iter().map(|l| l.record.clone()).collect();
    let state = work.join("state");
    let rp = replay_pipeline(p, &s, records, &state);
    let mut extensions = Extensions::default();
    extensions.insert(ReplayRun::new(work.join("bases.json")));
    // the replay keeps its state when it finishes: killed after that, it
    // is run again and its stages finish at once
    let opts = RunOptions {
        extensions,
        keep_state: true,
        ..Default::default()
    };
    match crate::run(Arc::new(rp.clone()), opts).await {
        Ok(_) => {}
        Err(RunError::BadInput(e)) => return Err(ReplayError::BadInput(e)),
        Err(e) => {
            return Err(ReplayError::Failed(format!(
                "the replay failed: {e}\nthe dead letters wait in {}; run the same command again to finish the replay",
                taken.display()
            )));
        }
    }
    // what failed again, in any stage of the replay, joins that stage's
    // queue (once, also when this is done twice)
    let mut n_again = 0;
    for rs in rp.stages.iter().filter(|x| x.error_output.is_some()) {
        let Some(orig) = p.stage(&rs.name) else {
            continue;
        };
        let again =
            std::fs::read_to_string(dlq_path(&state, &rp.name, &rs.key_name())).unwrap_or_default();
        if rs.name == s.name {
            n_again = again.lines().count();
        }
        add_missing(&queue(p, orig), &again).map_err(|e| {
            ReplayError::Failed(format!(
                "the replay ran, but updating the queue of `{}` failed: {e}",
                rs.name
            ))
        })?;
    }
    // the letters go first: that marks the replay finished, so a kill
    // while the rest is removed leaves a leftover the next call clears,
    // never a half-removed replay that would run again
    std::fs::remove_file(&taken)
        .and_then(|()| std::fs::remove_dir_all(&work))
        .map_err(|e| {
            ReplayError::Failed(format!(
                "the replay ran, but {} cannot be removed: {e}",
                work.display()
            ))
        })?;
    Ok(Replayed {
        replayed: chosen.len(),
        failed_again: n_again,
        resumed,
    })
}

/// `<state_dir>/<pipeline>/_dlq/<stage>.replay/`: a replay's letters, state
/// and sink bases, until it has finished.
fn replay_dir(p: &Pipeline, stage: &Stage) -> PathBuf {
    let q = queue(p, stage);
    q.with_extension("replay")
}

/// A replay writes into the pipeline's sinks and queues: refused while a
/// stage it runs has state of the pipeline's (the pipeline runs, or was
/// stopped or killed before its end and would resume over what the replay
/// wrote).
fn check_idle(p: &Pipeline, rp: &Pipeline) -> Result<(), String> {
    let unfinished = |s: &rill_core::spec::Stage| {
        format!(
            "stage `{}` of `{}` has the state of a run that has not finished (stopped or killed): a replay would write under what it resumes. Run the pipeline to its end (`rill run`) or discard its state (`--reset-state`), then replay",
            s.name, p.name
        )
    };
    let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    for shared in crate::store::shared_dirs(&p.options.state_dir.join(&p.name)) {
        let store = crate::store::ProcessStore::open(&shared, &names, None).map_err(|e| {
            format!(
                "the stages of `{}` are in use ({}): is the pipeline running? Replay its dead letters once it has finished",
                p.name, e.reason
            )
        })?;
        for rs in &rp.stages {
            let Some(s) = p.stage(&rs.name) else {
                continue;
            };
            if store.has_data(&s.key_name())
                && store
                    .stage(&s.key_name(), &s.name)
                    .map_err(|e| e.to_string())?
                    .has_state()
            {
                return Err(unfinished(s));
            }
        }
    }
    for rs in &rp.stages {
        let Some(s) = p.stage(&rs.name) else {
            continue;
        };
        let dir = crate::store::stage_dir(&p.options.state_dir, &p.name, &s.key_name());
        if !dir.exists() {
            continue;
        }
        let store = crate::store::SledStore::open(&dir, &s.name).map_err(|e| {
            format!(
                "stage `{}` of `{}` is in use ({}): is the pipeline running? Replay its dead letters once it has finished",
                s.name, p.name, e.reason
            )
        })?;
        if store.has_state() {
            return Err(unfinished(s));
        }
    }
    Ok(())
}
