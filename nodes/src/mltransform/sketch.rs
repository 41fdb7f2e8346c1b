//! Quantiles of a stream in bounded memory: the Greenwald–Khanna sketch.
//!
//! For `n` values and error `epsilon`, [`Quantiles::query`] of rank `r`
//! returns a value whose rank among the `n` is within `epsilon * n` of
//! `r`, and the sketch holds `O(log(epsilon * n) / epsilon)` tuples. Values
//! are buffered and merged in sorted runs; with fewer than `1 / (2 *
//! epsilon)` values nothing is merged away and the answers are exact.

/// `(value, g, delta)`: `g` is the rank gap to the previous tuple, `delta`
/// the uncertainty of the tuple's rank.
#[derive(Debug, Clone, Copy)]
struct Tuple {
    v: f64,
    g: u64,
    d: u64,
}

#[derive(Debug)]
pub struct Quantiles {
    eps: f64,
    n: u64,
    tuples: Vec<Tuple>,
    buf: Vec<f64>,
}

impl Quantiles {
    pub fn new(eps: f64) -> Quantiles {
        Quantiles {
            eps,
            n: 0,
            tuples: Vec::new(),
            buf: Vec::new(),
        }
    }

    fn cap(&self) -> usize {
        ((1.0 / (2.0 * self.eps)).ceil() as usize).max(256)
    }

    pub fn add(&mut self, v: f64) {
        self.buf.push(v);
        if self.buf.len() >= self.cap() {
            self.flush();
        }
    }

    /// Values taken so far.
    pub fn count(&self) -> u64 {
        self.n + self.buf.len() as u64
    }

    /// The tuples held (for the space bound's test).
    #[cfg(test)]
    fn size(&self) -> usize {
        self.tuples.len() + self.buf.len()
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.sort_unstable_by(f64::total_cmp);
        // a new tuple inside the range may be off by what compression
        // allows now; one past either end is exact
        let d_inner = (2.0 * self.eps * self.n as f64).floor() as u64;
        let old = std::mem::take(&mut self.tuples);
        let mut merged = Vec::with_capacity(old.len() + buf.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < buf.len() {
            if j < buf.len() && (i == old.len() || buf[j] < old[i].v) {
                let d = if i == 0 || i == old.len() { 0 } else { d_inner };
                merged.push(Tuple { v: buf[j], g: 1, d });
                j += 1;
            } else {
                merged.push(old[i]);
                i += 1;
            }
        }
        self.n += buf.len() as u64;
        self.tuples = merged;
        self.compress();
        buf.clear();
        self.buf = buf;
    }

    /// Merges neighbours while their combined uncertainty stays within
    /// `2 * epsilon * n`; the first and last tuples stay.
    fn compress(&mut self) {
        let len = self.tuples.len();
        if len < 3 {
            return;
        }
        let limit = (2.0 * self.eps * self.n as f64).floor() as u64;
        let mut out: Vec<Tuple> = Vec::with_capacity(len);
        let mut last = self.tuples[len - 1];
        for i in (1..len - 1).rev() {
            let t = self.tuples[i];
            if t.g + last.g + last.d <= limit {
                last.g += t.g;
            } else {
                out.push(last);
                last = t;
            }
        }
        out.push(last);
        out.push(self.tuples[0]);
        out.reverse();
        self.tuples = out;
    }

    /// A value of rank about `r` (0-based: 0 is the smallest), within
    /// `epsilon * count()` ranks.
    pub fn query(&mut self, r: u64) -> f64 {
        self.flush();
        let Some(first) = self.tuples.first() else {
            return 0.0;
        };
        let bound = (r + 1) as f64 + self.eps * self.n as f64;
        let mut rmin = 0u64;
        let mut prev = first.v;
        for t in &self.tuples {
            rmin += t.g;
            if (rmin + t.d) as f64 > bound {
                return prev;
            }
            prev = t.v;
        }
        prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_are_exact() {
        let mut q = Quantiles::new(0.01);
        for v in [5.0, 1.0, 4.0, 2.0, 6.0, 3.0] {
            q.add(v);
        }
        let got: Vec<f64> = (0..6).map(|r| q.query(r)).collect();
        assert_eq!(got, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn ranks_within_the_bound_in_bounded_space() {
        let eps = 0.005;
        let n = 400_000u64;
        let mut q = Quantiles::new(eps);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut all: Vec<f64> = (0..n).map(|_| rng.f64() * 1000.0).collect();
        for v in &all {
            q.add(*v);
        }
        all.sort_unstable_by(f64::total_cmp);
        assert!(q.size() < 5_000, "{} tuples", q.size());
        for k in 1..100 {
            let r = k * n / 100;
            let v = q.query(r);
            // the rank of the answer among all values
            let lo = all.partition_point(|x| *x < v) as f64;
            let hi = all.partition_point(|x| *x <= v) as f64;
            let err = eps * n as f64 + 1.0;
            assert!(
                lo - err <= r as f64 && r as f64 <= hi + err,
                "rank {r}: got a value of ranks {lo}..{hi}"
            );
        }
    }
}
