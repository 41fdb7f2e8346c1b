//! `podcast-previews`: the data, the training, the evaluation and the
//! measurements of the podcast-preview example (README, "Podcast previews").
//!
//!     podcast-previews generate [--out DIR] [--episodes N] [--seconds S] [--seed S] [--first I]
//!     podcast-previews train [--episodes N] [--seconds S] [--epochs E] [--seed S] [--out DIR]
//!     podcast-previews evaluate [--previews FILE] [--labels DIR] [--floor F]
//!     podcast-previews land [--from DIR] [--to DIR] [--every SECONDS]
//!     podcast-previews bench [--episodes N] [--seconds S] [--every SECONDS] [--rill PATH]
//!
//! Run from the repository's root: the paths are those of
//! configs/podcast-previews*.yaml.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use podcast_previews::*;

const EPISODES: &str = "out/podcasts/episodes";
const PREVIEWS: &str = "out/podcasts/previews/previews.jsonl";
const STAGING: &str = "out/podcasts/staging";
const INBOX: &str = "out/podcasts/inbox";
const LIVE_PREVIEWS: &str = "out/podcasts/live-previews/previews.jsonl";
const MODEL: &str = "configs/models/podcast-scorer/1";
const BATCH_CONFIG: &str = "configs/podcast-previews.yaml";
const LIVE_CONFIG: &str = "configs/podcast-previews-live.yaml";

/// `--name value` options.
struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name} needs a number, got `{v}`")),
        }
    }
    fn path(&self, name: &str, default: &str) -> PathBuf {
        PathBuf::from(self.value(name).unwrap_or(default))
    }
    fn check(&self, known: &[&str]) -> Result<(), String> {
        let mut i = 0;
        while i < self.0.len() {
            let a = &self.0[i];
            if !known.contains(&a.as_str()) {
                return Err(format!(
                    "unknown option `{a}` (options: {})",
                    known.join(", ")
                ));
            }
            if self.0.get(i + 1).is_none() {
                return Err(format!("{a} needs a value"));
            }
            i += 2;
        }
        Ok(())
    }
}

fn mkdir(d: &Path) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))
}

/// Writes episodes `first..first+n` of the set made from `seed` into `dir`:
/// `episode-NNNN.wav` (written aside, then renamed: a watched folder never
/// sees half of one) and `episode-NNNN.labels.json`.
fn write_episodes(
    dir: &Path,
    n: usize,
    first: usize,
    seconds: f64,
    seed: u64,
) -> Result<(), String> {
    mkdir(dir)?;
    for i in first..first + n {
        let e = generate(&episode_name(i), seconds, episode_seed(seed, i));
        let wav = dir.join(format!("{}.wav", e.name));
        let temp = dir.join(format!(".{}.wav.part", e.name));
        e.write_wav(&temp)?;
        std::fs::write(
            dir.join(format!("{}.labels.json", e.name)),
            e.labels_json() + "\n",
        )
        .map_err(|err| format!("{}: {err}", dir.display()))?;
        std::fs::rename(&temp, &wav).map_err(|err| format!("{}: {err}", wav.display()))?;
    }
    Ok(())
}

fn cmd_generate(a: &Args) -> Result<(), String> {
    a.check(&["--out", "--episodes", "--seconds", "--seed", "--first"])?;
    let dir = a.path("--out", EPISODES);
    let n = a.num("--episodes", 50usize)?;
    let seconds = a.num("--seconds", 120.0)?;
    let started = Instant::now();
    write_episodes(
        &dir,
        n,
        a.num("--first", 0usize)?,
        seconds,
        a.num("--seed", 1u64)?,
    )?;
    println!(
        "{n} episodes of {seconds} s (16 kHz mono WAV, labels beside them) in {} ({:.1} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The best 30 s of per-second scores, as `BestWindow` finds it.
fn best_30(scores: &[f32]) -> (f64, f64) {
    let w = PREVIEW_SECONDS as usize;
    if scores.len() <= w {
        return (0.0, scores.len() as f64);
    }
    let mut best = (0, f32::MIN);
    for s in 0..=scores.len() - w {
        let m: f32 = scores[s..s + w].iter().sum();
        if m > best.1 {
            best = (s, m);
        }
    }
    (best.0 as f64, (best.0 + w) as f64)
}

fn cmd_train(a: &Args) -> Result<(), String> {
    a.check(&["--episodes", "--seconds", "--epochs", "--seed", "--out"])?;
    let n = a.num("--episodes", 24usize)?;
    let seconds = a.num("--seconds", 120.0)?;
    let epochs = a.num("--epochs", 4usize)?;
    let seed = a.num("--seed", 1000u64)?;
    let out = a.path("--out", MODEL);
    let started = Instant::now();
    // training episodes come from their own seed: the default held-out
    // set (`generate`, seed 1) is never trained on
    let train_set: Vec<Episode> = (0..n)
        .map(|i| generate(&episode_name(i), seconds, episode_seed(seed, i)))
        .collect();
    let t = train(&train_set, epochs, seed);
    println!(
        "trained on {} frames of {n} episodes, {epochs} epochs: loss {:.3} -> {:.3} ({:.1} s)",
        t.examples,
        t.first_loss,
        t.last_loss,
        started.elapsed().as_secs_f64()
    );
    // a check on episodes it has not seen, the preview found in process
    let held: Vec<Episode> = (0..10)
        .map(|i| generate(&episode_name(i), seconds, episode_seed(seed + 1, i)))
        .collect();
    let hits = held
        .iter()
        .filter(|e| {
            let (s, en) = best_30(&scores(&t.model, e));
            en.min(e.highlight.1) - s.max(e.highlight.0) >= OVERLAP_SECONDS
        })
        .count();
    println!("held-out check: the best 30 s overlaps the highlight in {hits} of 10 episodes");
    mkdir(&out)?;
    save(t.model, &out)?;
    println!("saved {}/model.mpk and model.json", out.display());
    Ok(())
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn labels(dir: &Path) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".labels.json"))
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Ok(out)
}

fn cmd_evaluate(a: &Args) -> Result<bool, String> {
    a.check(&["--previews", "--labels", "--floor"])?;
    let previews = read_jsonl(&a.path("--previews", PREVIEWS));
    let labels = labels(&a.path("--labels", EPISODES))?;
    let floor = a.num("--floor", 0.8)?;
    let o = overlap(&previews, &labels);
    println!(
        "{} of {} previews overlap their episode's highlight by at least {OVERLAP_SECONDS} s: {:.1} % (floor {:.0} %){}",
        o.hits,
        o.episodes,
        o.rate() * 100.0,
        floor * 100.0,
        if o.missing.is_empty() {
            String::new()
        } else {
            format!("; no preview for {}", o.missing.join(", "))
        }
    );
    Ok(o.rate() >= floor)
}

/// Moves the episodes of `from` into `to` one by one, `every` apart.
fn land(
    from: &Path,
    to: &Path,
    every: Duration,
    mut each: impl FnMut(&str, Instant),
) -> Result<usize, String> {
    mkdir(to)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(|e| format!("{}: {e}", from.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    names.sort();
    for (i, p) in names.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(every);
        }
        let name = p.file_name().unwrap_or_default();
        std::fs::rename(p, to.join(name)).map_err(|e| format!("{}: {e}", p.display()))?;
        let stem = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        each(&stem, Instant::now());
    }
    Ok(names.len())
}

fn cmd_land(a: &Args) -> Result<(), String> {
    a.check(&["--from", "--to", "--every"])?;
    let every = Duration::from_secs_f64(a.num("--every", 10.0)?);
    let n = land(
        &a.path("--from", STAGING),
        &a.path("--to", INBOX),
        every,
        |name, _| {
            println!("landed {name}");
        },
    )?;
    println!("{n} episodes landed");
    Ok(())
}

fn rill_bin(a: &Args) -> PathBuf {
    if let Some(p) = a.value("--rill") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("rill")
}

fn spawn_rill(bin: &Path, config: &str) -> Result<Child, String> {
    Command::new(bin)
        .args(["run", "-q", "--reset-state", config])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {} (build it: cargo build --release -p rill-cli, or give --rill): {e}", bin.display()))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn cmd_bench(a: &Args) -> Result<(), String> {
    a.check(&["--episodes", "--seconds", "--every", "--rill", "--seed"])?;
    let n = a.num("--episodes", 50usize)?;
    let seconds = a.num("--seconds", 120.0)?;
    let every = a.num("--every", 5.0)?;
    let seed = a.num("--seed", 1u64)?;
    let bin = rill_bin(a);
    let _ = std::fs::remove_dir_all("out/podcasts");
    write_episodes(Path::new(EPISODES), n, 0, seconds, seed)?;
    // batch: the whole folder, one run
    let started = Instant::now();
    let status = spawn_rill(&bin, BATCH_CONFIG)?
        .wait()
        .map_err(|e| e.to_string())?;
    let batch = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("the batch run failed: {status}"));
    }
    let o = overlap(
        &read_jsonl(Path::new(PREVIEWS)),
        &labels(Path::new(EPISODES))?,
    );
    println!(
        "batch: {n} episodes ({:.0} min of audio) in {batch:.1} s, {:.1} s per episode, {:.0}x real time; overlap {:.1} %",
        n as f64 * seconds / 60.0,
        batch / n as f64,
        n as f64 * seconds / batch,
        o.rate() * 100.0
    );
    // streaming: the same episodes land one by one in a watched folder
    std::fs::rename(EPISODES, STAGING).map_err(|e| e.to_string())?;
    let mut child = spawn_rill(&bin, LIVE_CONFIG)?;
    let mut landed: Vec<(String, Instant)> = Vec::new();
    let lander = {
        let every = Duration::from_secs_f64(every);
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let r = land(Path::new(STAGING), Path::new(INBOX), every, |name, at| {
                got.push((name.to_owned(), at));
            });
            r.map(|_| got)
        })
    };
    let mut seen: std::collections::HashMap<String, Instant> = Default::default();
    let deadline = Instant::now() + Duration::from_secs_f64(n as f64 * every + 600.0);
    while seen.len() < n && Instant::now() < deadline {
        for p in read_jsonl(Path::new(LIVE_PREVIEWS)) {
            if let Some(e) = p["episode"].as_str() {
                seen.entry(e.to_owned()).or_insert_with(Instant::now);
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!("the streaming run stopped: {s}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    landed.extend(lander.join().map_err(|_| "the lander panicked")??);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let mut lat: Vec<f64> = landed
        .iter()
        .filter_map(|(name, at)| seen.get(name).map(|s| s.duration_since(*at).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "streaming: {} of {n} episodes landed {every} s apart got their preview; from landing to preview p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "(a batch job started when the last episode landed would give it its preview {batch:.1} s later; every other episode waits for the batch too)"
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!(
            "usage: podcast-previews generate|train|evaluate|land|bench [options] (see README, \"Podcast previews\")"
        );
        return ExitCode::from(2);
    }
    let cmd = args.remove(0);
    let a = Args(args);
    let r = match cmd.as_str() {
        "generate" => cmd_generate(&a).map(|_| true),
        "train" => cmd_train(&a).map(|_| true),
        "evaluate" => cmd_evaluate(&a),
        "land" => cmd_land(&a).map(|_| true),
        "bench" => cmd_bench(&a).map(|_| true),
        other => Err(format!(
            "unknown command `{other}` (generate, train, evaluate, land, bench)"
        )),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("podcast-previews {cmd}: {e}");
            ExitCode::from(2)
        }
    }
}
