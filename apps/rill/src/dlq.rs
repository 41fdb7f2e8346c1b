//! `rill dlq list|show|replay`: the dead-letter queues of a pipeline.
//!
//! Each stage with `error_handling` keeps its dead letters in
//! `<state_dir>/<pipeline>/_dlq/<stage>.jsonl` (see `rill_runtime::dlq`).
//! `replay` runs the chosen letters through the stage again, as it is
//! configured now (after a fix), and through everything downstream of it
//! (`rill_runtime::replay` does it; this reports it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rill_core::spec::{Pipeline, Stage};
use rill_runtime::dlq::{self, Letter};
use rill_runtime::replay::ReplayError;

use crate::Cli;
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

/// The pipeline in `file` and the stages whose queues to look at.
fn load_stages(cli: &Cli, file: &Path, only: Option<&str>) -> Result<(Pipeline, Vec<Stage>), u8> {
    let p = load(cli, file)?;
    let chosen = stages(&p, only)?.into_iter().cloned().collect();
    Ok((p, chosen))
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

pub fn list(cli: &Cli, file: &Path, stage: Option<&str>) -> u8 {
    let (p, stages) = match load_stages(cli, file, stage) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let stages: Vec<&Stage> = stages.iter().collect();
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

pub fn show(
    cli: &Cli,
    file: &Path,
    stage: Option<&str>,
    ids: &[String],
    limit: Option<usize>,
) -> u8 {
    let (p, stages) = match load_stages(cli, file, stage) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let stages: Vec<&Stage> = stages.iter().collect();
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

/// `rill dlq replay`: [`rill_runtime::replay::replay`], reported.
pub async fn replay(cli: &Cli, file: &Path, stage: &str, ids: &[String]) -> u8 {
    let p = match load(cli, file) {
        Ok(p) => p,
        Err(c) => return c,
    };
    match rill_runtime::replay::replay(&p, stage, ids).await {
        Ok(r) if r.replayed == 0 => {
            println!("{stage}: no dead letters to replay");
            OK
        }
        Ok(r) => {
            let n = r.replayed;
            println!(
                "{stage}: {}replayed {n} dead letter{}: {} succeeded, {} failed again (back in the queue)",
                if r.resumed {
                    "finished a replay that was cut short: "
                } else {
                    ""
                },
                if n == 1 { "" } else { "s" },
                n.saturating_sub(r.failed_again),
                r.failed_again
            );
            OK
        }
        Err(ReplayError::BadInput(e)) => {
            eprintln!("error: {e}");
            BAD_INPUT
        }
        Err(ReplayError::Failed(e)) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}
