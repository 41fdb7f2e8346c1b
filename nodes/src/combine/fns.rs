//! Combine functions: Beam YAML's nine (`sum`, `count`, `mean`, `min`,
//! `max`, `any`, `all`, `group`, `concat`), top/bottom N (Beam's
//! `TopCombineFn` with `n` and `reverse`) and Python callables over a
//! group's values; their accumulators, which the stage's state holds.

use std::cmp::Ordering;

use rill_core::Value;
use rill_expr::spec::Compiled;
use serde::{Deserialize, Serialize};

/// A combine function, resolved from its config.
#[derive(Debug, Clone)]
pub enum CombineFn {
    Sum,
    Count,
    Mean,
    Min,
    Max,
    Any,
    All,
    Group,
    Concat,
    /// The `n` largest values, largest first (`reverse`: the smallest,
    /// smallest first).
    Top {
        n: usize,
        reverse: bool,
    },
    /// A Python callable given the list of the group's values.
    Callable(Compiled),
}

/// The names `fn:` takes, besides top N and callables.
pub const BUILTINS: &[&str] = &[
    "sum", "count", "mean", "min", "max", "any", "all", "group", "concat",
];

/// Names of top N: Beam's class, and rill's shorthands.
pub const TOP_NAMES: &[&str] = &[
    "apache_beam.transforms.combiners.TopCombineFn",
    "TopCombineFn",
    "top",
    "top_largest",
    "top_smallest",
];

/// What a group holds for one output field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    Sum(Value),
    Count(i64),
    Mean(f64, i64),
    Extreme(Option<Value>),
    Bool(bool),
    List(Vec<Value>),
}

/// Orders two values as Python does (numbers by value, strings by code
/// point, lists element by element); other pairs cannot be compared.
pub fn compare(a: &Value, b: &Value) -> Result<Ordering, String> {
    let num = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bytes(x), Value::Bytes(y)) => Ok(x.cmp(y)),
        (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y) {
                match compare(p, q)? {
                    Ordering::Equal => continue,
                    o => return Ok(o),
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x
                .partial_cmp(&y)
                .ok_or_else(|| "cannot order nan".to_owned()),
            _ => Err(format!(
                "cannot compare {} with {}",
                a.type_name(),
                b.type_name()
            )),
        },
    }
}

fn add_numbers(a: &Value, b: &Value) -> Result<Value, String> {
    let as_int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
        // past i64, the sum goes on in floats
        return Ok(x
            .checked_add(y)
            .map_or(Value::Float(x as f64 + y as f64), Value::Int));
    }
    match (
        a.as_f64().or(as_int(a).map(|i| i as f64)),
        b.as_f64().or(as_int(b).map(|i| i as f64)),
    ) {
        (Some(x), Some(y)) => Ok(Value::Float(x + y)),
        _ => Err(format!(
            "unsupported operand types for +: {} and {}",
            a.type_name(),
            b.type_name()
        )),
    }
}

impl CombineFn {
    /// An empty accumulator.
    pub fn zero(&self) -> Acc {
        match self {
            CombineFn::Sum => Acc::Sum(Value::Int(0)),
            CombineFn::Count => Acc::Count(0),
            CombineFn::Mean => Acc::Mean(0.0, 0),
            CombineFn::Min | CombineFn::Max => Acc::Extreme(None),
            CombineFn::Any => Acc::Bool(false),
            CombineFn::All => Acc::Bool(true),
            CombineFn::Group
            | CombineFn::Concat
            | CombineFn::Top { .. }
            | CombineFn::Callable(_) => Acc::List(Vec::new()),
        }
    }

    /// Adds one value.
    pub fn add(&self, acc: &mut Acc, v: Value) -> Result<(), String> {
        match (self, acc) {
            (CombineFn::Sum, Acc::Sum(s)) => {
                if v.is_null() {
                    return Err("sum: a value is None".into());
                }
                *s = add_numbers(s, &v)?;
            }
            (CombineFn::Count, Acc::Count(n)) => *n += 1,
            (CombineFn::Mean, Acc::Mean(sum, n)) => {
                let x = match v {
                    Value::Int(i) => i as f64,
                    Value::Float(f) => f,
                    Value::Bool(b) => f64::from(u8::from(b)),
                    other => {
                        return Err(format!(
                            "mean: {} {other} is not a number",
                            other.type_name()
                        ));
                    }
                };
                *sum += x;
                *n += 1;
            }
            (CombineFn::Min | CombineFn::Max, Acc::Extreme(e)) => {
                let better = match e {
                    None => true,
                    Some(cur) => {
                        let o = compare(&v, cur)?;
                        if matches!(self, CombineFn::Min) {
                            o == Ordering::Less
                        } else {
                            o == Ordering::Greater
                        }
                    }
                };
                if better {
                    *e = Some(v);
                }
            }
            (CombineFn::Any, Acc::Bool(b)) => *b = *b || rill_expr::truthy(&v),
            (CombineFn::All, Acc::Bool(b)) => *b = *b && rill_expr::truthy(&v),
            (CombineFn::Concat, Acc::List(l)) => match v {
                Value::List(items) => l.extend(items),
                other => {
                    return Err(format!(
                        "concat: {} {other} is not a list",
                        other.type_name()
                    ));
                }
            },
            (CombineFn::Top { n, reverse }, Acc::List(l)) => {
                // kept best first, at most n
                let mut at = l.len();
                for (i, cur) in l.iter().enumerate() {
                    let o = compare(&v, cur)?;
                    let before = if *reverse {
                        o == Ordering::Less
                    } else {
                        o == Ordering::Greater
                    };
                    if before {
                        at = i;
                        break;
                    }
                }
                if at < *n {
                    l.insert(at, v);
                    l.truncate(*n);
                }
            }
            (CombineFn::Group | CombineFn::Callable(_), Acc::List(l)) => l.push(v),
            (f, a) => return Err(format!("internal: accumulator {a:?} does not fit {f:?}")),
        }
        Ok(())
    }

    /// Whether [`Self::add`] would take `v`, without changing `acc` (a
    /// record is added to all of a group's outputs or to none).
    pub fn check(&self, acc: &Acc, v: &Value) -> Result<(), String> {
        let number = matches!(v, Value::Int(_) | Value::Float(_) | Value::Bool(_));
        match (self, acc) {
            (CombineFn::Group | CombineFn::Callable(_) | CombineFn::Count, _)
            | (CombineFn::Any | CombineFn::All, _) => Ok(()),
            // numbers always add (past i64, in floats)
            (CombineFn::Sum | CombineFn::Mean, _) if number => Ok(()),
            (CombineFn::Min | CombineFn::Max, Acc::Extreme(Some(cur))) => {
                compare(v, cur).map(|_| ())
            }
            (CombineFn::Min | CombineFn::Max, Acc::Extreme(None)) => Ok(()),
            (CombineFn::Top { .. }, Acc::List(items)) => {
                items.iter().try_for_each(|i| compare(v, i).map(|_| ()))
            }
            (CombineFn::Concat, _) if matches!(v, Value::List(_)) => Ok(()),
            _ => self.add(&mut acc.clone(), v.clone()),
        }
    }

    /// Merges `other` into `acc` (session windows that meet).
    pub fn merge(&self, acc: &mut Acc, other: Acc) -> Result<(), String> {
        match (acc, other) {
            (Acc::Sum(a), Acc::Sum(b)) => *a = add_numbers(a, &b)?,
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Mean(s, n), Acc::Mean(t, m)) => {
                *s += t;
                *n += m;
            }
            (Acc::Extreme(_), Acc::Extreme(None)) => {}
            (a @ Acc::Extreme(_), Acc::Extreme(Some(v))) => self.add(a, v)?,
            (Acc::Bool(a), Acc::Bool(b)) => {
                *a = if matches!(self, CombineFn::All) {
                    *a && b
                } else {
                    *a || b
                }
            }
            (a @ Acc::List(_), Acc::List(items)) => {
                if let (CombineFn::Top { .. }, _) = (self, &a) {
                    for v in items {
                        self.add(a, v)?;
                    }
                } else if let Acc::List(l) = a {
                    l.extend(items);
                }
            }
            (a, b) => return Err(format!("internal: cannot merge {a:?} with {b:?}")),
        }
        Ok(())
    }

    /// The result.
    pub fn extract(&self, acc: &Acc) -> Result<Value, String> {
        Ok(match (self, acc) {
            (_, Acc::Sum(v)) => v.clone(),
            (_, Acc::Count(n)) => Value::Int(*n),
            (_, Acc::Mean(s, n)) => Value::Float(if *n == 0 { f64::NAN } else { s / *n as f64 }),
            (_, Acc::Extreme(v)) => v.clone().unwrap_or(Value::Null),
            (_, Acc::Bool(b)) => Value::Bool(*b),
            (CombineFn::Callable(c), Acc::List(l)) => c.call(&Value::List(l.clone()))?,
            (_, Acc::List(l)) => Value::List(l.clone()),
        })
    }
}

/// `fn:` as written: a name, or `{type, config}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FnSpec {
    Name(String),
    Typed {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        config: Option<TopConfig>,
    },
}

/// The config of a top N fn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopConfig {
    pub n: Option<usize>,
    #[serde(default)]
    pub reverse: bool,
}

impl FnSpec {
    pub fn name(&self) -> &str {
        match self {
            FnSpec::Name(n) => n,
            FnSpec::Typed { kind, .. } => kind,
        }
    }

    /// Whether the name is Python source (a lambda or a def).
    pub fn is_callable(&self) -> bool {
        let n = self.name().trim_start();
        n.starts_with("lambda") || n.starts_with("def ") || n.contains("\ndef ")
    }

    /// Resolves the fn; `python` says whether `language: python` is set.
    /// The error names what is wrong (the caller puts it at `fn`).
    pub fn resolve(&self, python: bool) -> Result<CombineFn, String> {
        let name = self.name();
        let config = match self {
            FnSpec::Typed { config, .. } => config.as_ref(),
            FnSpec::Name(_) => None,
        };
        if TOP_NAMES.contains(&name) {
            let c = config.ok_or_else(|| {
                format!("`{name}` needs `config: {{n: N}}` (how many values to keep)")
            })?;
            let n =
                c.n.ok_or_else(|| format!("`{name}` needs `n` in its config"))?;
            if n == 0 {
                return Err(format!("`{name}`: `n` must be at least 1"));
            }
            return Ok(CombineFn::Top {
                n,
                reverse: c.reverse || name == "top_smallest",
            });
        }
        if config.is_some() {
            return Err(format!("`{name}` takes no `config`"));
        }
        Ok(match name {
            "sum" => CombineFn::Sum,
            "count" => CombineFn::Count,
            "mean" => CombineFn::Mean,
            "min" => CombineFn::Min,
            "max" => CombineFn::Max,
            "any" => CombineFn::Any,
            "all" => CombineFn::All,
            "group" => CombineFn::Group,
            "concat" => CombineFn::Concat,
            _ if self.is_callable() => {
                if !python {
                    return Err(
                        "a Python callable as `fn` needs `language: python` on the Combine".into(),
                    );
                }
                let spec = rill_expr::spec::ExprSpec::Full(
                    serde_json::from_value(serde_json::json!({ "callable": name }))
                        .map_err(|e| e.to_string())?,
                );
                CombineFn::Callable(spec.compile("fn", std::path::Path::new("."))?)
            }
            other => {
                let hint = rill_core::registry::closest(other, BUILTINS.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown combine fn `{other}`{hint}; expected one of: {}, top N (`{{type: TopCombineFn, config: {{n: 3}}}}`), or a Python callable (`lambda values: ...`)",
                    BUILTINS.join(", ")
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &CombineFn, vals: Vec<Value>) -> Result<Value, String> {
        let mut acc = f.zero();
        for v in vals {
            f.add(&mut acc, v)?;
        }
        f.extract(&acc)
    }

    fn ints(v: &[i64]) -> Vec<Value> {
        v.iter().map(|i| Value::Int(*i)).collect()
    }

    #[test]
    fn python_semantics() {
        assert_eq!(run(&CombineFn::Sum, ints(&[3, 2])).unwrap(), Value::Int(5));
        assert_eq!(
            run(&CombineFn::Sum, vec![Value::Int(1), Value::Float(0.5)]).unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(
            run(&CombineFn::Sum, ints(&[i64::MAX, 1])).unwrap(),
            Value::Float(i64::MAX as f64 + 1.0)
        );
        assert!(
            run(&CombineFn::Sum, vec![Value::Null])
                .unwrap_err()
                .contains("None")
        );
        assert_eq!(
            run(&CombineFn::Mean, ints(&[1])).unwrap(),
            Value::Float(1.0)
        );
        assert_eq!(
            run(&CombineFn::Count, vec![Value::Null, Value::Int(1)]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            run(&CombineFn::Max, ints(&[3, 5, 4])).unwrap(),
            Value::Int(5)
        );
        assert_eq!(
            run(&CombineFn::Min, vec!["b".into(), "a".into()]).unwrap(),
            Value::from("a")
        );
        assert!(
            run(&CombineFn::Min, vec!["b".into(), Value::Int(1)])
                .unwrap_err()
                .contains("cannot compare int with str")
        );
        assert_eq!(
            run(&CombineFn::All, vec![Value::Int(1), Value::Int(0)]).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(
            run(&CombineFn::Any, vec![Value::Int(0), "x".into()]).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            run(
                &CombineFn::Concat,
                vec![Value::List(ints(&[1])), Value::List(ints(&[2, 3]))]
            )
            .unwrap(),
            Value::List(ints(&[1, 2, 3]))
        );
        let top = CombineFn::Top {
            n: 2,
            reverse: false,
        };
        assert_eq!(
            run(&top, ints(&[3, 5, 4, 1])).unwrap(),
            Value::List(ints(&[5, 4]))
        );
        let bottom = CombineFn::Top {
            n: 2,
            reverse: true,
        };
        assert_eq!(
            run(&bottom, ints(&[3, 5, 4, 1])).unwrap(),
            Value::List(ints(&[1, 3]))
        );
        // strings by code point: 🥕 (U+1F955) > 🍓 (U+1F353) > 🍆 (U+1F346)
        let top3 = CombineFn::Top {
            n: 3,
            reverse: false,
        };
        assert_eq!(
            run(
                &top3,
                vec!["🍆".into(), "🥕".into(), "🍓".into(), "🍅".into()]
            )
            .unwrap(),
            Value::List(vec!["🥕".into(), "🍓".into(), "🍆".into()])
        );
    }

    #[test]
    fn merging_equals_adding_everything() {
        for f in [
            CombineFn::Sum,
            CombineFn::Mean,
            CombineFn::Max,
            CombineFn::Top {
                n: 3,
                reverse: false,
            },
            CombineFn::Group,
        ] {
            let (a, b) = (ints(&[4, 1, 7]), ints(&[9, 2]));
            let mut x = f.zero();
            for v in a.clone() {
                f.add(&mut x, v).unwrap();
            }
            let mut y = f.zero();
            for v in b.clone() {
                f.add(&mut y, v).unwrap();
            }
            f.merge(&mut x, y).unwrap();
            let all: Vec<Value> = a.into_iter().chain(b).collect();
            assert_eq!(f.extract(&x).unwrap(), run(&f, all).unwrap(), "{f:?}");
        }
    }

    #[test]
    fn fns_resolve_by_name_with_hints() {
        let top: FnSpec = serde_json::from_str(
            r#"{"type": "apache_beam.transforms.combiners.TopCombineFn", "config": {"n": 2, "reverse": true}}"#,
        )
        .unwrap();
        assert!(matches!(
            top.resolve(true),
            Ok(CombineFn::Top {
                n: 2,
                reverse: true
            })
        ));
        let e = FnSpec::Name("summ".into()).resolve(false).unwrap_err();
        assert!(e.contains("did you mean `sum`"), "{e}");
        let lam = FnSpec::Name("lambda vs: max(vs) - min(vs)".into());
        assert!(lam.resolve(false).unwrap_err().contains("language: python"));
        let f = lam.resolve(true).unwrap();
        assert_eq!(run(&f, ints(&[3, 9, 4])).unwrap(), Value::Int(6));
    }
}
