//! Runtime values of the interpreter.
//!
//! A [`Val`] lives for one evaluation and may borrow from the compiled
//! program and from the record (`'a`), so reading a string field or a string
//! constant does not copy it. Containers are reference counted, like Python
//! objects, so aliasing (`a = b = []`) behaves as in Python.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use indexmap::{IndexMap, IndexSet};
use rill_core::{Fields, Tensor, Value};

use crate::builtins::{Builtin, Method, Module};
use crate::fmt::float_repr;
use crate::ir::FuncCode;
use crate::pyre::{MatchObj, PatRef};
use crate::{EvalError, R, err};

/// How deeply values may nest before comparisons, `repr` and conversions
/// give up (Python would raise `RecursionError` on self-referencing data).
pub(crate) const MAX_NEST: usize = 100;

/// A string: borrowed from the program or the record, or owned.
#[derive(Clone, Debug)]
pub(crate) enum Str<'a> {
    B(&'a str),
    O(Rc<str>),
}

impl<'a> Str<'a> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Str::B(s) => s,
            Str::O(s) => s,
        }
    }

    pub(crate) fn owned(s: String) -> Str<'a> {
        Str::O(Rc::from(s))
    }

    /// The byte range `start..end` (on char boundaries) as a new string,
    /// borrowing when possible.
    pub(crate) fn sub(&self, start: usize, end: usize) -> Str<'a> {
        match self {
            Str::B(s) => Str::B(&s[start..end]),
            Str::O(s) => {
                if start == 0 && end == s.len() {
                    self.clone()
                } else {
                    Str::O(Rc::from(&s[start..end]))
                }
            }
        }
    }
}

/// A byte string: borrowed or owned.
#[derive(Clone, Debug)]
pub(crate) enum Bin<'a> {
    B(&'a [u8]),
    O(Rc<[u8]>),
}

impl<'a> Bin<'a> {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Bin::B(s) => s,
            Bin::O(s) => s,
        }
    }

    pub(crate) fn owned(v: Vec<u8>) -> Bin<'a> {
        Bin::O(Rc::from(v))
    }
}

/// A Python list.
pub(crate) struct ListObj<'a>(pub RefCell<Vec<Val<'a>>>);
/// A Python tuple.
pub(crate) struct TupleObj<'a>(pub Vec<Val<'a>>);
/// A Python dict.
pub(crate) struct DictObj<'a>(pub RefCell<IndexMap<Key<'a>, Val<'a>>>);
/// A Python set.
pub(crate) struct SetObj<'a>(pub RefCell<IndexSet<Key<'a>>>);

/// A function value: compiled code plus captured cells and default values.
pub(crate) struct Closure<'a> {
    pub code: &'a FuncCode,
    pub captured: Vec<Val<'a>>,
    pub defaults: Vec<Val<'a>>,
}

/// `obj.method` taken as a value.
pub(crate) struct BoundMethod<'a> {
    pub recv: Val<'a>,
    pub method: Method,
}

/// An exception instance (only used by `raise`).
pub(crate) struct ExcObj {
    pub class: Builtin,
    pub msg: String,
}

/// One runtime value.
#[derive(Clone)]
pub(crate) enum Val<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Str<'a>),
    Bytes(Bin<'a>),
    List(Rc<ListObj<'a>>),
    Tuple(Rc<TupleObj<'a>>),
    Dict(Rc<DictObj<'a>>),
    Set(Rc<SetObj<'a>>),
    /// A record, or a map inside one: read-only, with both attribute and
    /// item access (Beam turns nested dicts into rows).
    Rec(&'a Fields),
    Tensor(&'a Tensor),
    /// `range(start, stop, step)`, lazily.
    Range(i64, i64, i64),
    Func(Rc<Closure<'a>>),
    Builtin(Builtin),
    Method(Rc<BoundMethod<'a>>),
    Module(Module),
    Pattern(PatRef<'a>),
    Match(Rc<MatchObj<'a>>),
    Exc(Rc<ExcObj>),
    /// A captured variable (internal; never visible to programs).
    Cell(Rc<RefCell<Val<'a>>>),
    /// An unassigned variable slot (internal).
    Undef,
}

// ---- deep drop without deep recursion -------------------------------------

fn has_nested(v: &Val<'_>) -> bool {
    matches!(
        v,
        Val::List(_) | Val::Tuple(_) | Val::Dict(_) | Val::Func(_) | Val::Method(_) | Val::Cell(_)
    )
}

/// Drops values iteratively, so that a list nested a million levels deep
/// (`x = [x]` in a loop) cannot overflow the stack when it is freed.
fn drop_deep(mut stack: Vec<Val<'_>>) {
    while let Some(v) = stack.pop() {
        match v {
            Val::List(rc) => {
                if let Ok(mut o) = Rc::try_unwrap(rc) {
                    stack.append(o.0.get_mut());
                }
            }
            Val::Tuple(rc) => {
                if let Ok(mut o) = Rc::try_unwrap(rc) {
                    stack.append(&mut o.0);
                }
            }
            Val::Dict(rc) => {
                if let Ok(mut o) = Rc::try_unwrap(rc) {
                    stack.extend(std::mem::take(o.0.get_mut()).into_values());
                }
            }
            Val::Func(rc) => {
                if let Ok(mut c) = Rc::try_unwrap(rc) {
                    stack.append(&mut c.captured);
                    stack.append(&mut c.defaults);
                }
            }
            Val::Method(rc) => {
                if let Ok(mut m) = Rc::try_unwrap(rc) {
                    stack.push(std::mem::replace(&mut m.recv, Val::None));
                }
            }
            Val::Cell(rc) => {
                if let Ok(c) = Rc::try_unwrap(rc) {
                    stack.push(c.into_inner());
                }
            }
            _ => {}
        }
    }
}

impl Drop for ListObj<'_> {
    fn drop(&mut self) {
        let v = self.0.get_mut();
        if v.iter().any(has_nested) {
            drop_deep(std::mem::take(v));
        }
    }
}

impl Drop for TupleObj<'_> {
    fn drop(&mut self) {
        if self.0.iter().any(has_nested) {
            drop_deep(std::mem::take(&mut self.0));
        }
    }
}

impl Drop for DictObj<'_> {
    fn drop(&mut self) {
        let m = self.0.get_mut();
        if m.values().any(has_nested) {
            drop_deep(std::mem::take(m).into_values().collect());
        }
    }
}

impl Drop for Closure<'_> {
    fn drop(&mut self) {
        if self.captured.iter().chain(&self.defaults).any(has_nested) {
            let mut all = std::mem::take(&mut self.captured);
            all.append(&mut self.defaults);
            drop_deep(all);
        }
    }
}

impl Drop for BoundMethod<'_> {
    fn drop(&mut self) {
        if has_nested(&self.recv) {
            drop_deep(vec![std::mem::replace(&mut self.recv, Val::None)]);
        }
    }
}

// ---- constructors and simple queries --------------------------------------

impl<'a> Val<'a> {
    pub(crate) fn list(v: Vec<Val<'a>>) -> Val<'a> {
        Val::List(Rc::new(ListObj(RefCell::new(v))))
    }

    pub(crate) fn tuple(v: Vec<Val<'a>>) -> Val<'a> {
        Val::Tuple(Rc::new(TupleObj(v)))
    }

    pub(crate) fn dict(m: IndexMap<Key<'a>, Val<'a>>) -> Val<'a> {
        Val::Dict(Rc::new(DictObj(RefCell::new(m))))
    }

    pub(crate) fn set(s: IndexSet<Key<'a>>) -> Val<'a> {
        Val::Set(Rc::new(SetObj(RefCell::new(s))))
    }

    pub(crate) fn str(s: String) -> Val<'a> {
        Val::Str(Str::owned(s))
    }

    /// Python's name for the value's type, as used in error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Val::None => "NoneType",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) => "str",
            Val::Bytes(_) => "bytes",
            Val::List(_) => "list",
            Val::Tuple(_) => "tuple",
            Val::Dict(_) => "dict",
            Val::Set(_) => "set",
            Val::Rec(_) => "Row",
            Val::Tensor(_) => "Tensor",
            Val::Range(..) => "range",
            Val::Func(_) => "function",
            Val::Builtin(b) if b.is_type() => "type",
            Val::Builtin(_) => "builtin_function_or_method",
            Val::Method(_) => "builtin_function_or_method",
            Val::Module(_) => "module",
            Val::Pattern(_) => "re.Pattern",
            Val::Match(_) => "re.Match",
            Val::Exc(e) => e.class.name(),
            Val::Cell(_) | Val::Undef => "cell",
        }
    }
}

/// Number of elements of `range(start, stop, step)` (`step != 0`).
pub(crate) fn range_len(start: i64, stop: i64, step: i64) -> u64 {
    let (start, stop, step) = (start as i128, stop as i128, step as i128);
    let n = if step > 0 && start < stop {
        (stop - start - 1) / step + 1
    } else if step < 0 && start > stop {
        (start - stop - 1) / (-step) + 1
    } else {
        0
    };
    n as u64
}

/// Python truthiness.
pub(crate) fn truthy(v: &Val<'_>) -> bool {
    match v {
        Val::None | Val::Undef => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Str(s) => !s.as_str().is_empty(),
        Val::Bytes(b) => !b.as_bytes().is_empty(),
        Val::List(l) => !l.0.borrow().is_empty(),
        Val::Tuple(t) => !t.0.is_empty(),
        Val::Dict(d) => !d.0.borrow().is_empty(),
        Val::Set(s) => !s.0.borrow().is_empty(),
        Val::Rec(m) => !m.is_empty(),
        Val::Tensor(t) => !t.data().is_empty(),
        Val::Range(a, b, s) => range_len(*a, *b, *s) > 0,
        Val::Cell(c) => truthy(&c.borrow()),
        _ => true,
    }
}

// ---- numbers ---------------------------------------------------------------

/// A number operand: bools count as ints.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Num {
    I(i64),
    F(f64),
}

impl Num {
    pub(crate) fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

pub(crate) fn as_num(v: &Val<'_>) -> Option<Num> {
    match v {
        Val::Bool(b) => Some(Num::I(*b as i64)),
        Val::Int(i) => Some(Num::I(*i)),
        Val::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

/// `f` as an `i64` when it is integral and in range.
pub(crate) fn float_as_int(f: f64) -> Option<i64> {
    if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
    {
        Some(f as i64)
    } else {
        None
    }
}

/// Exact comparison of an int with a float (`None` for NaN).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => Some(if f > t {
            Ordering::Less
        } else if f < t {
            Ordering::Greater
        } else {
            Ordering::Equal
        }),
        o => Some(o),
    }
}

pub(crate) fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) => cmp_int_float(x, y),
        (Num::F(x), Num::I(y)) => cmp_int_float(y, x).map(Ordering::reverse),
    }
}

// ---- dict keys ---------------------------------------------------------------

/// A hashable value used as a dict key or set element. `1`, `1.0` and `True`
/// are the same key, as in Python.
#[derive(Clone, Debug)]
pub(crate) enum Key<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Str<'a>),
    Bytes(Bin<'a>),
    Tuple(Rc<[Key<'a>]>),
}

impl Key<'_> {
    fn num(&self) -> Option<Num> {
        match self {
            Key::Bool(b) => Some(Num::I(*b as i64)),
            Key::Int(i) => Some(Num::I(*i)),
            Key::Float(f) => Some(Num::F(*f)),
            _ => None,
        }
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Key::None, Key::None) => true,
            (Key::Str(a), Key::Str(b)) => a.as_str() == b.as_str(),
            (Key::Bytes(a), Key::Bytes(b)) => a.as_bytes() == b.as_bytes(),
            (Key::Tuple(a), Key::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x == y)
            }
            (Key::Float(a), Key::Float(b)) => a == b || a.to_bits() == b.to_bits(),
            _ => match (self.num(), o.num()) {
                (Some(a), Some(b)) => cmp_num(a, b) == Some(Ordering::Equal),
                _ => false,
            },
        }
    }
}

impl Eq for Key<'_> {}

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Key::None => 0u8.hash(h),
            Key::Bool(b) => {
                1u8.hash(h);
                (*b as i64).hash(h);
            }
            Key::Int(i) => {
                1u8.hash(h);
                i.hash(h);
            }
            Key::Float(f) => match float_as_int(*f) {
                Some(i) => {
                    1u8.hash(h);
                    i.hash(h);
                }
                None => {
                    2u8.hash(h);
                    f.to_bits().hash(h);
                }
            },
            Key::Str(s) => {
                3u8.hash(h);
                s.as_str().hash(h);
            }
            Key::Bytes(b) => {
                4u8.hash(h);
                b.as_bytes().hash(h);
            }
            Key::Tuple(t) => {
                5u8.hash(h);
                t.len().hash(h);
                for k in t.iter() {
                    k.hash(h);
                }
            }
        }
    }
}

thread_local! {
    /// The most work (in `w` units) one walk may do before it stops: the
    /// evaluation's remaining step budget, set by the interpreter. A walk
    /// over shared structure (`x = [x, x]` thirty times) or long strings
    /// stops there instead of running for minutes.
    static WALK_CAP: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// Sets the cap of the walks that follow on this thread.
pub(crate) fn set_walk_cap(cap: u64) {
    WALK_CAP.with(|c| c.set(cap));
}

/// Adds `k` units of work; past the cap the walk stops (its caller charges
/// the work, which then exceeds the step budget).
#[inline]
fn tick(w: &mut u64, k: u64) -> R<()> {
    *w = w.saturating_add(k);
    if *w > WALK_CAP.with(|c| c.get()) {
        return Err(err(
            "RuntimeError",
            "step budget exhausted (comparing, hashing or copying values)",
        ));
    }
    Ok(())
}

/// The work of hashing or comparing `n` bytes: 8 bytes a unit.
#[inline]
fn bytes_work(n: usize) -> u64 {
    n as u64 / 8
}

/// The key for `v`, or `TypeError: unhashable type`.
/// `w` counts the work done (nodes visited, and bytes hashed / 8).
pub(crate) fn to_key<'a>(v: &Val<'a>, w: &mut u64) -> R<Key<'a>> {
    to_key_at(v, 0, w)
}

fn to_key_at<'a>(v: &Val<'a>, depth: usize, w: &mut u64) -> R<Key<'a>> {
    tick(w, 1)?;
    Ok(match v {
        Val::None => Key::None,
        Val::Bool(b) => Key::Bool(*b),
        Val::Int(i) => Key::Int(*i),
        Val::Float(f) => Key::Float(*f),
        Val::Str(s) => {
            tick(w, bytes_work(s.as_str().len()))?;
            Key::Str(s.clone())
        }
        Val::Bytes(b) => {
            tick(w, bytes_work(b.as_bytes().len()))?;
            Key::Bytes(b.clone())
        }
        Val::Tuple(t) => {
            if depth > MAX_NEST {
                return Err(nest_error());
            }
            let ks =
                t.0.iter()
                    .map(|x| to_key_at(x, depth + 1, w))
                    .collect::<R<Vec<_>>>()?;
            Key::Tuple(Rc::from(ks))
        }
        other => {
            return Err(err(
                "TypeError",
                format!("unhashable type: '{}'", other.type_name()),
            ));
        }
    })
}

/// The work of hashing a key again (a set compared or rebuilt).
pub(crate) fn key_cost(k: &Key<'_>) -> u64 {
    match k {
        Key::Str(s) => 1 + bytes_work(s.as_str().len()),
        Key::Bytes(b) => 1 + bytes_work(b.as_bytes().len()),
        Key::Tuple(t) => 1 + t.iter().map(key_cost).sum::<u64>(),
        _ => 1,
    }
}

/// The value of a key.
pub(crate) fn key_val<'a>(k: &Key<'a>) -> Val<'a> {
    match k {
        Key::None => Val::None,
        Key::Bool(b) => Val::Bool(*b),
        Key::Int(i) => Val::Int(*i),
        Key::Float(f) => Val::Float(*f),
        Key::Str(s) => Val::Str(s.clone()),
        Key::Bytes(b) => Val::Bytes(b.clone()),
        Key::Tuple(t) => Val::tuple(t.iter().map(key_val).collect()),
    }
}

pub(crate) fn nest_error() -> EvalError {
    err(
        "RecursionError",
        format!("maximum recursion depth exceeded: values nested more than {MAX_NEST} levels deep"),
    )
}

// ---- record values <-> runtime values ---------------------------------------

/// A record value as a runtime value (strings are borrowed, not copied).
pub(crate) fn from_value(v: &Value) -> R<Val<'_>> {
    from_value_at(v, 0)
}

fn from_value_at(v: &Value, depth: usize) -> R<Val<'_>> {
    Ok(match v {
        Value::Null => Val::None,
        Value::Bool(b) => Val::Bool(*b),
        Value::Int(i) => Val::Int(*i),
        Value::Float(f) => Val::Float(*f),
        Value::String(s) => Val::Str(Str::B(s)),
        Value::Bytes(b) => Val::Bytes(Bin::B(b)),
        Value::List(items) => {
            if depth > MAX_NEST {
                return Err(nest_error());
            }
            Val::list(
                items
                    .iter()
                    .map(|x| from_value_at(x, depth + 1))
                    .collect::<R<Vec<_>>>()?,
            )
        }
        Value::Map(m) => Val::Rec(m),
        Value::Tensor(t) => Val::Tensor(t),
    })
}

/// A runtime value as a record value, within `max_bytes`: a value that
/// holds the same large string many times (`['a' * 10**7] * 1000`) is as
/// large as all its copies once it leaves the sandbox.
pub(crate) fn to_value(v: &Val<'_>, max_items: usize, max_bytes: u64) -> R<Value> {
    to_value_at(v, 0, max_items, &mut (max_bytes, max_bytes))
}

/// Takes `n` bytes of the result budget `(left, limit)`.
fn take_bytes(budget: &mut (u64, u64), n: u64) -> R<()> {
    if n > budget.0 {
        return Err(err(
            "MemoryError",
            format!(
                "expression memory limit of {} MB exceeded: the result is larger (a value repeated with * is copied once per reference when it leaves the expression)",
                budget.1 >> 20
            ),
        ));
    }
    budget.0 -= n;
    Ok(())
}

/// The bytes a record value takes (a walk without recursion, stopping as
/// soon as the budget is spent).
fn take_value_bytes(v: &Value, budget: &mut (u64, u64)) -> R<()> {
    let mut todo = vec![v];
    while let Some(x) = todo.pop() {
        take_bytes(budget, std::mem::size_of::<Value>() as u64)?;
        match x {
            Value::String(s) => take_bytes(budget, s.len() as u64)?,
            Value::Bytes(b) => take_bytes(budget, b.len() as u64)?,
            Value::Tensor(t) => take_bytes(budget, t.data().len() as u64 * 8)?,
            Value::List(l) => todo.extend(l),
            Value::Map(m) => {
                for (k, v) in m {
                    take_bytes(budget, k.len() as u64)?;
                    todo.push(v);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn to_value_at(v: &Val<'_>, depth: usize, max_items: usize, budget: &mut (u64, u64)) -> R<Value> {
    if depth > MAX_NEST {
        return Err(nest_error());
    }
    take_bytes(budget, std::mem::size_of::<Value>() as u64)?;
    let seq = |items: &[Val<'_>], budget: &mut (u64, u64)| -> R<Value> {
        Ok(Value::List(
            items
                .iter()
                .map(|x| to_value_at(x, depth + 1, max_items, budget))
                .collect::<R<Vec<_>>>()?,
        ))
    };
    Ok(match v {
        Val::None => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Int(i) => Value::Int(*i),
        Val::Float(f) => Value::Float(*f),
        Val::Str(s) => {
            take_bytes(budget, s.as_str().len() as u64)?;
            Value::String(s.as_str().into())
        }
        Val::Bytes(b) => {
            take_bytes(budget, b.as_bytes().len() as u64)?;
            Value::Bytes(b.as_bytes().to_vec())
        }
        Val::List(l) => seq(&l.0.borrow(), budget)?,
        Val::Tuple(t) => seq(&t.0, budget)?,
        Val::Set(s) => Value::List(
            s.0.borrow()
                .iter()
                .map(|k| to_value_at(&key_val(k), depth + 1, max_items, budget))
                .collect::<R<Vec<_>>>()?,
        ),
        Val::Dict(d) => {
            let d = d.0.borrow();
            let mut out = Fields::with_capacity(d.len());
            for (k, x) in d.iter() {
                let Key::Str(s) = k else {
                    return Err(err(
                        "TypeError",
                        format!(
                            "cannot store a dict with a {} key ({}) in a record: map keys must be str",
                            key_val(k).type_name(),
                            crate::fmt::repr(&key_val(k), 1000).unwrap_or_default()
                        ),
                    ));
                };
                take_bytes(budget, s.as_str().len() as u64)?;
                out.insert(
                    s.as_str().into(),
                    to_value_at(x, depth + 1, max_items, budget)?,
                );
            }
            Value::Map(out)
        }
        Val::Rec(m) => {
            for (k, v) in m.iter() {
                take_bytes(budget, k.len() as u64)?;
                take_value_bytes(v, budget)?;
            }
            Value::Map((*m).clone())
        }
        Val::Tensor(t) => {
            take_bytes(budget, t.data().len() as u64 * 8)?;
            Value::Tensor(Box::new((*t).clone()))
        }
        Val::Range(a, b, s) => {
            let n = range_len(*a, *b, *s);
            if n > max_items as u64 {
                return Err(err(
                    "MemoryError",
                    format!("range of {n} items exceeds the limit of {max_items} items"),
                ));
            }
            take_bytes(budget, n * std::mem::size_of::<Value>() as u64)?;
            let mut out = Vec::with_capacity(n as usize);
            let mut x = *a as i128;
            for _ in 0..n {
                out.push(Value::Int(x as i64));
                x += *s as i128;
            }
            Value::List(out)
        }
        Val::Cell(c) => to_value_at(&c.borrow(), depth, max_items, budget)?,
        other => {
            return Err(err(
                "TypeError",
                format!("cannot store a {} in a record", other.type_name()),
            ));
        }
    })
}

// ---- equality and ordering ---------------------------------------------------

/// Python `==`.
/// `w` counts the work done (values compared).
pub(crate) fn py_eq<'a>(a: &Val<'a>, b: &Val<'a>, w: &mut u64) -> R<bool> {
    eq_at(a, b, 0, w)
}

fn seq_eq<'a>(a: &[Val<'a>], b: &[Val<'a>], depth: usize, w: &mut u64) -> R<bool> {
    if a.len() != b.len() {
        return Ok(false);
    }
    for (x, y) in a.iter().zip(b) {
        if !eq_at(x, y, depth + 1, w)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn rec_eq_dict<'a>(
    m: &'a Fields,
    d: &IndexMap<Key<'a>, Val<'a>>,
    depth: usize,
    w: &mut u64,
) -> R<bool> {
    if m.len() != d.len() {
        return Ok(false);
    }
    for (k, v) in m {
        match d.get(&Key::Str(Str::B(k))) {
            Some(x) => {
                if !eq_at(&from_value(v)?, x, depth + 1, w)? {
                    return Ok(false);
                }
            }
            None => return Ok(false),
        }
    }
    Ok(true)
}

fn eq_at<'a>(a: &Val<'a>, b: &Val<'a>, depth: usize, w: &mut u64) -> R<bool> {
    tick(w, 1)?;
    if depth > MAX_NEST {
        return Err(nest_error());
    }
    if let (Some(x), Some(y)) = (as_num(a), as_num(b)) {
        return Ok(cmp_num(x, y) == Some(Ordering::Equal));
    }
    Ok(match (a, b) {
        (Val::None, Val::None) => true,
        (Val::Str(x), Val::Str(y)) => {
            let (x, y) = (x.as_str(), y.as_str());
            if x.len() == y.len() && !std::ptr::eq(x, y) {
                tick(w, bytes_work(x.len()))?;
            }
            x == y
        }
        (Val::Bytes(x), Val::Bytes(y)) => {
            let (x, y) = (x.as_bytes(), y.as_bytes());
            if x.len() == y.len() && !std::ptr::eq(x, y) {
                tick(w, bytes_work(x.len()))?;
            }
            x == y
        }
        (Val::List(x), Val::List(y)) => {
            Rc::ptr_eq(x, y) || seq_eq(&x.0.borrow(), &y.0.borrow(), depth, w)?
        }
        (Val::Tuple(x), Val::Tuple(y)) => Rc::ptr_eq(x, y) || seq_eq(&x.0, &y.0, depth, w)?,
        (Val::Dict(x), Val::Dict(y)) => {
            if Rc::ptr_eq(x, y) {
                return Ok(true);
            }
            let (x, y) = (x.0.borrow(), y.0.borrow());
            if x.len() != y.len() {
                return Ok(false);
            }
            for (k, v) in x.iter() {
                match y.get(k) {
                    Some(x2) => {
                        if !eq_at(v, x2, depth + 1, w)? {
                            return Ok(false);
                        }
                    }
                    None => return Ok(false),
                }
            }
            true
        }
        (Val::Set(x), Val::Set(y)) => {
            let (x, y) = (x.0.borrow(), y.0.borrow());
            tick(w, x.iter().map(key_cost).sum())?;
            x.len() == y.len() && x.iter().all(|k| y.contains(k))
        }
        (Val::Rec(x), Val::Rec(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (k, v) in x.iter() {
                match y.get(k) {
                    Some(y2) => {
                        if !eq_at(&from_value(v)?, &from_value(y2)?, depth + 1, w)? {
                            return Ok(false);
                        }
                    }
                    None => return Ok(false),
                }
            }
            true
        }
        (Val::Rec(m), Val::Dict(d)) | (Val::Dict(d), Val::Rec(m)) => {
            rec_eq_dict(m, &d.0.borrow(), depth, w)?
        }
        (Val::Tensor(x), Val::Tensor(y)) => x == y,
        (Val::Range(a1, b1, s1), Val::Range(a2, b2, s2)) => {
            let (n1, n2) = (range_len(*a1, *b1, *s1), range_len(*a2, *b2, *s2));
            n1 == n2 && (n1 == 0 || (a1 == a2 && (n1 == 1 || s1 == s2)))
        }
        (Val::Func(x), Val::Func(y)) => Rc::ptr_eq(x, y),
        (Val::Builtin(x), Val::Builtin(y)) => x == y,
        (Val::Module(x), Val::Module(y)) => x == y,
        (Val::Method(x), Val::Method(y)) => x.method == y.method && is_same(&x.recv, &y.recv),
        (Val::Pattern(x), Val::Pattern(y)) => x.src == y.src && x.flags == y.flags,
        (Val::Match(x), Val::Match(y)) => Rc::ptr_eq(x, y),
        (Val::Exc(x), Val::Exc(y)) => Rc::ptr_eq(x, y),
        _ => false,
    })
}

/// Python `is`: identity for objects, value identity for the singletons and
/// scalars.
pub(crate) fn is_same<'a>(a: &Val<'a>, b: &Val<'a>) -> bool {
    match (a, b) {
        (Val::None, Val::None) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Float(x), Val::Float(y)) => x.to_bits() == y.to_bits(),
        (Val::Str(x), Val::Str(y)) => x.as_str() == y.as_str(),
        (Val::Bytes(x), Val::Bytes(y)) => x.as_bytes() == y.as_bytes(),
        (Val::List(x), Val::List(y)) => Rc::ptr_eq(x, y),
        (Val::Tuple(x), Val::Tuple(y)) => Rc::ptr_eq(x, y),
        (Val::Dict(x), Val::Dict(y)) => Rc::ptr_eq(x, y),
        (Val::Set(x), Val::Set(y)) => Rc::ptr_eq(x, y),
        (Val::Rec(x), Val::Rec(y)) => std::ptr::eq(*x, *y),
        (Val::Tensor(x), Val::Tensor(y)) => std::ptr::eq(*x, *y),
        (Val::Func(x), Val::Func(y)) => Rc::ptr_eq(x, y),
        (Val::Builtin(x), Val::Builtin(y)) => x == y,
        (Val::Module(x), Val::Module(y)) => x == y,
        (Val::Match(x), Val::Match(y)) => Rc::ptr_eq(x, y),
        (Val::Method(x), Val::Method(y)) => Rc::ptr_eq(x, y),
        _ => false,
    }
}

/// An ordering comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ord4 {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Ord4 {
    fn test(self, o: Ordering) -> bool {
        match self {
            Ord4::Lt => o == Ordering::Less,
            Ord4::Le => o != Ordering::Greater,
            Ord4::Gt => o == Ordering::Greater,
            Ord4::Ge => o != Ordering::Less,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Ord4::Lt => "<",
            Ord4::Le => "<=",
            Ord4::Gt => ">",
            Ord4::Ge => ">=",
        }
    }
}

/// Python `<`, `<=`, `>`, `>=`.
pub(crate) fn py_order<'a>(op: Ord4, a: &Val<'a>, b: &Val<'a>, w: &mut u64) -> R<bool> {
    order_at(op, a, b, 0, w)
}

fn seq_order<'a>(op: Ord4, a: &[Val<'a>], b: &[Val<'a>], depth: usize, w: &mut u64) -> R<bool> {
    for (x, y) in a.iter().zip(b) {
        if !eq_at(x, y, depth + 1, w)? {
            return order_at(op, x, y, depth + 1, w);
        }
    }
    Ok(op.test(a.len().cmp(&b.len())))
}

fn order_at<'a>(op: Ord4, a: &Val<'a>, b: &Val<'a>, depth: usize, w: &mut u64) -> R<bool> {
    tick(w, 1)?;
    if depth > MAX_NEST {
        return Err(nest_error());
    }
    if let (Some(x), Some(y)) = (as_num(a), as_num(b)) {
        return Ok(cmp_num(x, y).is_some_and(|o| op.test(o)));
    }
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => {
            tick(w, bytes_work(x.as_str().len().min(y.as_str().len())))?;
            Ok(op.test(x.as_str().cmp(y.as_str())))
        }
        (Val::Bytes(x), Val::Bytes(y)) => {
            tick(w, bytes_work(x.as_bytes().len().min(y.as_bytes().len())))?;
            Ok(op.test(x.as_bytes().cmp(y.as_bytes())))
        }
        (Val::List(x), Val::List(y)) => seq_order(op, &x.0.borrow(), &y.0.borrow(), depth, w),
        (Val::Tuple(x), Val::Tuple(y)) => seq_order(op, &x.0, &y.0, depth, w),
        (Val::Set(x), Val::Set(y)) => {
            let (x, y) = (x.0.borrow(), y.0.borrow());
            tick(w, x.iter().chain(y.iter()).map(key_cost).sum())?;
            let sub =
                |p: &IndexSet<Key<'_>>, q: &IndexSet<Key<'_>>| p.iter().all(|k| q.contains(k));
            Ok(match op {
                Ord4::Lt => x.len() < y.len() && sub(&x, &y),
                Ord4::Le => sub(&x, &y),
                Ord4::Gt => x.len() > y.len() && sub(&y, &x),
                Ord4::Ge => sub(&y, &x),
            })
        }
        _ => Err(err(
            "TypeError",
            format!(
                "'{}' not supported between instances of '{}' and '{}'",
                op.symbol(),
                a.type_name(),
                b.type_name()
            ),
        )),
    }
}

/// `a < b`, for sorting, `min` and `max`.
pub(crate) fn py_lt<'a>(a: &Val<'a>, b: &Val<'a>, w: &mut u64) -> R<bool> {
    py_order(Ord4::Lt, a, b, w)
}

// ---- str() and repr() ----------------------------------------------------------

/// Appends Python's `repr` of a str.
/// Whether `repr` shows `c` as it is (CPython's `str.isprintable()`): not
/// a control, format, surrogate, private-use or unassigned character, nor
/// a separator other than the space.
pub(crate) fn py_printable(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    c == ' '
        || !matches!(
            c.general_category(),
            G::Control
                | G::Format
                | G::Surrogate
                | G::PrivateUse
                | G::Unassigned
                | G::SpaceSeparator
                | G::LineSeparator
                | G::ParagraphSeparator
        )
}

pub(crate) fn repr_str_into(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if !py_printable(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Appends Python's `repr` of a bytes value.
pub(crate) fn repr_bytes_into(b: &[u8], out: &mut String) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    out.push('b');
    out.push(quote);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c as char == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(quote);
}

fn check_len(out: &str, limit: usize) -> R<()> {
    if out.len() > limit {
        Err(err(
            "MemoryError",
            format!("repr of more than {limit} bytes exceeds the string size limit"),
        ))
    } else {
        Ok(())
    }
}

/// Appends Python's `repr(v)`, failing past `limit` bytes.
pub(crate) fn repr_into(v: &Val<'_>, out: &mut String, depth: usize, limit: usize) -> R<()> {
    if depth > MAX_NEST {
        return Err(nest_error());
    }
    let seq = |items: &[Val<'_>], out: &mut String| -> R<()> {
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            repr_into(x, out, depth + 1, limit)?;
            check_len(out, limit)?;
        }
        Ok(())
    };
    match v {
        Val::None => out.push_str("None"),
        Val::Bool(true) => out.push_str("True"),
        Val::Bool(false) => out.push_str("False"),
        Val::Int(i) => out.push_str(&i.to_string()),
        Val::Float(f) => out.push_str(&float_repr(*f)),
        Val::Str(s) => repr_str_into(s.as_str(), out),
        Val::Bytes(b) => repr_bytes_into(b.as_bytes(), out),
        Val::List(l) => {
            out.push('[');
            seq(&l.0.borrow(), out)?;
            out.push(']');
        }
        Val::Tuple(t) => {
            out.push('(');
            seq(&t.0, out)?;
            if t.0.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Val::Dict(d) => {
            out.push('{');
            for (i, (k, x)) in d.0.borrow().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(&key_val(k), out, depth + 1, limit)?;
                out.push_str(": ");
                repr_into(x, out, depth + 1, limit)?;
                check_len(out, limit)?;
            }
            out.push('}');
        }
        Val::Set(s) => {
            let s = s.0.borrow();
            if s.is_empty() {
                out.push_str("set()");
            } else {
                out.push('{');
                for (i, k) in s.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    repr_into(&key_val(k), out, depth + 1, limit)?;
                    check_len(out, limit)?;
                }
                out.push('}');
            }
        }
        Val::Rec(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str_into(k, out);
                out.push_str(": ");
                repr_into(&from_value(x)?, out, depth + 1, limit)?;
                check_len(out, limit)?;
            }
            out.push('}');
        }
        Val::Tensor(t) => {
            out.push_str(&format!(
                "Tensor(shape={:?}, dtype={})",
                t.shape(),
                t.dtype()
            ));
        }
        Val::Range(a, b, s) => {
            if *s == 1 {
                out.push_str(&format!("range({a}, {b})"));
            } else {
                out.push_str(&format!("range({a}, {b}, {s})"));
            }
        }
        Val::Func(c) => out.push_str(&format!("<function {}>", c.code.name)),
        Val::Builtin(b) if b.is_type() || b.is_exception() => {
            out.push_str(&format!("<class '{}'>", b.name()));
        }
        Val::Builtin(b) => out.push_str(&format!("<built-in function {}>", b.name())),
        Val::Method(m) => out.push_str(&format!(
            "<built-in method {} of {} object>",
            m.method.name(),
            m.recv.type_name()
        )),
        Val::Module(m) => out.push_str(&format!("<module '{}'>", m.name())),
        Val::Pattern(p) => {
            out.push_str("re.compile(");
            repr_str_into(&p.src, out);
            out.push(')');
        }
        Val::Match(m) => {
            let (s, e) = m.span_chars(0).unwrap_or((0, 0));
            out.push_str(&format!("<re.Match object; span=({s}, {e}), match="));
            repr_str_into(m.group_str(0).unwrap_or(""), out);
            out.push('>');
        }
        Val::Exc(e) => {
            out.push_str(e.class.name());
            out.push('(');
            repr_str_into(&e.msg, out);
            out.push(')');
        }
        Val::Cell(c) => repr_into(&c.borrow(), out, depth, limit)?,
        Val::Undef => out.push_str("<unbound>"),
    }
    check_len(out, limit)
}

/// Python's `str(v)`.
pub(crate) fn str_of<'a>(v: &Val<'a>, limit: usize) -> R<Str<'a>> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        Val::Exc(e) => Ok(Str::owned(e.msg.clone())),
        _ => {
            let mut out = String::new();
            repr_into(v, &mut out, 0, limit)?;
            Ok(Str::owned(out))
        }
    }
}

/// Python's `repr` of a str, as a `String`.
pub(crate) fn repr_string(s: &str) -> String {
    let mut out = String::new();
    repr_str_into(s, &mut out);
    out
}
