//! The operations of `MLTransform`, as Beam names them: their configs,
//! what each learns from the data (its artifact), and how each applies it.
//!
//! Definitions follow Beam's (which are tf.Transform's): population
//! variance, `sigmoid` for a column without range, quantile boundaries
//! `sorted[floor(k * N / B)]`, vocabularies by falling count with ties in
//! falling byte order, TF-IDF with `tf = count / len(row)` and no
//! normalisation. See docs/mltransform.md for where scikit-learn differs.

use serde::{Deserialize, Serialize};

use rill_core::node::ConfigError;
use rill_core::{Fields, Name, Value};

use super::sketch::Quantiles;
use super::vocab::Counts;

/// One operation, with its config (defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config")]
pub enum Op {
    ScaleToZScore(Columns),
    ScaleTo01(Columns),
    ScaleByMinMax(MinMaxConfig),
    Bucketize(BucketizeConfig),
    ApplyBuckets(ApplyBucketsConfig),
    ComputeAndApplyVocabulary(VocabConfig),
    #[serde(rename = "TFIDF")]
    Tfidf(TfidfConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub columns: Vec<Name>,
    /// Beam's `elementwise`: only `false` (statistics over every element
    /// of a list column) is offered.
    #[serde(default)]
    pub elementwise: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinMaxConfig {
    pub columns: Vec<Name>,
    #[serde(default)]
    pub min_value: f64,
    #[serde(default = "one")]
    pub max_value: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketizeConfig {
    pub columns: Vec<Name>,
    pub num_buckets: usize,
    /// The quantile sketch's rank error, as a fraction of the rows;
    /// Beam's default: `min(1 / num_buckets, 0.01)`.
    #[serde(default)]
    pub epsilon: Option<f64>,
    #[serde(default)]
    pub elementwise: bool,
}

impl BucketizeConfig {
    pub fn epsilon(&self) -> f64 {
        self.epsilon
            .unwrap_or_else(|| (1.0 / self.num_buckets as f64).min(0.01))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyBucketsConfig {
    pub columns: Vec<Name>,
    pub bucket_boundaries: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabConfig {
    pub columns: Vec<Name>,
    #[serde(default)]
    pub split_string_by_delimiter: Option<String>,
    #[serde(default = "minus_one")]
    pub default_value: i64,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub frequency_threshold: Option<u64>,
    #[serde(default)]
    pub num_oov_buckets: u64,
}

fn minus_one() -> i64 {
    -1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TfidfConfig {
    pub columns: Vec<Name>,
    #[serde(default)]
    pub vocab_size: Option<u64>,
    #[serde(default = "yes")]
    pub smooth: bool,
}

fn yes() -> bool {
    true
}

/// Beam's operations that embed with a hosted or downloaded model: refused.
pub const EMBEDDINGS: &[&str] = &[
    "SentenceTransformerEmbeddings",
    "InferenceAPIEmbeddings",
    "VertexAITextEmbeddings",
    "VertexAIImageEmbeddings",
    "TensorflowHubTextEmbeddings",
    "TensorflowHubImageEmbeddings",
    "OpenAITextEmbeddings",
];

/// Beam operations rill does not have (yet).
pub const OTHER_BEAM: &[&str] = &[
    "ScaleToGaussian",
    "ApplyBucketsWithInterpolation",
    "NGrams",
    "BagOfWords",
    "HashStrings",
    "DeduplicateTensorPerRow",
];

pub const NAMES: &[&str] = &[
    "ScaleToZScore",
    "ScaleTo01",
    "ScaleByMinMax",
    "Bucketize",
    "ApplyBuckets",
    "ComputeAndApplyVocabulary",
    "TFIDF",
];

impl Op {
    pub fn columns(&self) -> &[Name] {
        match self {
            Op::ScaleToZScore(c) | Op::ScaleTo01(c) => &c.columns,
            Op::ScaleByMinMax(c) => &c.columns,
            Op::Bucketize(c) => &c.columns,
            Op::ApplyBuckets(c) => &c.columns,
            Op::ComputeAndApplyVocabulary(c) => &c.columns,
            Op::Tfidf(c) => &c.columns,
        }
    }

    /// The columns the op writes.
    pub fn writes(&self) -> Vec<Name> {
        match self {
            Op::Tfidf(c) => c
                .columns
                .iter()
                .flat_map(|c| {
                    [
                        Name::from(format!("{c}_vocab_index")),
                        Name::from(format!("{c}_tfidf_weight")),
                    ]
                })
                .collect(),
            other => other.columns().to_vec(),
        }
    }

    /// Whether the op learns from the data (needs artifacts).
    pub fn analyses(&self) -> bool {
        !matches!(self, Op::ApplyBuckets(_))
    }

    /// Checks the config; errors are relative to the op's `config`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.columns().is_empty() {
            return Err(ConfigError::at(
                "columns",
                "`columns`: name at least one column",
            ));
        }
        match self {
            Op::ScaleToZScore(c) | Op::ScaleTo01(c) if c.elementwise => Err(ConfigError::at(
                "elementwise",
                "`elementwise`: only `false` is offered, statistics over every element of a list column",
            )),
            Op::ScaleByMinMax(c) if c.max_value <= c.min_value => Err(ConfigError::at(
                "max_value",
                format!(
                    "`max_value` must be above `min_value` ({} <= {})",
                    c.max_value, c.min_value
                ),
            )),
            Op::Bucketize(c) if c.num_buckets < 1 => Err(ConfigError::at(
                "num_buckets",
                "`num_buckets` must be at least 1",
            )),
            Op::Bucketize(c) if c.elementwise => Err(ConfigError::at(
                "elementwise",
                "`elementwise`: only `false` is offered (as in Beam, whose columns are lists)",
            )),
            Op::Bucketize(c) if !(c.epsilon() > 0.0 && c.epsilon() < 1.0) => Err(ConfigError::at(
                "epsilon",
                "`epsilon` must be between 0 and 1 (a fraction of the rows)",
            )),
            Op::ApplyBuckets(c) if c.bucket_boundaries.windows(2).any(|w| w[0] > w[1]) => {
                Err(ConfigError::at(
                    "bucket_boundaries",
                    "`bucket_boundaries` must be in increasing order",
                ))
            }
            Op::ComputeAndApplyVocabulary(c) if c.top_k == Some(0) => {
                Err(ConfigError::at("top_k", "`top_k` must be at least 1"))
            }
            Op::ComputeAndApplyVocabulary(c)
                if c.split_string_by_delimiter.as_deref() == Some("") =>
            {
                Err(ConfigError::at(
                    "split_string_by_delimiter",
                    "`split_string_by_delimiter`: give the delimiter characters, e.g. ' ,'",
                ))
            }
            Op::Tfidf(c) if c.vocab_size == Some(0) => Err(ConfigError::at(
                "vocab_size",
                "`vocab_size` must be at least 1",
            )),
            _ => Ok(()),
        }
    }
}

/// What an op learned for one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Learned {
    Moments {
        mean: f64,
        var: f64,
        count: u64,
    },
    Range {
        min: f64,
        max: f64,
    },
    Boundaries {
        boundaries: Vec<f64>,
    },
    Vocabulary {
        vocabulary: Vec<String>,
    },
    Idf {
        vocab_size: u64,
        rows: u64,
        df: Vec<(u64, u64)>,
    },
    Nothing {},
}

/// An op's analyser for one column: fed every value, then finished.
pub enum Analyser {
    Moments {
        n: u64,
        mean: f64,
        m2: f64,
    },
    Range {
        min: f64,
        max: f64,
    },
    Quantiles(Box<Quantiles>, usize),
    Vocabulary(Box<Counts>),
    Idf {
        vocab_size: u64,
        rows: u64,
        df: std::collections::HashMap<u64, u64>,
        seen: Vec<u64>,
    },
    Nothing,
}

/// Numbers of a scalar, list or tensor value, in order.
pub fn numbers(v: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    out.clear();
    match v {
        Value::Int(i) => out.push(*i as f64),
        Value::Float(f) => out.push(*f),
        Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        Value::List(l) => {
            for x in l {
                match x {
                    Value::Int(i) => out.push(*i as f64),
                    Value::Float(f) => out.push(*f),
                    Value::Bool(b) => out.push(f64::from(u8::from(*b))),
                    other => return Err(format!("a list holding {}, not numbers", kind(other))),
                }
            }
        }
        Value::Tensor(t) => match t.data() {
            rill_core::value::TensorData::F32(d) => out.extend(d.iter().map(|x| f64::from(*x))),
            rill_core::value::TensorData::F64(d) => out.extend_from_slice(d),
            rill_core::value::TensorData::I64(d) => out.extend(d.iter().map(|x| *x as f64)),
            rill_core::value::TensorData::U8(d) => out.extend(d.iter().map(|x| f64::from(*x))),
        },
        other => {
            return Err(format!(
                "{}, not a number or a list of numbers",
                kind(other)
            ));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Tensor(_) => "a tensor",
    }
}

/// The tokens of a string or list-of-strings value, split at any of
/// `delims`' characters (Beam's `split_string_by_delimiter`); empty tokens
/// are dropped, as Beam's string split drops them.
pub fn tokens(v: &Value, delims: Option<&str>, out: &mut Vec<String>) -> Result<bool, String> {
    out.clear();
    let mut push = |s: &str| match delims {
        Some(d) => out.extend(
            s.split(|c| d.contains(c))
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        ),
        None => out.push(s.to_owned()),
    };
    match v {
        Value::String(s) => {
            push(s);
            Ok(delims.is_some())
        }
        Value::Int(i) => {
            push(&i.to_string());
            Ok(delims.is_some())
        }
        Value::List(l) => {
            for x in l {
                match x {
                    Value::String(s) => push(s),
                    Value::Int(i) => push(&i.to_string()),
                    other => return Err(format!("a list holding {}, not strings", kind(other))),
                }
            }
            Ok(true)
        }
        other => Err(format!(
            "{}, not a string or a list of strings",
            kind(other)
        )),
    }
}

/// Term ids of an int or list-of-ints value (TFIDF's input).
pub fn ids(v: &Value, out: &mut Vec<i64>) -> Result<(), String> {
    out.clear();
    match v {
        Value::Int(i) => out.push(*i),
        Value::List(l) => {
            for x in l {
                match x {
                    Value::Int(i) => out.push(*i),
                    other => {
                        return Err(format!(
                            "a list holding {}, not term ids (put ComputeAndApplyVocabulary first)",
                            kind(other)
                        ));
                    }
                }
            }
        }
        Value::Tensor(t) => match t.data() {
            rill_core::value::TensorData::I64(d) => out.extend_from_slice(d),
            _ => return Err("a tensor of other than int64 term ids".into()),
        },
        other => {
            return Err(format!(
                "{}, not term ids (put ComputeAndApplyVocabulary first)",
                kind(other)
            ));
        }
    }
    Ok(())
}

fn field<'a>(fields: &'a Fields, col: &str) -> Result<&'a Value, String> {
    match fields.get(col) {
        None => Err(format!("`{col}`: no such field")),
        Some(Value::Null) => Err(format!("`{col}`: null")),
        Some(v) => Ok(v),
    }
}

impl Analyser {
    /// The analyser of `op` for one column; `vocab_size` is TFIDF's, as
    /// the op gives it or an earlier vocabulary implies it.
    pub fn new(
        op: &Op,
        vocab_size: Option<u64>,
        spill: &std::path::Path,
        cache: usize,
    ) -> Analyser {
        match op {
            Op::ScaleToZScore(_) => Analyser::Moments {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            Op::ScaleTo01(_) | Op::ScaleByMinMax(_) => Analyser::Range {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            },
            Op::Bucketize(c) => {
                Analyser::Quantiles(Box::new(Quantiles::new(c.epsilon())), c.num_buckets)
            }
            Op::ComputeAndApplyVocabulary(_) => {
                Analyser::Vocabulary(Box::new(Counts::new(spill.to_owned(), cache)))
            }
            Op::Tfidf(_) => Analyser::Idf {
                vocab_size: vocab_size.unwrap_or(1),
                rows: 0,
                df: Default::default(),
                seen: Vec::new(),
            },
            Op::ApplyBuckets(_) => Analyser::Nothing,
        }
    }

    /// Takes column `col` of a row.
    pub fn add(
        &mut self,
        op: &Op,
        fields: &Fields,
        col: &str,
        scratch: &mut Scratch,
    ) -> Result<(), NotTaken> {
        let v = field(fields, col)?;
        match self {
            Analyser::Moments { n, mean, m2 } => {
                numbers(v, &mut scratch.nums).map_err(|e| format!("`{col}`: {e}"))?;
                for &x in &scratch.nums {
                    if x.is_nan() {
                        continue;
                    }
                    *n += 1;
                    let d = x - *mean;
                    *mean += d / *n as f64;
                    *m2 += d * (x - *mean);
                }
            }
            Analyser::Range { min, max } => {
                numbers(v, &mut scratch.nums).map_err(|e| format!("`{col}`: {e}"))?;
                for &x in &scratch.nums {
                    if !x.is_nan() {
                        *min = min.min(x);
                        *max = max.max(x);
                    }
                }
            }
            Analyser::Quantiles(q, _) => {
                numbers(v, &mut scratch.nums).map_err(|e| format!("`{col}`: {e}"))?;
                for &x in &scratch.nums {
                    if !x.is_nan() {
                        q.add(x);
                    }
                }
            }
            Analyser::Vocabulary(c) => {
                let Op::ComputeAndApplyVocabulary(cfg) = op else {
                    unreachable!("a vocabulary analyser is made for ComputeAndApplyVocabulary")
                };
                tokens(
                    v,
                    cfg.split_string_by_delimiter.as_deref(),
                    &mut scratch.toks,
                )
                .map_err(|e| format!("`{col}`: {e}"))?;
                for t in scratch.toks.drain(..) {
                    // a text vocabulary holds no line breaks (as Beam's)
                    if !t.contains(['\n', '\r']) {
                        c.add(t)
                            .map_err(|e| NotTaken::Io(format!("vocabulary of `{col}`: {e}")))?;
                    }
                }
            }
            Analyser::Idf {
                vocab_size,
                rows,
                df,
                seen,
            } => {
                ids(v, &mut scratch.ids).map_err(|e| format!("`{col}`: {e}"))?;
                *rows += 1;
                seen.clear();
                seen.extend(
                    scratch
                        .ids
                        .iter()
                        .map(|i| i.rem_euclid(*vocab_size as i64) as u64),
                );
                seen.sort_unstable();
                seen.dedup();
                for t in seen.iter() {
                    *df.entry(*t).or_default() += 1;
                }
            }
            Analyser::Nothing => {}
        }
        Ok(())
    }

    pub fn finish(self, op: &Op) -> Result<Learned, String> {
        Ok(match self {
            Analyser::Moments { n, mean, m2 } => Learned::Moments {
                mean,
                var: if n == 0 { 0.0 } else { m2 / n as f64 },
                count: n,
            },
            // no values: no range (applying then takes Beam's sigmoid)
            Analyser::Range { min, max } if min > max => Learned::Range { min: 0.0, max: 0.0 },
            Analyser::Range { min, max } => Learned::Range { min, max },
            Analyser::Quantiles(mut q, buckets) => {
                let n = q.count();
                let boundaries = (1..buckets)
                    .map(|k| {
                        if n == 0 {
                            0.0
                        } else {
                            q.query((k as u64 * n) / buckets as u64)
                        }
                    })
                    .collect();
                Learned::Boundaries { boundaries }
            }
            Analyser::Vocabulary(c) => {
                let Op::ComputeAndApplyVocabulary(cfg) = op else {
                    unreachable!("a vocabulary analyser is made for ComputeAndApplyVocabulary")
                };
                let vocabulary = c
                    .top(cfg.top_k, cfg.frequency_threshold.unwrap_or(0))
                    .map_err(|e| format!("vocabulary: {e}"))?;
                Learned::Vocabulary { vocabulary }
            }
            Analyser::Idf {
                vocab_size,
                rows,
                df,
                ..
            } => {
                let mut df: Vec<(u64, u64)> = df.into_iter().collect();
                df.sort_unstable();
                Learned::Idf {
                    vocab_size,
                    rows,
                    df,
                }
            }
            Analyser::Nothing => Learned::Nothing {},
        })
    }
}

/// Why an analyser did not take a row's value.
pub enum NotTaken {
    /// The value is not one the transform reads: the row is left out of
    /// the learning (applying sends it to the error output).
    Row(String),
    /// Spilling counts to disk failed: the learning cannot go on.
    Io(String),
}

impl From<String> for NotTaken {
    fn from(e: String) -> NotTaken {
        NotTaken::Row(e)
    }
}

/// Buffers reused across rows.
#[derive(Default)]
pub struct Scratch {
    pub nums: Vec<f64>,
    pub toks: Vec<String>,
    pub ids: Vec<i64>,
}

/// An op ready to apply to one column: its artifact in the form applying
/// wants.
pub enum Applier {
    ZScore {
        mean: f64,
        std: f64,
    },
    MinMax {
        min: f64,
        max: f64,
        lo: f64,
        hi: f64,
    },
    Buckets(Vec<f64>),
    Vocabulary {
        index: std::collections::HashMap<String, i64>,
        size: u64,
        default: i64,
        oov: u64,
        delims: Option<String>,
    },
    Tfidf {
        vocab_size: u64,
        rows: u64,
        df: std::collections::HashMap<u64, u64>,
        smooth: bool,
    },
}

impl Applier {
    pub fn new(op: &Op, learned: &Learned) -> Result<Applier, String> {
        Ok(match (op, learned) {
            (Op::ScaleToZScore(_), Learned::Moments { mean, var, .. }) => Applier::ZScore {
                mean: *mean,
                std: var.sqrt(),
            },
            (Op::ScaleTo01(_), Learned::Range { min, max }) => Applier::MinMax {
                min: *min,
                max: *max,
                lo: 0.0,
                hi: 1.0,
            },
            (Op::ScaleByMinMax(c), Learned::Range { min, max }) => Applier::MinMax {
                min: *min,
                max: *max,
                lo: c.min_value,
                hi: c.max_value,
            },
            (Op::Bucketize(_), Learned::Boundaries { boundaries }) => {
                Applier::Buckets(boundaries.clone())
            }
            (Op::ApplyBuckets(c), _) => Applier::Buckets(c.bucket_boundaries.clone()),
            (Op::ComputeAndApplyVocabulary(c), Learned::Vocabulary { vocabulary }) => {
                Applier::Vocabulary {
                    index: vocabulary
                        .iter()
                        .enumerate()
                        .map(|(i, t)| (t.clone(), i as i64))
                        .collect(),
                    size: vocabulary.len() as u64,
                    default: c.default_value,
                    oov: c.num_oov_buckets,
                    delims: c.split_string_by_delimiter.clone(),
                }
            }
            (
                Op::Tfidf(c),
                Learned::Idf {
                    vocab_size,
                    rows,
                    df,
                },
            ) => Applier::Tfidf {
                vocab_size: *vocab_size,
                rows: *rows,
                df: df.iter().copied().collect(),
                smooth: c.smooth,
            },
            (op, l) => return Err(format!("the artifact {l:?} does not fit {op:?}")),
        })
    }

    /// Applies to column `col` of a row.
    pub fn apply(
        &self,
        fields: &mut Fields,
        col: &Name,
        scratch: &mut Scratch,
    ) -> Result<(), String> {
        let v = field(fields, col)?;
        let list = !matches!(
            v,
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::String(_)
        );
        let out = match self {
            Applier::ZScore { mean, std } => {
                numbers(v, &mut scratch.nums).map_err(|e| format!("`{col}`: {e}"))?;
                floats(
                    list,
                    scratch.nums.iter().map(|x| {
                        let c = x - mean;
                        if *std != 0.0 { c / std } else { c }
                    }),
                )
            }
            Applier::MinMax { min, max, lo, hi } => {
                numbers(v, &mut scratch.nums).map_err(|e| format!("`{col}`: {e}"))?;
                floats(
                    list,
                    scratch.nums.iter().map(|x| {
                        let unit = if min < max {
                            (x - min) / (max - min)
                        } else {
                            // no range to scale by: Beam's sigmoid
                            1.0 / (1.0 + (-x).exp())
                        };
                        unit * (hi - lo) + lo
                    }),
                )
            }
            Applier::Buckets(b) => {
                numbers(v, &mut scratch.nums).map_err(|e| format!("`{col}`: {e}"))?;
                ints(
                    list,
                    scratch.nums.iter().map(|x| {
                        if x.is_nan() {
                            b.len() as i64
                        } else {
                            b.partition_point(|e| e <= x) as i64
                        }
                    }),
                )
            }
            Applier::Vocabulary {
                index,
                size,
                default,
                oov,
                delims,
            } => {
                let split = tokens(v, delims.as_deref(), &mut scratch.toks)
                    .map_err(|e| format!("`{col}`: {e}"))?;
                ints(
                    split,
                    scratch.toks.iter().map(|t| match index.get(t) {
                        Some(i) => *i,
                        None if *oov > 0 => (*size + fingerprint(t) % oov) as i64,
                        None => *default,
                    }),
                )
            }
            Applier::Tfidf {
                vocab_size,
                rows,
                df,
                smooth,
            } => {
                ids(v, &mut scratch.ids).map_err(|e| format!("`{col}`: {e}"))?;
                let len = scratch.ids.len() as f64;
                let mut counts: std::collections::BTreeMap<u64, u64> = Default::default();
                for i in &scratch.ids {
                    *counts
                        .entry(i.rem_euclid(*vocab_size as i64) as u64)
                        .or_default() += 1;
                }
                let n = *rows as f64;
                let mut index = Vec::with_capacity(counts.len());
                let mut weight = Vec::with_capacity(counts.len());
                for (t, c) in counts {
                    let d = df.get(&t).copied().unwrap_or(0) as f64;
                    let idf = if *smooth {
                        ((n + 1.0) / (d + 1.0)).ln() + 1.0
                    } else if d > 0.0 {
                        (n / d).ln() + 1.0
                    } else {
                        // a term no analysed row held: tf.Transform divides
                        // by zero here; rill gives the smooth idf instead
                        ((n + 1.0) / 1.0).ln() + 1.0
                    };
                    index.push(Value::Int(t as i64));
                    weight.push(Value::Float(c as f64 / len * idf));
                }
                fields.insert(format!("{col}_vocab_index").into(), Value::List(index));
                fields.insert(format!("{col}_tfidf_weight").into(), Value::List(weight));
                return Ok(());
            }
        };
        fields.insert(col.clone(), out);
        Ok(())
    }
}

fn floats(list: bool, it: impl Iterator<Item = f64>) -> Value {
    let mut v: Vec<Value> = it.map(Value::Float).collect();
    if !list && v.len() == 1 {
        v.pop().unwrap_or_default()
    } else {
        Value::List(v)
    }
}

fn ints(list: bool, it: impl Iterator<Item = i64>) -> Value {
    let mut v: Vec<Value> = it.map(Value::Int).collect();
    if !list && v.len() == 1 {
        v.pop().unwrap_or_default()
    } else {
        Value::List(v)
    }
}

/// A stable 64-bit hash of a token (FNV-1a) for out-of-vocabulary buckets.
/// tf.Transform uses FarmHash: the buckets an unknown token lands in differ.
fn fingerprint(t: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
