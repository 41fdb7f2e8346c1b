//! `rill dlq list|show|replay`: the dead-letter queues of a pipeline.
//!
//! Each stage with `error_handling` keeps its dead letters in
//! `<state_dir>/<pipeline>/_dlq/<stage>.jsonl` (see `rill_runtime::dlq`).
//! `replay` runs the chosen letters through the stage again, as it is
//! configured now (after a fix), and through everything downstream of it:
//! what succeeds flows to the pipeline's sinks (which add to their files),
//! what fails again goes back to the queue as a new dead letter, and the
//! replayed letters leave the queue.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rill_core::node::{
    BuildContext, Emitter, Extensions, Node, NodeConfig, NodeError, NodeKind, ReplayRun, Source,
    SourceStatus,
};
use rill_core::spec::{Input, Pipeline, Stage, Timeouts};
use rill_core::{NodeKind as Kind, Record};
use rill_runtime::dlq::{self, Letter};
use rill_runtime::{RunError, RunOptions};

use crate::commands::{BAD_INPUT, FAILED, OK, load};

fn queue(p: &Pipeline, stage: &Stage) -> PathBuf {
    dlq::dlq_path(&p.options.state_dir, &p.name, &stage.key_name())
}

/// The stages whose queues to look at: `--stage` or every one with an
/// error output.
fn stages<'a>(p: &'a Pipeline, only: Option<&str>) -> Result<Vec<&'a Stage>, u8> {
    match only {
        Some(n) => match p.stage(n) {
            Some(s) if s.error_output.is_some() => Ok(vec![s]),
            Some(_) => {
                eprintln!("error: stage `{n}` has no `error_handling`, so it has no dead letters");
                Err(BAD_INPUT)
            }
            None => {
                let known: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "error: `{n}` is not a stage of `{}`; stages are: {}",
                    p.name,
                    known.join(", ")
                );
                Err(BAD_INPUT)
            }
        },
        None => Ok(p
            .stages
            .iter()
            .filter(|s| s.error_output.is_some())
            .collect()),
    }
}

fn read(path: &Path) -> Result<Vec<Letter>, u8> {
    dlq::read(path).map_err(|e| {
        eprintln!("error: {e}");
        BAD_INPUT
    })
}

fn shorten(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        return one_line;
    }
    let mut out: String = one_line.chars().take(n).collect();
    out.push('…');
    out
}

pub fn list(file: &Path, stage: Option<&str>) -> u8 {
    let p = match load(file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let stages = match stages(&p, stage) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if stages.is_empty() {
        println!("pipeline `{}` has no stage with `error_handling`", p.name);
        return OK;
    }
    for s in stages {
        let path = queue(&p, s);
        let letters = match read(&path) {
            Ok(l) => l,
            Err(c) => return c,
        };
        println!(
            "{}: {} dead letter{} ({})",
            s.name,
            letters.len(),
            if letters.len() == 1 { "" } else { "s" },
            path.display()
        );
        let mut by_msg: BTreeMap<String, usize> = BTreeMap::new();
        for l in &letters {
            *by_msg.entry(shorten(&l.msg, 100)).or_default() += 1;
        }
        let mut v: Vec<_> = by_msg.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        for (msg, n) in v.iter().take(10) {
            println!("  {n:>7}  {msg}");
        }
    }
    OK
}

pub fn show(file: &Path, stage: Option<&str>, ids: &[String], limit: Option<usize>) -> u8 {
    let p = match load(file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let stages = match stages(&p, stage) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut shown = 0;
    let mut corrupt = 0;
    for s in stages {
        let path = queue(&p, s);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return BAD_INPUT;
            }
        };
        for (i, line) in text.lines().enumerate() {
            if limit.is_some_and(|l| shown >= l) {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            // a line that is not a letter is said, not skipped
            let l = match Letter::parse(line) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {}:{}: {e}", path.display(), i + 1);
                    corrupt += 1;
                    continue;
                }
            };
            if ids.is_empty() || ids.contains(&l.id) {
                println!("{line}");
                shown += 1;
            }
        }
    }
    if corrupt > 0 {
        eprintln!("error: {corrupt} line(s) of the queue are not dead letters (shown above)");
        return BAD_INPUT;
    }
    OK
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
        name: REPLAY.into(),
        type_name: "DlqReplay".into(),
        kind: Kind::Source,
        node: Arc::new(DlqReplay { records }),
        inputs: Vec::new(),
        outputs: Vec::new(),
        error_output: None,
        retries: Default::default(),
        error_threshold: None,
        timeout: Timeouts::default(),
        restart: stage.restart,
        resources: Default::default(),
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

pub async fn replay(file: &Path, stage: &str, ids: &[String]) -> u8 {
    let p = match load(file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let s = match stages(&p, Some(stage)) {
        Ok(v) => v[0].clone(),
        Err(c) => return c,
    };
    if s.kind == Kind::Source {
        eprintln!(
            "error: `{stage}` is a source: its dead letters are bad input; fix the input and run the pipeline again"
        );
        return BAD_INPUT;
    }
    let path = queue(&p, &s);
    let rp_probe = replay_pipeline(&p, &s, Vec::new(), Path::new("."));
    if let Err(e) = check_idle(&p, &rp_probe) {
        eprintln!("error: {e}");
        return BAD_INPUT;
    }
    // the replay's own place: the letters it takes, its state, its sinks'
    // bases; a replay that was cut short is found there and finished
    let work = replay_dir(&p, &s);
    let taken = work.join("letters.jsonl");
    let resumed = taken.exists();
    let chosen: Vec<Letter> = if resumed {
        if !ids.is_empty() {
            eprintln!(
                "error: an earlier replay of `{stage}` was cut short; run `rill dlq replay {} --stage {stage}` (without --id) to finish it first",
                file.display()
            );
            return BAD_INPUT;
        }
        eprintln!("{stage}: finishing the replay that was cut short");
        match read(&taken) {
            Ok(l) => l,
            Err(c) => return c,
        }
    } else {
        let letters = match read(&path) {
            Ok(l) => l,
            Err(c) => return c,
        };
        let chosen: Vec<Letter> = letters
            .into_iter()
            .filter(|l| ids.is_empty() || ids.contains(&l.id))
            .collect();
        if let Some(missing) = ids.iter().find(|i| !chosen.iter().any(|l| &l.id == *i)) {
            eprintln!("error: no dead letter `{missing}` in {}", path.display());
            return BAD_INPUT;
        }
        if chosen.is_empty() {
            println!("{stage}: no dead letters to replay");
            return OK;
        }
        // the chosen letters move to the replay first, whole, then leave
        // the queue: a crash leaves them in one place or both, never none
        let text: String = chosen.iter().map(|l| l.to_line()).collect();
        if let Err(e) = dlq::write_atomic(&taken, text.as_bytes()) {
            eprintln!("error: {e}");
            return FAILED;
        }
        chosen
    };
    let drop: HashSet<String> = chosen.iter().map(|l| l.id.clone()).collect();
    if let Err(e) = dlq::remove(&path, &drop) {
        eprintln!("error: {e}");
        return FAILED;
    }
    let records: Vec<Record> = chosen.iter().map(|l| l.record.clone()).collect();
    let state = work.join("state");
    let rp = replay_pipeline(&p, &s, records, &state);
    let mut extensions = Extensions::default();
    extensions.insert(ReplayRun::new(work.join("bases.json")));
    // the replay keeps its state when it finishes: killed after that, it
    // is run again and its stages finish at once
    let opts = RunOptions {
        extensions,
        keep_state: true,
        ..Default::default()
    };
    match rill_runtime::run(Arc::new(rp.clone()), opts).await {
        Ok(_) => {}
        Err(RunError::BadInput(e)) => {
            eprintln!("error: {e}");
            return BAD_INPUT;
        }
        Err(e) => {
            eprintln!(
                "error: the replay failed: {e}\nthe dead letters wait in {}; run the same command again to finish the replay",
                taken.display()
            );
            return FAILED;
        }
    }
    // what failed again, in any stage of the replay, joins that stage's
    // queue (once, also when this is done twice)
    let mut n_again = 0;
    for rs in rp.stages.iter().filter(|x| x.error_output.is_some()) {
        let Some(orig) = p.stage(&rs.name) else {
            continue;
        };
        let again = std::fs::read_to_string(dlq::dlq_path(&state, &rp.name, &rs.key_name()))
            .unwrap_or_default();
        if rs.name == s.name {
            n_again = again.lines().count();
        }
        if let Err(e) = dlq::add_missing(&queue(&p, orig), &again) {
            eprintln!(
                "error: the replay ran, but updating the queue of `{}` failed: {e}",
                rs.name
            );
            return FAILED;
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!(
            "error: the replay ran, but {} cannot be removed: {e}",
            work.display()
        );
        return FAILED;
    }
    let n = chosen.len();
    println!(
        "{stage}: replayed {n} dead letter{}: {} succeeded, {n_again} failed again (back in the queue)",
        if n == 1 { "" } else { "s" },
        n.saturating_sub(n_again)
    );
    OK
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
    for rs in &rp.stages {
        let Some(s) = p.stage(&rs.name) else {
            continue;
        };
        let dir = rill_runtime::store::stage_dir(&p.options.state_dir, &p.name, &s.key_name());
        if !dir.exists() {
            continue;
        }
        let store = rill_runtime::store::SledStore::open(&dir, &s.name).map_err(|e| {
            format!(
                "stage `{}` of `{}` is in use ({}): is the pipeline running? Replay its dead letters once it has finished",
                s.name, p.name, e.reason
            )
        })?;
        if store.has_state() {
            return Err(format!(
                "stage `{}` of `{}` has the state of a run that has not finished (stopped or killed): a replay would write under what it resumes. Run the pipeline to its end (`rill run`) or discard its state (`--reset-state`), then replay",
                s.name, p.name
            ));
        }
    }
    Ok(())
}
