//! Token counts for a vocabulary, in bounded memory: up to `cache`
//! distinct tokens are counted in a map; past that the map is written to
//! a sorted run file and emptied. The vocabulary is a merge of the runs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

pub struct Counts {
    map: HashMap<String, u64>,
    cache: usize,
    dir: PathBuf,
    runs: Vec<PathBuf>,
}

impl Counts {
    /// Counts spilling runs under `dir` (created when first needed).
    pub fn new(dir: PathBuf, cache: usize) -> Counts {
        Counts {
            map: HashMap::new(),
            cache: cache.max(1),
            dir,
            runs: Vec::new(),
        }
    }

    pub fn add(&mut self, token: String) -> std::io::Result<()> {
        *self.map.entry(token).or_default() += 1;
        if self.map.len() > self.cache {
            self.spill()?;
        }
        Ok(())
    }

    /// Runs written so far (for tests).
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("run-{}", self.runs.len()));
        let mut entries: Vec<(String, u64)> = self.map.drain().collect();
        entries.sort_unstable();
        let mut w = BufWriter::new(File::create(&path)?);
        for (t, c) in entries {
            w.write_all(&(t.len() as u32).to_le_bytes())?;
            w.write_all(t.as_bytes())?;
            w.write_all(&c.to_le_bytes())?;
        }
        w.flush()?;
        self.runs.push(path);
        Ok(())
    }

    /// The vocabulary: tokens counted at least `threshold` times, by
    /// falling count, ties by falling byte order (Beam's order), the first
    /// `top_k` of them.
    pub fn top(mut self, top_k: Option<usize>, threshold: u64) -> std::io::Result<Vec<String>> {
        let mut keep: Vec<(u64, String)> = Vec::new();
        // bounded by top_k when given: trimmed to it whenever it doubles
        let push = |keep: &mut Vec<(u64, String)>, t: String, c: u64| {
            if c < threshold.max(1) {
                return;
            }
            keep.push((c, t));
            if let Some(k) = top_k
                && keep.len() >= 2 * k.max(1024)
            {
                order(keep);
                keep.truncate(k);
            }
        };
        if self.runs.is_empty() {
            for (t, c) in std::mem::take(&mut self.map) {
                push(&mut keep, t, c);
            }
        } else {
            if !self.map.is_empty() {
                self.spill()?;
            }
            let mut readers: Vec<Run> = self
                .runs
                .iter()
                .map(Run::open)
                .collect::<std::io::Result<_>>()?;
            let mut heads: Vec<Option<(String, u64)>> = readers
                .iter_mut()
                .map(Run::next)
                .collect::<std::io::Result<_>>()?;
            // k-way merge by token: equal tokens' counts add up
            while let Some(min) = heads.iter().flatten().map(|(t, _)| t).min().cloned() {
                let mut total = 0;
                for (h, r) in heads.iter_mut().zip(readers.iter_mut()) {
                    if h.as_ref().is_some_and(|(t, _)| *t == min) {
                        total += h.as_ref().map_or(0, |(_, c)| *c);
                        *h = r.next()?;
                    }
                }
                push(&mut keep, min, total);
            }
            for p in &self.runs {
                let _ = std::fs::remove_file(p);
            }
        }
        order(&mut keep);
        if let Some(k) = top_k {
            keep.truncate(k);
        }
        Ok(keep.into_iter().map(|(_, t)| t).collect())
    }
}

fn order(v: &mut [(u64, String)]) {
    v.sort_unstable_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| b.1.as_bytes().cmp(a.1.as_bytes()))
    });
}

struct Run(BufReader<File>);

impl Run {
    fn open(p: &PathBuf) -> std::io::Result<Run> {
        Ok(Run(BufReader::new(File::open(p)?)))
    }

    fn next(&mut self) -> std::io::Result<Option<(String, u64)>> {
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut t = vec![0u8; u32::from_le_bytes(len) as usize];
        self.0.read_exact(&mut t)?;
        let mut c = [0u8; 8];
        self.0.read_exact(&mut c)?;
        let t = String::from_utf8(t)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(Some((t, u64::from_le_bytes(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(cache: usize, words: &[&str], top_k: Option<usize>, threshold: u64) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counts::new(dir.path().join("v"), cache);
        for w in words {
            c.add((*w).to_owned()).unwrap();
        }
        c.top(top_k, threshold).unwrap()
    }

    #[test]
    fn beam_order_and_filters() {
        let words = ["I", "like", "pie", "yum", "yum", "pie"];
        // yum and pie twice ('yum' > 'pie'), then like > I by bytes
        assert_eq!(count(100, &words, None, 0), ["yum", "pie", "like", "I"]);
        assert_eq!(count(100, &words, Some(2), 0), ["yum", "pie"]);
        assert_eq!(count(100, &words, None, 2), ["yum", "pie"]);
    }

    #[test]
    fn spilled_runs_give_the_same_vocabulary() {
        let mut rng = fastrand::Rng::with_seed(3);
        let words: Vec<String> = (0..20_000)
            .map(|_| format!("w{}", rng.u32(0..3000) / (1 + rng.u32(0..10))))
            .collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counts::new(dir.path().join("v"), 100);
        for w in &refs {
            c.add((*w).to_owned()).unwrap();
        }
        assert!(c.runs() > 5, "it spilled");
        let spilled = c.top(Some(500), 2).unwrap();
        assert_eq!(spilled, count(1_000_000, &refs, Some(500), 2));
        assert_eq!(spilled.len(), 500);
    }
}
