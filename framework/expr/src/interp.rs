//! The evaluator: walks the compiled tree for one record.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use indexmap::{IndexMap, IndexSet};
use rill_core::{Fields, Value};

use crate::builtins::{Builtin, Method};
use crate::fmt::{format_value, percent_format, repr};
use crate::ir::{
    BinOp, Body, CmpOp, Comp, CompKind, Const, Conv, Elt, Expr, FPart, FieldSlot, FreeSrc,
    FuncCode, FuncDef, Kwarg, Stmt, Target, UnOp,
};
use crate::pyre::PatternObj;
use crate::val::{
    BoundMethod, Closure, ExcObj, Key, Num, Ord4, Str, Val, as_num, float_as_int, from_value,
    is_same, key_val, py_eq, py_order, range_len, str_of, truthy,
};
use crate::{EvalError, Limits, R, err};

/// Stack the evaluator may use below its entry point before it reports a
/// `RecursionError` (a guard in addition to the call-depth limit).
const STACK_BUDGET: usize = 1 << 20;

pub(crate) struct Interp<'a> {
    pub fields: &'a [FieldSlot],
    pub rec: &'a Fields,
    pub limits: Limits,
    pub steps: u64,
    pub depth: usize,
    pub stack_base: usize,
    pub re_cache: Vec<(String, i64, Rc<PatternObj>)>,
    /// The lists read from the record in this evaluation, by the address
    /// of the record value: a field read twice is the same list, so
    /// `row.l.append(7)` then `row.l` sees the 7, as in Python.
    pub shared: Vec<(*const Value, Val<'a>)>,
}

pub(crate) struct Frame<'a, 'f> {
    pub code: &'a FuncCode,
    pub slots: Vec<Val<'a>>,
    pub free: &'f [Val<'a>],
}

impl<'a, 'f> Frame<'a, 'f> {
    pub(crate) fn new(code: &'a FuncCode, free: &'f [Val<'a>]) -> Frame<'a, 'f> {
        let mut slots = if code.nslots == 0 {
            Vec::new()
        } else {
            vec![Val::Undef; code.nslots as usize]
        };
        for &c in &code.cells {
            slots[c as usize] = Val::Cell(Rc::new(std::cell::RefCell::new(Val::Undef)));
        }
        Frame { code, slots, free }
    }
}

pub(crate) enum Flow<'a> {
    Normal,
    Return(Val<'a>),
    Break,
    Continue,
}

/// An iterator over a Python iterable.
pub(crate) enum PyIter<'a> {
    List(Rc<crate::val::ListObj<'a>>, usize),
    Tuple(Rc<crate::val::TupleObj<'a>>, usize),
    Vals(std::vec::IntoIter<Val<'a>>),
    Range(i64, i64, u64),
    Chars(Str<'a>, usize),
    Bytes(crate::val::Bin<'a>, usize),
}

impl<'a> PyIter<'a> {
    pub(crate) fn next_val(&mut self) -> Option<Val<'a>> {
        match self {
            PyIter::List(l, i) => {
                let v = l.0.borrow().get(*i).cloned();
                *i += 1;
                v
            }
            PyIter::Tuple(t, i) => {
                let v = t.0.get(*i).cloned();
                *i += 1;
                v
            }
            PyIter::Vals(it) => it.next(),
            PyIter::Range(cur, step, left) => {
                if *left == 0 {
                    return None;
                }
                let v = *cur;
                *left -= 1;
                if *left > 0 {
                    *cur = cur.wrapping_add(*step);
                }
                Some(Val::Int(v))
            }
            PyIter::Chars(s, i) => {
                let c = s.as_str()[*i..].chars().next()?;
                let start = *i;
                *i += c.len_utf8();
                Some(Val::Str(s.sub(start, *i)))
            }
            PyIter::Bytes(b, i) => {
                let v = b.as_bytes().get(*i).copied()?;
                *i += 1;
                Some(Val::Int(v as i64))
            }
        }
    }
}

/// What a comprehension builds.
enum Acc<'a> {
    List(Vec<Val<'a>>),
    Set(IndexSet<Key<'a>>),
    Dict(IndexMap<Key<'a>, Val<'a>>),
    /// `any(...)` / `all(...)` over a generator: stop at the first
    /// truthy (any) or falsy (all) element.
    Find(bool, bool),
}

pub(crate) fn const_val(c: &Const) -> Val<'_> {
    match c {
        Const::None => Val::None,
        Const::Bool(b) => Val::Bool(*b),
        Const::Int(i) => Val::Int(*i),
        Const::Float(f) => Val::Float(*f),
        Const::Str(s) => Val::Str(Str::B(s)),
        Const::Bytes(b) => Val::Bytes(crate::val::Bin::B(b)),
    }
}

pub(crate) fn type_error(msg: impl std::fmt::Display) -> EvalError {
    err("TypeError", msg)
}

fn overflow(op: &str) -> EvalError {
    err(
        "OverflowError",
        format!("integer result of {op} does not fit in 64 bits (rill ints are 64-bit)"),
    )
}

/// Looks a field up by name, trying the cached position first.
pub(crate) fn lookup<'v>(
    m: &'v Fields,
    name: &str,
    hint: Option<&AtomicUsize>,
) -> Option<&'v Value> {
    if let Some(h) = hint {
        if let Some((k, v)) = m.get_index(h.load(Relaxed))
            && k == name
        {
            return Some(v);
        }
        let (i, _, v) = m.get_full(name)?;
        h.store(i, Relaxed);
        Some(v)
    } else {
        m.get(name)
    }
}

/// "(it has: a, b, c)" for error messages.
pub(crate) fn field_list(m: &Fields) -> String {
    if m.is_empty() {
        return "(it has no fields)".into();
    }
    let mut names: Vec<&str> = m.keys().map(|k| k.as_str()).take(20).collect();
    if m.len() > 20 {
        names.push("...");
    }
    format!("(it has: {})", names.join(", "))
}

/// Python slice bounds: `(start, step, count)`.
pub(crate) fn slice_indices(
    len: usize,
    lo: Option<i64>,
    hi: Option<i64>,
    step: i64,
) -> (i64, i64, usize) {
    let len = len as i128;
    let step128 = step as i128;
    let (def_start, def_stop) = if step < 0 { (len - 1, -1) } else { (0, len) };
    let adj = |v: Option<i64>, def: i128| -> i128 {
        match v {
            None => def,
            Some(v) => {
                let mut v = v as i128;
                if v < 0 {
                    v += len;
                    if v < 0 {
                        v = if step < 0 { -1 } else { 0 };
                    }
                } else if v >= len {
                    v = if step < 0 { len - 1 } else { len };
                }
                v
            }
        }
    };
    let start = adj(lo, def_start);
    let stop = adj(hi, def_stop);
    let count = if step < 0 {
        if stop < start {
            (start - stop - 1) / (-step128) + 1
        } else {
            0
        }
    } else if start < stop {
        (stop - start - 1) / step128 + 1
    } else {
        0
    };
    (start as i64, step, count as usize)
}

/// A normalized index into a sequence of `len`, or `IndexError`.
pub(crate) fn seq_index(i: i64, len: usize, what: &str) -> R<usize> {
    let len_i = len as i128;
    let j = if i < 0 { i as i128 + len_i } else { i as i128 };
    if j < 0 || j >= len_i {
        Err(err("IndexError", format!("{what} index out of range")))
    } else {
        Ok(j as usize)
    }
}

pub(crate) fn int_of(v: &Val<'_>, what: &str) -> R<i64> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Bool(b) => Ok(*b as i64),
        other => Err(type_error(format!(
            "{what} must be integers, not {}",
            other.type_name()
        ))),
    }
}

fn int_pow<'a>(a: i64, b: i64) -> R<Val<'a>> {
    if b < 0 {
        if a == 0 {
            return Err(err(
                "ZeroDivisionError",
                "0.0 cannot be raised to a negative power",
            ));
        }
        return Ok(Val::Float((a as f64).powf(b as f64)));
    }
    match u32::try_from(b) {
        Ok(e) => a.checked_pow(e).map(Val::Int).ok_or_else(|| overflow("**")),
        Err(_) => match a {
            0 | 1 => Ok(Val::Int(a)),
            -1 => Ok(Val::Int(if b % 2 == 0 { 1 } else { -1 })),
            _ => Err(overflow("**")),
        },
    }
}

fn float_divmod(x: f64, y: f64) -> (f64, f64) {
    let mut m = x % y;
    let mut div = (x - m) / y;
    if m != 0.0 {
        if (y < 0.0) != (m < 0.0) {
            m += y;
            div -= 1.0;
        }
    } else {
        m = 0.0f64.copysign(y);
    }
    let floordiv = if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f64.copysign(x / y)
    };
    (floordiv, m)
}

/// `a / b` of two ints, rounded once as CPython's `long_true_divide`
/// does (converting an int past 2**53 to a float first would round twice).
fn int_true_div(a: i64, b: i64) -> f64 {
    const EXACT: u64 = 1 << 53;
    let (na, nb) = (a.unsigned_abs(), b.unsigned_abs());
    if na <= EXACT && nb <= EXACT {
        return a as f64 / b as f64;
    }
    let la = 64 - na.leading_zeros() as i32;
    let lb = 64 - nb.leading_zeros() as i32;
    // the quotient below lands in [2^54, 2^56)
    let e = la - lb - 55;
    let (n, d) = if e < 0 {
        ((na as u128) << -e, nb as u128)
    } else {
        (na as u128, (nb as u128) << e)
    };
    // a sticky bit below the rounding bit, then one rounding
    let q = (n / d) | u128::from(n % d != 0);
    let mag = q as f64 * f64::from_bits(((1023 + e) as u64) << 52);
    if (a < 0) != (b < 0) { -mag } else { mag }
}

pub(crate) fn arith<'a>(op: BinOp, x: Num, y: Num) -> R<Val<'a>> {
    if let (Num::I(a), Num::I(b)) = (x, y) {
        return Ok(Val::Int(match op {
            BinOp::Add => a.checked_add(b).ok_or_else(|| overflow("+"))?,
            BinOp::Sub => a.checked_sub(b).ok_or_else(|| overflow("-"))?,
            BinOp::Mul => a.checked_mul(b).ok_or_else(|| overflow("*"))?,
            BinOp::Div => {
                if b == 0 {
                    return Err(err("ZeroDivisionError", "division by zero"));
                }
                return Ok(Val::Float(int_true_div(a, b)));
            }
            BinOp::FloorDiv => {
                if b == 0 {
                    return Err(err(
                        "ZeroDivisionError",
                        "integer division or modulo by zero",
                    ));
                }
                let q = a.checked_div(b).ok_or_else(|| overflow("//"))?;
                if (a % b != 0) && ((a < 0) != (b < 0)) {
                    q - 1
                } else {
                    q
                }
            }
            BinOp::Mod => {
                if b == 0 {
                    return Err(err("ZeroDivisionError", "integer modulo by zero"));
                }
                if b == -1 {
                    0
                } else {
                    let r = a % b;
                    if r != 0 && ((r < 0) != (b < 0)) {
                        r + b
                    } else {
                        r
                    }
                }
            }
            BinOp::Pow => return int_pow(a, b),
            BinOp::LShift => {
                if b < 0 {
                    return Err(err("ValueError", "negative shift count"));
                }
                if a == 0 {
                    0
                } else if b >= 64 {
                    return Err(overflow("<<"));
                } else {
                    let r = a << b;
                    if (r >> b) != a {
                        return Err(overflow("<<"));
                    }
                    r
                }
            }
            BinOp::RShift => {
                if b < 0 {
                    return Err(err("ValueError", "negative shift count"));
                }
                if b >= 64 {
                    if a < 0 { -1 } else { 0 }
                } else {
                    a >> b
                }
            }
            BinOp::BitOr => a | b,
            BinOp::BitXor => a ^ b,
            BinOp::BitAnd => a & b,
        }));
    }
    let (a, b) = (x.f(), y.f());
    Ok(Val::Float(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => {
            if b == 0.0 {
                return Err(err("ZeroDivisionError", "float division by zero"));
            }
            a / b
        }
        BinOp::FloorDiv => {
            if b == 0.0 {
                return Err(err("ZeroDivisionError", "float floor division by zero"));
            }
            float_divmod(a, b).0
        }
        BinOp::Mod => {
            if b == 0.0 {
                return Err(err("ZeroDivisionError", "float modulo by zero"));
            }
            float_divmod(a, b).1
        }
        BinOp::Pow => {
            if a == 0.0 && b < 0.0 && b.is_finite() {
                return Err(err(
                    "ZeroDivisionError",
                    "0.0 cannot be raised to a negative power",
                ));
            }
            if a < 0.0 && a.is_finite() && b.is_finite() && b.fract() != 0.0 {
                return Err(err(
                    "ValueError",
                    "negative number cannot be raised to a fractional power (complex results are not supported)",
                ));
            }
            let r = a.powf(b);
            if r.is_infinite() && a.is_finite() && b.is_finite() {
                return Err(err(
                    "OverflowError",
                    "(34, 'Numerical result out of range')",
                ));
            }
            r
        }
        _ => {
            return Err(type_error(format!(
                "unsupported operand type(s) for {}: '{}' and '{}'",
                op.symbol(),
                if matches!(x, Num::F(_)) {
                    "float"
                } else {
                    "int"
                },
                if matches!(y, Num::F(_)) {
                    "float"
                } else {
                    "int"
                },
            )));
        }
    }))
}

impl<'a> Interp<'a> {
    // ---- budget ---------------------------------------------------------------

    #[inline]
    pub(crate) fn step(&mut self) -> R<()> {
        self.charge(1)
    }

    #[inline]
    pub(crate) fn charge(&mut self, n: u64) -> R<()> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.limits.max_steps {
            Err(budget_error(self.limits.max_steps))
        } else {
            Ok(())
        }
    }

    /// Checks (and charges for) building a sequence of `n` items.
    pub(crate) fn alloc_items(&mut self, n: usize, what: &str) -> R<()> {
        if n > self.limits.max_items {
            return Err(err(
                "MemoryError",
                format!(
                    "{what} of {n} items exceeds the limit of {} items",
                    self.limits.max_items
                ),
            ));
        }
        self.charge(n as u64 / 4)
    }

    /// Checks (and charges for) building a string of `n` bytes.
    pub(crate) fn alloc_str(&mut self, n: usize) -> R<()> {
        if n > self.limits.max_str_bytes {
            return Err(err(
                "MemoryError",
                format!(
                    "string of {n} bytes exceeds the limit of {} bytes",
                    self.limits.max_str_bytes
                ),
            ));
        }
        self.charge(n as u64 / 64)
    }

    /// Bounds the next walk over values by what is left of the budget (a
    /// walk charges 1 step per 8 units of work).
    fn cap_walk(&self) {
        let left = self.limits.max_steps.saturating_sub(self.steps);
        crate::val::set_walk_cap(left.saturating_mul(8).saturating_add(8));
    }

    /// The dict key of `v`, charging for large tuples and long strings.
    pub(crate) fn key(&mut self, v: &Val<'a>) -> R<Key<'a>> {
        let mut w = 0;
        self.cap_walk();
        let k = crate::val::to_key(v, &mut w);
        self.charge(w / 8)?;
        k
    }

    /// `a == b`, charging for large containers and long strings.
    pub(crate) fn eq(&mut self, a: &Val<'a>, b: &Val<'a>) -> R<bool> {
        let mut w = 0;
        self.cap_walk();
        let r = py_eq(a, b, &mut w);
        self.charge(w / 8)?;
        r
    }

    /// `a < b` and friends, charging for large containers and strings.
    pub(crate) fn order(&mut self, op: Ord4, a: &Val<'a>, b: &Val<'a>) -> R<bool> {
        let mut w = 0;
        self.cap_walk();
        let r = py_order(op, a, b, &mut w);
        self.charge(w / 8)?;
        r
    }

    fn enter(&mut self) -> R<()> {
        self.step()?;
        if self.depth >= self.limits.max_depth {
            return Err(depth_error(self.limits.max_depth));
        }
        let marker = 0u8;
        let here = &marker as *const u8 as usize;
        if self.stack_base.abs_diff(here) > STACK_BUDGET {
            return Err(stack_error(self.depth));
        }
        self.depth += 1;
        Ok(())
    }

    // ---- variables ------------------------------------------------------------

    fn unbound(code: &FuncCode, slot: u32) -> EvalError {
        let name = code
            .slot_names
            .get(slot as usize)
            .map(|s| &**s)
            .unwrap_or("?");
        let (name, comp) = match name.strip_suffix(crate::compile::COMP_MARK) {
            Some(n) => (n, true),
            None => (name, false),
        };
        if !comp && (code.name.as_ref() == "<module>" || code.name.as_ref() == "<expression>") {
            err("NameError", format!("name '{name}' is not defined"))
        } else {
            err(
                "UnboundLocalError",
                format!(
                    "cannot access local variable '{name}' where it is not associated with a value"
                ),
            )
        }
    }

    #[inline]
    fn load_local(&self, f: &Frame<'a, '_>, s: u32) -> R<Val<'a>> {
        match &f.slots[s as usize] {
            Val::Undef => Err(Self::unbound(f.code, s)),
            Val::Cell(c) => {
                let v = c.borrow().clone();
                if matches!(v, Val::Undef) {
                    Err(Self::unbound(f.code, s))
                } else {
                    Ok(v)
                }
            }
            v => Ok(v.clone()),
        }
    }

    pub(crate) fn store_local(f: &mut Frame<'a, '_>, s: u32, v: Val<'a>) {
        let slot = &mut f.slots[s as usize];
        if let Val::Cell(c) = slot {
            *c.borrow_mut() = v;
        } else {
            *slot = v;
        }
    }

    fn load_free(f: &Frame<'a, '_>, i: u32) -> R<Val<'a>> {
        let v = match &f.free[i as usize] {
            Val::Cell(c) => c.borrow().clone(),
            v => v.clone(),
        };
        if matches!(v, Val::Undef) {
            let name = f.code.free.get(i as usize).map(|x| &*x.0).unwrap_or("?");
            return Err(err("NameError", format!("name '{name}' is not defined")));
        }
        Ok(v)
    }

    /// A record value (a field, or an item of a map inside the record) as
    /// a runtime value: a list is built once per evaluation and then
    /// shared, like the one object Python would hand out each time.
    pub(crate) fn rec_val(&mut self, v: &'a Value) -> R<Val<'a>> {
        if !matches!(v, Value::List(_)) {
            return from_value(v);
        }
        let key = v as *const Value;
        if let Some((_, x)) = self.shared.iter().find(|(k, _)| *k == key) {
            return Ok(x.clone());
        }
        let x = from_value(v)?;
        self.shared.push((key, x.clone()));
        Ok(x)
    }

    fn field(&self, i: u32) -> Option<&'a Value> {
        let slot = &self.fields[i as usize];
        lookup(self.rec, &slot.name, Some(&slot.hint))
    }

    fn missing_field(&self, i: u32) -> EvalError {
        let name = &self.fields[i as usize].name;
        err(
            "NameError",
            format!(
                "name '{name}' is not defined: the record has no field `{name}` {}",
                field_list(self.rec)
            ),
        )
    }

    // ---- expressions ----------------------------------------------------------

    /// Evaluates an expression. This is a thin dispatcher: each construct
    /// has its own function, so that the stack frame on the recursive path
    /// stays small even in unoptimized builds.
    pub(crate) fn eval(&mut self, e: &'a Expr, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        match e {
            Expr::Const(c) => Ok(const_val(c)),
            Expr::Local(s) => self.load_local(f, *s),
            Expr::Free(i) => Self::load_free(f, *i),
            Expr::Field(i) => self.eval_field(*i),
            Expr::Bin(op, a, b) => self.eval_bin(*op, a, b, f),
            Expr::Cmp(first, rest) => self.eval_cmp(first, rest, f),
            Expr::And(xs) => self.eval_bool(xs, false, f),
            Expr::Or(xs) => self.eval_bool(xs, true, f),
            Expr::If(t, a, b) => self.eval_if(t, a, b, f),
            Expr::Call { func, args, kw } => self.eval_call(func, args, kw, f),
            Expr::MethodCall { .. } => self.eval_method_expr(e, f),
            Expr::Attr { obj, name, hint } => self.eval_attr(obj, name, hint, f),
            Expr::Index(o, i) => self.eval_index(o, i, f),
            _ => self.eval_other(e, f),
        }
    }

    #[inline(never)]
    fn eval_field(&mut self, i: u32) -> R<Val<'a>> {
        match self.field(i) {
            Some(v) => self.rec_val(v),
            None => Err(self.missing_field(i)),
        }
    }

    #[inline(never)]
    fn eval_bin(
        &mut self,
        op: BinOp,
        a: &'a Expr,
        b: &'a Expr,
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let a = self.eval(a, f)?;
        let b = self.eval(b, f)?;
        self.binop(op, a, b)
    }

    #[inline(never)]
    fn eval_bool(&mut self, xs: &'a [Expr], or: bool, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        let mut v = Val::Bool(!or);
        for x in xs {
            v = self.eval(x, f)?;
            if truthy(&v) == or {
                break;
            }
        }
        Ok(v)
    }

    #[inline(never)]
    fn eval_if(
        &mut self,
        t: &'a Expr,
        a: &'a Expr,
        b: &'a Expr,
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let t = self.eval(t, f)?;
        if truthy(&t) {
            self.eval(a, f)
        } else {
            self.eval(b, f)
        }
    }

    #[inline(never)]
    fn eval_attr(
        &mut self,
        obj: &'a Expr,
        name: &'a str,
        hint: &'a AtomicUsize,
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let o = self.eval(obj, f)?;
        self.get_attr(o, name, Some(hint))
    }

    #[inline(never)]
    fn eval_index(&mut self, o: &'a Expr, i: &'a Expr, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        let o = self.eval(o, f)?;
        let i = self.eval(i, f)?;
        self.get_item(&o, &i)
    }

    #[inline(never)]
    fn eval_method_expr(&mut self, e: &'a Expr, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        let Expr::MethodCall {
            obj,
            name,
            method,
            args,
            kw,
            pattern,
            hint,
        } = e
        else {
            return Ok(Val::None);
        };
        let recv = self.eval(obj, f)?;
        self.eval_method_call(recv, name, *method, args, kw, pattern.as_deref(), hint, f)
    }

    /// The less common constructs.
    #[inline(never)]
    fn eval_other(&mut self, e: &'a Expr, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        match e {
            Expr::FieldOr(i, alt) => match self.field(*i) {
                Some(v) => self.rec_val(v),
                None => self.eval(alt, f),
            },
            Expr::Builtin(b) => Ok(Val::Builtin(*b)),
            Expr::Module(m) => Ok(Val::Module(*m)),
            Expr::Slice { obj, lo, hi, step } => self.eval_slice(obj, lo, hi, step, f),
            Expr::BinChain(first, rest) => {
                let mut acc = self.eval(first, f)?;
                for (op, e) in rest {
                    let b = self.eval(e, f)?;
                    acc = self.binop(*op, acc, b)?;
                }
                Ok(acc)
            }
            Expr::Unary(op, a) => {
                let v = self.eval(a, f)?;
                self.unary(*op, v)
            }
            Expr::List(elts) => {
                let v = self.eval_elts(elts, f)?;
                Ok(Val::list(v))
            }
            Expr::Tuple(elts) => {
                let v = self.eval_elts(elts, f)?;
                Ok(Val::tuple(v))
            }
            Expr::Set(elts) => {
                let v = self.eval_elts(elts, f)?;
                let mut s = IndexSet::with_capacity(v.len());
                for x in &v {
                    s.insert(self.key(x)?);
                }
                Ok(Val::set(s))
            }
            Expr::Dict(items) => self.eval_dict(items, f),
            Expr::Comp(c) => self.eval_comp(c, f),
            Expr::Lambda(def) => self.make_closure(def, f),
            Expr::FStr(parts) => {
                let mut out = String::new();
                self.eval_fstr(parts, &mut out, f)?;
                Ok(Val::str(out))
            }
            Expr::Walrus(s, e) => {
                let v = self.eval(e, f)?;
                Self::store_local(f, *s, v.clone());
                Ok(v)
            }
            // Handled by `eval`.
            Expr::Const(_)
            | Expr::Local(_)
            | Expr::Free(_)
            | Expr::Field(_)
            | Expr::Bin(..)
            | Expr::Cmp(..)
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::If(..)
            | Expr::Call { .. }
            | Expr::MethodCall { .. }
            | Expr::Attr { .. }
            | Expr::Index(..) => self.eval(e, f),
        }
    }

    fn eval_elts(&mut self, elts: &'a [Elt], f: &mut Frame<'a, '_>) -> R<Vec<Val<'a>>> {
        let mut out = Vec::with_capacity(elts.len());
        for e in elts {
            match e {
                Elt::One(x) => out.push(self.eval(x, f)?),
                Elt::Star(x) => {
                    let v = self.eval(x, f)?;
                    let items = self.collect(&v)?;
                    self.alloc_items(out.len() + items.len(), "list")?;
                    out.extend(items);
                }
            }
        }
        Ok(out)
    }

    fn eval_dict(
        &mut self,
        items: &'a [(Option<Expr>, Expr)],
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let mut m = IndexMap::with_capacity(items.len());
        for (k, v) in items {
            match k {
                Some(k) => {
                    let k = self.eval(k, f)?;
                    let v = self.eval(v, f)?;
                    m.insert(self.key(&k)?, v);
                }
                None => {
                    let src = self.eval(v, f)?;
                    for (k, v) in self.mapping_items(&src)? {
                        m.insert(k, v);
                    }
                }
            }
        }
        Ok(Val::dict(m))
    }

    /// The items of a mapping (`**x`, `dict(x)`, `d.update(x)`).
    pub(crate) fn mapping_items(&mut self, v: &Val<'a>) -> R<Vec<(Key<'a>, Val<'a>)>> {
        match v {
            Val::Dict(d) => {
                let d = d.0.borrow();
                self.charge(d.len() as u64)?;
                Ok(d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            Val::Rec(m) => {
                self.charge(m.len() as u64)?;
                m.iter()
                    .map(|(k, v)| Ok((Key::Str(Str::B(k)), self.rec_val(v)?)))
                    .collect()
            }
            other => Err(type_error(format!(
                "'{}' object is not a mapping",
                other.type_name()
            ))),
        }
    }

    fn eval_cmp(
        &mut self,
        first: &'a Expr,
        rest: &'a [(CmpOp, Expr)],
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let mut left = self.eval(first, f)?;
        for (op, e) in rest {
            let right = self.eval(e, f)?;
            if !self.compare(*op, &left, &right)? {
                return Ok(Val::Bool(false));
            }
            left = right;
        }
        Ok(Val::Bool(true))
    }

    pub(crate) fn compare(&mut self, op: CmpOp, a: &Val<'a>, b: &Val<'a>) -> R<bool> {
        match op {
            CmpOp::Eq => self.eq(a, b),
            CmpOp::Ne => Ok(!self.eq(a, b)?),
            CmpOp::Lt => self.order(Ord4::Lt, a, b),
            CmpOp::Le => self.order(Ord4::Le, a, b),
            CmpOp::Gt => self.order(Ord4::Gt, a, b),
            CmpOp::Ge => self.order(Ord4::Ge, a, b),
            CmpOp::In => self.contains(b, a),
            CmpOp::NotIn => Ok(!self.contains(b, a)?),
            CmpOp::Is => Ok(is_same(a, b)),
            CmpOp::IsNot => Ok(!is_same(a, b)),
        }
    }

    /// `item in container`.
    pub(crate) fn contains(&mut self, container: &Val<'a>, item: &Val<'a>) -> R<bool> {
        match container {
            Val::Str(s) => match item {
                Val::Str(x) => {
                    self.charge(s.as_str().len() as u64 / 64)?;
                    Ok(s.as_str().contains(x.as_str()))
                }
                other => Err(type_error(format!(
                    "'in <string>' requires string as left operand, not {}",
                    other.type_name()
                ))),
            },
            Val::Bytes(b) => match item {
                Val::Int(i) => Ok(u8::try_from(*i).is_ok_and(|x| b.as_bytes().contains(&x))),
                Val::Bytes(x) => {
                    let (h, n) = (b.as_bytes(), x.as_bytes());
                    Ok(n.is_empty() || h.windows(n.len()).any(|w| w == n))
                }
                other => Err(type_error(format!(
                    "a bytes-like object is required, not '{}'",
                    other.type_name()
                ))),
            },
            Val::List(l) => {
                let items = l.0.borrow();
                self.seq_contains(&items, item)
            }
            Val::Tuple(t) => self.seq_contains(&t.0, item),
            Val::Dict(d) => {
                let k = self.key(item)?;
                Ok(d.0.borrow().contains_key(&k))
            }
            Val::Set(s) => {
                let k = self.key(item)?;
                Ok(s.0.borrow().contains(&k))
            }
            Val::Rec(m) => match item {
                Val::Str(s) => Ok(m.contains_key(s.as_str())),
                other => {
                    self.key(other)?;
                    Ok(false)
                }
            },
            Val::Range(a, b, s) => {
                let x = match item {
                    Val::Int(i) => *i,
                    Val::Bool(v) => *v as i64,
                    Val::Float(f) => match float_as_int(*f) {
                        Some(i) => i,
                        None => return Ok(false),
                    },
                    _ => return Ok(false),
                };
                let (a, b, s) = (*a as i128, *b as i128, *s as i128);
                let x = x as i128;
                let inside = if s > 0 {
                    a <= x && x < b
                } else {
                    b < x && x <= a
                };
                Ok(inside && (x - a) % s == 0)
            }
            other => Err(type_error(format!(
                "argument of type '{}' is not iterable",
                other.type_name()
            ))),
        }
    }

    fn seq_contains(&mut self, items: &[Val<'a>], item: &Val<'a>) -> R<bool> {
        for (n, x) in items.iter().enumerate() {
            if n % 64 == 0 {
                self.step()?;
            }
            if is_same(x, item) || self.eq(x, item)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(crate) fn unary(&mut self, op: UnOp, v: Val<'a>) -> R<Val<'a>> {
        match (op, &v) {
            (UnOp::Not, _) => Ok(Val::Bool(!truthy(&v))),
            (UnOp::Neg, Val::Int(i)) => i
                .checked_neg()
                .map(Val::Int)
                .ok_or_else(|| overflow("unary -")),
            (UnOp::Neg, Val::Bool(b)) => Ok(Val::Int(-(*b as i64))),
            (UnOp::Neg, Val::Float(x)) => Ok(Val::Float(-x)),
            (UnOp::Pos, Val::Int(_) | Val::Float(_)) => Ok(v),
            (UnOp::Pos, Val::Bool(b)) => Ok(Val::Int(*b as i64)),
            (UnOp::Invert, Val::Int(i)) => Ok(Val::Int(!i)),
            (UnOp::Invert, Val::Bool(b)) => Ok(Val::Int(!(*b as i64))),
            _ => Err(type_error(format!(
                "bad operand type for unary {}: '{}'",
                match op {
                    UnOp::Neg => "-",
                    UnOp::Pos => "+",
                    _ => "~",
                },
                v.type_name()
            ))),
        }
    }

    fn repeat_count(&mut self, n: i64, unit: usize, what: &str) -> R<usize> {
        let n = n.max(0) as u64;
        let total = n.saturating_mul(unit as u64);
        if what == "str" || what == "bytes" {
            self.alloc_str(usize::try_from(total).unwrap_or(usize::MAX))?;
        } else {
            self.alloc_items(usize::try_from(total).unwrap_or(usize::MAX), what)?;
        }
        Ok(n as usize)
    }

    pub(crate) fn binop(&mut self, op: BinOp, a: Val<'a>, b: Val<'a>) -> R<Val<'a>> {
        if let (Some(x), Some(y)) = (as_num(&a), as_num(&b)) {
            if matches!(op, BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor)
                && let (Val::Bool(p), Val::Bool(q)) = (&a, &b)
            {
                return Ok(Val::Bool(match op {
                    BinOp::BitAnd => p & q,
                    BinOp::BitOr => p | q,
                    _ => p ^ q,
                }));
            }
            return arith(op, x, y);
        }
        match (op, &a, &b) {
            (BinOp::Add, Val::Str(x), Val::Str(y)) => {
                let (x, y) = (x.as_str(), y.as_str());
                if x.is_empty() {
                    return Ok(b);
                }
                if y.is_empty() {
                    return Ok(a);
                }
                self.alloc_str(x.len() + y.len())?;
                let mut s = String::with_capacity(x.len() + y.len());
                s.push_str(x);
                s.push_str(y);
                Ok(Val::str(s))
            }
            (BinOp::Add, Val::Bytes(x), Val::Bytes(y)) => {
                self.alloc_str(x.as_bytes().len() + y.as_bytes().len())?;
                Ok(Val::Bytes(crate::val::Bin::owned(
                    [x.as_bytes(), y.as_bytes()].concat(),
                )))
            }
            (BinOp::Add, Val::List(x), Val::List(y)) => {
                let (x, y) = (x.0.borrow(), y.0.borrow());
                self.alloc_items(x.len() + y.len(), "list")?;
                Ok(Val::list(x.iter().chain(y.iter()).cloned().collect()))
            }
            (BinOp::Add, Val::Tuple(x), Val::Tuple(y)) => {
                self.alloc_items(x.0.len() + y.0.len(), "tuple")?;
                Ok(Val::tuple(x.0.iter().chain(y.0.iter()).cloned().collect()))
            }
            (
                BinOp::Mul,
                Val::Str(_) | Val::Bytes(_) | Val::List(_) | Val::Tuple(_),
                Val::Int(_) | Val::Bool(_),
            ) => self.repeat(&a, int_of(&b, "count")?),
            (
                BinOp::Mul,
                Val::Int(_) | Val::Bool(_),
                Val::Str(_) | Val::Bytes(_) | Val::List(_) | Val::Tuple(_),
            ) => self.repeat(&b, int_of(&a, "count")?),
            (BinOp::Mod, Val::Str(s), _) => {
                let out = percent_format(s.as_str(), &b, self.limits.max_str_bytes)?;
                self.alloc_str(out.len())?;
                Ok(Val::str(out))
            }
            (
                BinOp::Sub | BinOp::BitOr | BinOp::BitAnd | BinOp::BitXor,
                Val::Set(x),
                Val::Set(y),
            ) => {
                let (x, y) = (x.0.borrow(), y.0.borrow());
                self.charge((x.len() + y.len()) as u64)?;
                let s: IndexSet<Key<'a>> = match op {
                    BinOp::Sub => x.difference(&y).cloned().collect(),
                    BinOp::BitOr => x.union(&y).cloned().collect(),
                    BinOp::BitAnd => x.intersection(&y).cloned().collect(),
                    _ => x.symmetric_difference(&y).cloned().collect(),
                };
                Ok(Val::set(s))
            }
            (BinOp::BitOr, Val::Dict(_) | Val::Rec(_), Val::Dict(_) | Val::Rec(_)) => {
                let mut m: IndexMap<Key<'a>, Val<'a>> =
                    self.mapping_items(&a)?.into_iter().collect();
                for (k, v) in self.mapping_items(&b)? {
                    m.insert(k, v);
                }
                Ok(Val::dict(m))
            }
            _ => {
                let msg = match (op, &a, &b) {
                    (BinOp::Mul, Val::Str(_) | Val::Bytes(_) | Val::List(_) | Val::Tuple(_), _) => {
                        format!(
                            "can't multiply sequence by non-int of type '{}'",
                            b.type_name()
                        )
                    }
                    (BinOp::Mul, _, Val::Str(_) | Val::Bytes(_) | Val::List(_) | Val::Tuple(_)) => {
                        format!(
                            "can't multiply sequence by non-int of type '{}'",
                            a.type_name()
                        )
                    }
                    (BinOp::Add, Val::Str(_) | Val::List(_) | Val::Tuple(_), _) => format!(
                        "can only concatenate {} (not \"{}\") to {}",
                        a.type_name(),
                        b.type_name(),
                        a.type_name()
                    ),
                    _ => format!(
                        "unsupported operand type(s) for {}: '{}' and '{}'",
                        op.symbol(),
                        a.type_name(),
                        b.type_name()
                    ),
                };
                Err(type_error(msg))
            }
        }
    }

    fn repeat(&mut self, seq: &Val<'a>, n: i64) -> R<Val<'a>> {
        let empty = match seq {
            Val::Str(x) => x.as_str().is_empty(),
            Val::Bytes(x) => x.as_bytes().is_empty(),
            Val::List(x) => x.0.borrow().is_empty(),
            Val::Tuple(x) => x.0.is_empty(),
            _ => false,
        };
        let n = if empty { 0 } else { n };
        Ok(match seq {
            Val::Str(s) => {
                let n = self.repeat_count(n, s.as_str().len(), "str")?;
                Val::str(s.as_str().repeat(n))
            }
            Val::Bytes(b) => {
                let n = self.repeat_count(n, b.as_bytes().len(), "bytes")?;
                Val::Bytes(crate::val::Bin::owned(b.as_bytes().repeat(n)))
            }
            Val::List(l) => {
                let items = l.0.borrow().clone();
                let n = self.repeat_count(n, items.len(), "list")?;
                let mut out = Vec::with_capacity(items.len() * n);
                for _ in 0..n {
                    out.extend(items.iter().cloned());
                }
                Val::list(out)
            }
            Val::Tuple(t) => {
                let n = self.repeat_count(n, t.0.len(), "tuple")?;
                let mut out = Vec::with_capacity(t.0.len() * n);
                for _ in 0..n {
                    out.extend(t.0.iter().cloned());
                }
                Val::tuple(out)
            }
            _ => Val::None,
        })
    }

    // ---- attributes, items, slices ----------------------------------------------

    pub(crate) fn get_attr(
        &mut self,
        o: Val<'a>,
        name: &str,
        hint: Option<&AtomicUsize>,
    ) -> R<Val<'a>> {
        match &o {
            Val::Rec(m) => {
                if let Some(v) = lookup(m, name, hint) {
                    return self.rec_val(v);
                }
                if let Some(meth) = Method::from_name(name)
                    && crate::builtins::has_method(&o, meth)
                {
                    return Ok(Val::Method(Rc::new(BoundMethod {
                        recv: o,
                        method: meth,
                    })));
                }
                Err(err(
                    "AttributeError",
                    format!("the record has no field `{name}` {}", field_list(m)),
                ))
            }
            Val::Tensor(t) => match name {
                "shape" => Ok(Val::tuple(
                    t.shape()
                        .iter()
                        .map(|d| Val::Int(i64::try_from(*d).unwrap_or(i64::MAX)))
                        .collect(),
                )),
                "ndim" => Ok(Val::Int(t.shape().len() as i64)),
                "size" => Ok(Val::Int(i64::try_from(t.data().len()).unwrap_or(i64::MAX))),
                "dtype" => Ok(Val::Str(Str::B(t.dtype().name()))),
                _ => Err(self.no_attr(&o, name)),
            },
            // `str.lower`: the method unbound, its receiver the first argument
            Val::Builtin(b)
                if let Some(sample) = crate::builtins::type_sample(*b)
                    && let Some(meth) = Method::from_name(name)
                    && crate::builtins::has_method(&sample, meth) =>
            {
                Ok(Val::Method(Rc::new(BoundMethod {
                    recv: o.clone(),
                    method: meth,
                })))
            }
            Val::Module(m) => crate::builtins::module_attr(*m, name).ok_or_else(|| {
                err(
                    "AttributeError",
                    format!("module '{}' has no attribute '{name}'", m.name()),
                )
            }),
            Val::Pattern(p) => match name {
                "pattern" => Ok(Val::str(p.src.clone())),
                "flags" => Ok(Val::Int(p.flags)),
                "groups" => Ok(Val::Int(p.group_count() as i64)),
                _ => self.method_attr(o, name),
            },
            Val::Match(m) => match name {
                "string" => Ok(Val::Str(m.subject.clone())),
                "re" => Ok(Val::Pattern(m.pat.clone())),
                "lastindex" => Ok(m
                    .spans
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, s)| s.is_some())
                    .max_by_key(|(_, s)| s.map(|x| x.1))
                    .map(|(i, _)| Val::Int(i as i64))
                    .unwrap_or(Val::None)),
                _ => self.method_attr(o, name),
            },
            Val::Float(x) if name == "real" => Ok(Val::Float(*x)),
            Val::Float(_) if name == "imag" => Ok(Val::Float(0.0)),
            Val::Int(i) if name == "real" || name == "numerator" => Ok(Val::Int(*i)),
            Val::Int(_) if name == "imag" => Ok(Val::Int(0)),
            Val::Int(_) if name == "denominator" => Ok(Val::Int(1)),
            Val::Exc(e) if name == "args" => Ok(Val::tuple(vec![Val::str(e.msg.clone())])),
            _ => self.method_attr(o, name),
        }
    }

    fn method_attr(&self, o: Val<'a>, name: &str) -> R<Val<'a>> {
        if let Some(m) = Method::from_name(name)
            && crate::builtins::has_method(&o, m)
        {
            return Ok(Val::Method(Rc::new(BoundMethod { recv: o, method: m })));
        }
        Err(self.no_attr(&o, name))
    }

    pub(crate) fn no_attr(&self, o: &Val<'a>, name: &str) -> EvalError {
        err(
            "AttributeError",
            format!("'{}' object has no attribute '{name}'", o.type_name()),
        )
    }

    pub(crate) fn get_item(&mut self, o: &Val<'a>, i: &Val<'a>) -> R<Val<'a>> {
        match o {
            Val::List(l) => {
                let l = l.0.borrow();
                let idx = seq_index(self.index_int(i, "list")?, l.len(), "list")?;
                Ok(l[idx].clone())
            }
            Val::Tuple(t) => {
                let idx = seq_index(self.index_int(i, "tuple")?, t.0.len(), "tuple")?;
                Ok(t.0[idx].clone())
            }
            Val::Str(s) => {
                let k = self.index_int(i, "string")?;
                let text = s.as_str();
                if text.is_ascii() {
                    let idx = seq_index(k, text.len(), "string")?;
                    return Ok(Val::Str(s.sub(idx, idx + 1)));
                }
                let n = text.chars().count();
                let idx = seq_index(k, n, "string")?;
                let (b, c) = text.char_indices().nth(idx).unwrap_or((0, ' '));
                Ok(Val::Str(s.sub(b, b + c.len_utf8())))
            }
            Val::Bytes(b) => {
                let idx = seq_index(self.index_int(i, "bytes")?, b.as_bytes().len(), "index")?;
                Ok(Val::Int(b.as_bytes()[idx] as i64))
            }
            Val::Dict(d) => {
                let k = self.key(i)?;
                d.0.borrow()
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| err("KeyError", repr(i, 1000).unwrap_or_default()))
            }
            Val::Rec(m) => match i {
                Val::Str(s) => match m.get(s.as_str()) {
                    Some(v) => self.rec_val(v),
                    None => Err(err(
                        "KeyError",
                        format!(
                            "{}: the record has no field `{}` {}",
                            crate::val::repr_string(s.as_str()),
                            s.as_str(),
                            field_list(m)
                        ),
                    )),
                },
                other => {
                    // an unhashable key is a TypeError, as in a dict
                    self.key(other)?;
                    Err(err("KeyError", repr(other, 1000).unwrap_or_default()))
                }
            },
            Val::Range(a, b, s) => {
                let n = range_len(*a, *b, *s);
                let k = self.index_int(i, "range object")? as i128;
                let k = if k < 0 { k + n as i128 } else { k };
                if k < 0 || k >= n as i128 {
                    return Err(err("IndexError", "range object index out of range"));
                }
                Ok(Val::Int((*a as i128 + k * *s as i128) as i64))
            }
            Val::Match(m) => {
                let g = m.pat.group_index(i)?;
                Ok(m.group_val(g))
            }
            other => Err(type_error(format!(
                "'{}' object is not subscriptable",
                other.type_name()
            ))),
        }
    }

    fn index_int(&self, i: &Val<'a>, what: &str) -> R<i64> {
        match i {
            Val::Int(k) => Ok(*k),
            Val::Bool(b) => Ok(*b as i64),
            other => Err(type_error(format!(
                "{what} indices must be integers or slices, not {}",
                other.type_name()
            ))),
        }
    }

    fn eval_slice(
        &mut self,
        obj: &'a Expr,
        lo: &'a Option<Box<Expr>>,
        hi: &'a Option<Box<Expr>>,
        step: &'a Option<Box<Expr>>,
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let o = self.eval(obj, f)?;
        let mut bound = |e: &'a Option<Box<Expr>>, f: &mut Frame<'a, '_>| -> R<Option<i64>> {
            match e {
                None => Ok(None),
                Some(e) => match self.eval(e, f)? {
                    Val::None => Ok(None),
                    v => int_of(&v, "slice indices").map(Some),
                },
            }
        };
        let lo = bound(lo, f)?;
        let hi = bound(hi, f)?;
        let step = bound(step, f)?.unwrap_or(1);
        self.slice(&o, lo, hi, step)
    }

    pub(crate) fn slice(
        &mut self,
        o: &Val<'a>,
        lo: Option<i64>,
        hi: Option<i64>,
        step: i64,
    ) -> R<Val<'a>> {
        if step == 0 {
            return Err(err("ValueError", "slice step cannot be zero"));
        }
        let pick = |len: usize| slice_indices(len, lo, hi, step);
        let gather = |items: &[Val<'a>]| -> Vec<Val<'a>> {
            let (start, step, n) = pick(items.len());
            (0..n)
                .map(|k| items[(start as i128 + k as i128 * step as i128) as usize].clone())
                .collect()
        };
        match o {
            Val::List(l) => {
                let v = gather(&l.0.borrow());
                self.charge(v.len() as u64 / 4)?;
                Ok(Val::list(v))
            }
            Val::Tuple(t) => {
                let v = gather(&t.0);
                self.charge(v.len() as u64 / 4)?;
                Ok(Val::tuple(v))
            }
            Val::Str(s) => {
                let text = s.as_str();
                self.charge(text.len() as u64 / 64)?;
                if text.is_ascii() {
                    let (start, st, n) = pick(text.len());
                    if st == 1 {
                        let start = start.max(0) as usize;
                        return Ok(Val::Str(s.sub(start, start + n)));
                    }
                    let b = text.as_bytes();
                    let out: String = (0..n)
                        .map(|k| b[(start as i128 + k as i128 * st as i128) as usize] as char)
                        .collect();
                    return Ok(Val::str(out));
                }
                let offsets: Vec<usize> = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([text.len()])
                    .collect();
                let nchars = offsets.len() - 1;
                let (start, st, n) = pick(nchars);
                if st == 1 {
                    let start = start.max(0) as usize;
                    return Ok(Val::Str(s.sub(offsets[start], offsets[start + n])));
                }
                let mut out = String::new();
                for k in 0..n {
                    let ci = (start as i128 + k as i128 * st as i128) as usize;
                    out.push_str(&text[offsets[ci]..offsets[ci + 1]]);
                }
                Ok(Val::str(out))
            }
            Val::Bytes(b) => {
                let bytes = b.as_bytes();
                let (start, st, n) = pick(bytes.len());
                let out: Vec<u8> = (0..n)
                    .map(|k| bytes[(start as i128 + k as i128 * st as i128) as usize])
                    .collect();
                Ok(Val::Bytes(crate::val::Bin::owned(out)))
            }
            Val::Range(a, b, s) => {
                let len = range_len(*a, *b, *s);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let (start, st, n) = pick(len);
                let first = *a as i128 + start as i128 * *s as i128;
                let new_step = *s as i128 * st as i128;
                let stop = first + n as i128 * new_step;
                match (
                    i64::try_from(first),
                    i64::try_from(stop),
                    i64::try_from(new_step),
                ) {
                    (Ok(x), Ok(y), Ok(z)) if n > 0 => Ok(Val::Range(x, y, z)),
                    (_, _, Ok(z)) if n == 0 => Ok(Val::Range(0, 0, z)),
                    _ => Err(err("OverflowError", "range slice out of 64-bit range")),
                }
            }
            other => Err(type_error(format!(
                "'{}' object is not subscriptable",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn set_item(&mut self, o: &Val<'a>, i: &Val<'a>, v: Val<'a>) -> R<()> {
        match o {
            Val::List(l) => {
                let mut l = l.0.borrow_mut();
                let idx = seq_index(self.index_int(i, "list")?, l.len(), "list assignment")?;
                l[idx] = v;
                Ok(())
            }
            Val::Dict(d) => {
                let k = self.key(i)?;
                let mut d = d.0.borrow_mut();
                if !d.contains_key(&k) && d.len() >= self.limits.max_items {
                    return Err(err(
                        "MemoryError",
                        format!("dict exceeds the limit of {} items", self.limits.max_items),
                    ));
                }
                d.insert(k, v);
                Ok(())
            }
            Val::Rec(_) => Err(type_error(
                "'Row' object does not support item assignment (records are immutable; build a dict instead)",
            )),
            other => Err(type_error(format!(
                "'{}' object does not support item assignment",
                other.type_name()
            ))),
        }
    }

    // ---- iteration -------------------------------------------------------------

    pub(crate) fn iter_of(&mut self, v: &Val<'a>) -> R<PyIter<'a>> {
        Ok(match v {
            Val::List(l) => PyIter::List(l.clone(), 0),
            Val::Tuple(t) => PyIter::Tuple(t.clone(), 0),
            Val::Str(s) => PyIter::Chars(s.clone(), 0),
            Val::Bytes(b) => PyIter::Bytes(b.clone(), 0),
            Val::Range(a, b, s) => PyIter::Range(*a, *s, range_len(*a, *b, *s)),
            Val::Dict(d) => {
                let d = d.0.borrow();
                self.charge(d.len() as u64 / 4)?;
                PyIter::Vals(d.keys().map(key_val).collect::<Vec<_>>().into_iter())
            }
            Val::Set(s) => {
                let s = s.0.borrow();
                self.charge(s.len() as u64 / 4)?;
                PyIter::Vals(s.iter().map(key_val).collect::<Vec<_>>().into_iter())
            }
            Val::Rec(m) => PyIter::Vals(
                m.keys()
                    .map(|k| Val::Str(Str::B(k)))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            other => {
                return Err(type_error(format!(
                    "'{}' object is not iterable",
                    other.type_name()
                )));
            }
        })
    }

    /// All items of an iterable, charged and size-checked.
    pub(crate) fn collect(&mut self, v: &Val<'a>) -> R<Vec<Val<'a>>> {
        match v {
            Val::List(l) => {
                let items = l.0.borrow().clone();
                self.charge(items.len() as u64 / 4)?;
                Ok(items)
            }
            Val::Tuple(t) => {
                self.charge(t.0.len() as u64 / 4)?;
                Ok(t.0.clone())
            }
            Val::Range(a, b, s) => {
                let n = range_len(*a, *b, *s);
                self.alloc_items(usize::try_from(n).unwrap_or(usize::MAX), "list")?;
                let mut it = self.iter_of(v)?;
                let mut out = Vec::with_capacity(n as usize);
                while let Some(x) = it.next_val() {
                    out.push(x);
                }
                Ok(out)
            }
            _ => {
                let mut it = self.iter_of(v)?;
                let mut out = Vec::new();
                while let Some(x) = it.next_val() {
                    self.step()?;
                    out.push(x);
                }
                Ok(out)
            }
        }
    }

    // ---- comprehensions --------------------------------------------------------

    fn eval_comp(&mut self, c: &'a Comp, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        let mut acc = match c.kind {
            CompKind::List | CompKind::Gen => Acc::List(Vec::new()),
            CompKind::Set => Acc::Set(IndexSet::new()),
            CompKind::Dict => Acc::Dict(IndexMap::new()),
        };
        self.comp_loop(c, 0, f, &mut acc)?;
        Ok(match acc {
            Acc::List(v) => Val::list(v),
            Acc::Set(s) => Val::set(s),
            Acc::Dict(d) => Val::dict(d),
            Acc::Find(_, found) => Val::Bool(found),
        })
    }

    /// `any(x for ...)` / `all(x for ...)`, stopping early as Python does.
    pub(crate) fn any_all_lazy(
        &mut self,
        want: bool,
        c: &'a Comp,
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let mut acc = Acc::Find(want, false);
        self.comp_loop(c, 0, f, &mut acc)?;
        let Acc::Find(_, found) = acc else {
            return Ok(Val::None);
        };
        Ok(Val::Bool(if want { found } else { !found }))
    }

    /// Runs generator `gi` and the ones inside it; `true` means stop.
    fn comp_loop(
        &mut self,
        c: &'a Comp,
        gi: usize,
        f: &mut Frame<'a, '_>,
        acc: &mut Acc<'a>,
    ) -> R<bool> {
        let Some(g) = c.gens.get(gi) else {
            let v = self.eval(&c.elt, f)?;
            let max = self.limits.max_items;
            let full = |n: usize| {
                if n >= max {
                    Err(err(
                        "MemoryError",
                        format!("comprehension exceeds the limit of {max} items"),
                    ))
                } else {
                    Ok(())
                }
            };
            match acc {
                Acc::List(out) => {
                    full(out.len())?;
                    out.push(v);
                }
                Acc::Set(out) => {
                    full(out.len())?;
                    let k = self.key(&v)?;
                    out.insert(k);
                }
                Acc::Dict(out) => {
                    full(out.len())?;
                    let val = match &c.val {
                        Some(e) => self.eval(e, f)?,
                        None => Val::None,
                    };
                    let k = self.key(&v)?;
                    out.insert(k, val);
                }
                Acc::Find(want, found) => {
                    if truthy(&v) == *want {
                        *found = true;
                        return Ok(true);
                    }
                }
            }
            return Ok(false);
        };
        let src = self.eval(&g.iter, f)?;
        let mut it = self.iter_of(&src)?;
        'items: while let Some(item) = it.next_val() {
            self.step()?;
            self.assign(&g.target, item, f)?;
            for cond in &g.ifs {
                let t = self.eval(cond, f)?;
                if !truthy(&t) {
                    continue 'items;
                }
            }
            if self.comp_loop(c, gi + 1, f, acc)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    // ---- f-strings ------------------------------------------------------------

    fn eval_fstr(&mut self, parts: &'a [FPart], out: &mut String, f: &mut Frame<'a, '_>) -> R<()> {
        let limit = self.limits.max_str_bytes;
        for p in parts {
            match p {
                FPart::Lit(s) => out.push_str(s),
                FPart::Val {
                    expr,
                    conv,
                    spec,
                    debug,
                } => {
                    let v = self.eval(expr, f)?;
                    if let Some(d) = debug {
                        out.push_str(d);
                    }
                    let conv = match (conv, debug, spec) {
                        (Conv::None, Some(_), None) => Conv::Repr,
                        (c, _, _) => *c,
                    };
                    let v = match conv {
                        Conv::None => v,
                        Conv::Str => Val::Str(str_of(&v, limit)?),
                        Conv::Repr => Val::str(repr(&v, limit)?),
                    };
                    match spec {
                        None => out.push_str(str_of(&v, limit)?.as_str()),
                        Some(sp) => {
                            let mut s = String::new();
                            self.eval_fstr(sp, &mut s, f)?;
                            out.push_str(&format_value(&v, &s, limit)?);
                        }
                    }
                }
            }
            self.alloc_str(out.len())?;
        }
        Ok(())
    }

    // ---- assignment ------------------------------------------------------------

    pub(crate) fn assign(&mut self, t: &'a Target, v: Val<'a>, f: &mut Frame<'a, '_>) -> R<()> {
        match t {
            Target::Slot(s) => {
                Self::store_local(f, *s, v);
                Ok(())
            }
            Target::Index(o, i) => {
                let o = self.eval(o, f)?;
                let i = self.eval(i, f)?;
                self.set_item(&o, &i, v)
            }
            Target::Unpack(ts, star) => {
                let items = self.collect(&v)?;
                match star {
                    None => {
                        if items.len() != ts.len() {
                            return Err(err(
                                "ValueError",
                                if items.len() > ts.len() {
                                    format!("too many values to unpack (expected {})", ts.len())
                                } else {
                                    format!(
                                        "not enough values to unpack (expected {}, got {})",
                                        ts.len(),
                                        items.len()
                                    )
                                },
                            ));
                        }
                        for (t, x) in ts.iter().zip(items) {
                            self.assign(t, x, f)?;
                        }
                    }
                    Some(p) => {
                        let after = ts.len() - p - 1;
                        if items.len() < ts.len() - 1 {
                            return Err(err(
                                "ValueError",
                                format!(
                                    "not enough values to unpack (expected at least {}, got {})",
                                    ts.len() - 1,
                                    items.len()
                                ),
                            ));
                        }
                        let mut items = items;
                        let tail = items.split_off(items.len() - after);
                        let middle = items.split_off(*p);
                        for (t, x) in ts[..*p].iter().zip(items) {
                            self.assign(t, x, f)?;
                        }
                        self.assign(&ts[*p], Val::list(middle), f)?;
                        for (t, x) in ts[p + 1..].iter().zip(tail) {
                            self.assign(t, x, f)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn aug_assign(
        &mut self,
        t: &'a Target,
        op: BinOp,
        e: &'a Expr,
        f: &mut Frame<'a, '_>,
    ) -> R<()> {
        match t {
            Target::Slot(s) => {
                let cur = self.load_local(f, *s)?;
                let rhs = self.eval(e, f)?;
                let new = self.inplace(op, cur, rhs)?;
                Self::store_local(f, *s, new);
                Ok(())
            }
            Target::Index(o, i) => {
                let o = self.eval(o, f)?;
                let i = self.eval(i, f)?;
                let cur = self.get_item(&o, &i)?;
                let rhs = self.eval(e, f)?;
                let new = self.inplace(op, cur, rhs)?;
                self.set_item(&o, &i, new)
            }
            Target::Unpack(..) => Err(err(
                "SyntaxError",
                "illegal expression for augmented assignment",
            )),
        }
    }

    /// `a op= b`: lists are extended in place, as in Python.
    fn inplace(&mut self, op: BinOp, a: Val<'a>, b: Val<'a>) -> R<Val<'a>> {
        if op == BinOp::Add
            && let Val::List(l) = &a
        {
            let items = self.collect(&b)?;
            let n = l.0.borrow().len() + items.len();
            self.alloc_items(n, "list")?;
            l.0.borrow_mut().extend(items);
            return Ok(a);
        }
        self.binop(op, a, b)
    }

    // ---- statements ------------------------------------------------------------

    pub(crate) fn exec_block(&mut self, stmts: &'a [Stmt], f: &mut Frame<'a, '_>) -> R<Flow<'a>> {
        for s in stmts {
            match self.exec(s, f)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    fn exec(&mut self, s: &'a Stmt, f: &mut Frame<'a, '_>) -> R<Flow<'a>> {
        match s {
            Stmt::Expr(e) => {
                self.eval(e, f)?;
                Ok(Flow::Normal)
            }
            Stmt::Assign(targets, e) => self.exec_assign(targets, e, f),
            Stmt::If(test, body, orelse) => self.exec_if(test, body, orelse, f),
            Stmt::For {
                target,
                iter,
                body,
                orelse,
            } => self.exec_for(target, iter, body, orelse, f),
            Stmt::Return(e) => self.exec_return(e, f),
            Stmt::Pass => Ok(Flow::Normal),
            Stmt::Break => Ok(Flow::Break),
            Stmt::Continue => Ok(Flow::Continue),
            _ => self.exec_other(s, f),
        }
    }

    #[inline(never)]
    fn exec_assign(
        &mut self,
        targets: &'a [Target],
        e: &'a Expr,
        f: &mut Frame<'a, '_>,
    ) -> R<Flow<'a>> {
        let v = self.eval(e, f)?;
        if let [t] = targets {
            self.assign(t, v, f)?;
        } else {
            for t in targets {
                self.assign(t, v.clone(), f)?;
            }
        }
        Ok(Flow::Normal)
    }

    #[inline(never)]
    fn exec_if(
        &mut self,
        test: &'a Expr,
        body: &'a [Stmt],
        orelse: &'a [Stmt],
        f: &mut Frame<'a, '_>,
    ) -> R<Flow<'a>> {
        let t = self.eval(test, f)?;
        if truthy(&t) {
            self.exec_block(body, f)
        } else {
            self.exec_block(orelse, f)
        }
    }

    #[inline(never)]
    fn exec_for(
        &mut self,
        target: &'a Target,
        iter: &'a Expr,
        body: &'a [Stmt],
        orelse: &'a [Stmt],
        f: &mut Frame<'a, '_>,
    ) -> R<Flow<'a>> {
        let src = self.eval(iter, f)?;
        let mut it = self.iter_of(&src)?;
        while let Some(item) = it.next_val() {
            self.step()?;
            self.assign(target, item, f)?;
            match self.exec_block(body, f)? {
                Flow::Normal | Flow::Continue => {}
                Flow::Break => return Ok(Flow::Normal),
                r @ Flow::Return(_) => return Ok(r),
            }
        }
        self.exec_block(orelse, f)
    }

    #[inline(never)]
    fn exec_return(&mut self, e: &'a Option<Expr>, f: &mut Frame<'a, '_>) -> R<Flow<'a>> {
        let v = match e {
            Some(e) => self.eval(e, f)?,
            None => Val::None,
        };
        Ok(Flow::Return(v))
    }

    #[inline(never)]
    fn exec_other(&mut self, s: &'a Stmt, f: &mut Frame<'a, '_>) -> R<Flow<'a>> {
        match s {
            Stmt::AugAssign(t, op, e) => self.aug_assign(t, *op, e, f)?,
            Stmt::Def(slot, def) => {
                let c = self.make_closure(def, f)?;
                Self::store_local(f, *slot, c);
            }
            Stmt::Import(slot, m) => Self::store_local(f, *slot, Val::Module(*m)),
            Stmt::ImportFrom(slot, m, name) => {
                let v = self.get_attr(Val::Module(*m), name, None)?;
                Self::store_local(f, *slot, v);
            }
            Stmt::Raise(e) => {
                let Some(e) = e else {
                    return Err(err("RuntimeError", "No active exception to reraise"));
                };
                return Err(match self.eval(e, f)? {
                    Val::Exc(x) if x.msg.is_empty() => EvalError {
                        msg: x.class.name().to_string(),
                    },
                    Val::Exc(x) => err(x.class.name(), &x.msg),
                    Val::Builtin(b) if b.is_exception() => EvalError {
                        msg: b.name().to_string(),
                    },
                    _ => type_error("exceptions must derive from BaseException"),
                });
            }
            Stmt::Assert(test, msg) => {
                let t = self.eval(test, f)?;
                if !truthy(&t) {
                    return Err(match msg {
                        Some(m) => {
                            let m = self.eval(m, f)?;
                            err(
                                "AssertionError",
                                str_of(&m, self.limits.max_str_bytes)?.as_str(),
                            )
                        }
                        None => EvalError {
                            msg: "AssertionError".into(),
                        },
                    });
                }
            }
            _ => return self.exec(s, f),
        }
        Ok(Flow::Normal)
    }

    // ---- calls -----------------------------------------------------------------

    pub(crate) fn make_closure(&mut self, def: &'a FuncDef, f: &mut Frame<'a, '_>) -> R<Val<'a>> {
        let captured = def
            .code
            .free
            .iter()
            .map(|(_, src)| match src {
                FreeSrc::Slot(s) => f.slots[*s as usize].clone(),
                FreeSrc::Free(i) => f.free[*i as usize].clone(),
            })
            .collect();
        let mut defaults = Vec::with_capacity(def.defaults.len());
        for d in &def.defaults {
            defaults.push(self.eval(d, f)?);
        }
        Ok(Val::Func(Rc::new(Closure {
            code: &def.code,
            captured,
            defaults,
        })))
    }

    /// Up to three plain positional arguments, evaluated into an array
    /// (no allocation); `None` when the call needs the general path.
    fn eval_small_args(
        &mut self,
        args: &'a [Elt],
        kw: &'a [Kwarg],
        f: &mut Frame<'a, '_>,
    ) -> R<Option<[Val<'a>; 3]>> {
        if !kw.is_empty() || args.len() > 3 || args.iter().any(|a| matches!(a, Elt::Star(_))) {
            return Ok(None);
        }
        let mut buf = [Val::None, Val::None, Val::None];
        for (slot, a) in buf.iter_mut().zip(args) {
            if let Elt::One(e) = a {
                *slot = self.eval(e, f)?;
            }
        }
        Ok(Some(buf))
    }

    #[allow(clippy::type_complexity)]
    fn eval_args(
        &mut self,
        args: &'a [Elt],
        kw: &'a [Kwarg],
        f: &mut Frame<'a, '_>,
    ) -> R<(Vec<Val<'a>>, Vec<(&'a str, Val<'a>)>)> {
        let a = self.eval_elts(args, f)?;
        let mut k = Vec::with_capacity(kw.len());
        for x in kw {
            k.push((&*x.name, self.eval(&x.value, f)?));
        }
        Ok((a, k))
    }

    fn eval_call(
        &mut self,
        func: &'a Expr,
        args: &'a [Elt],
        kw: &'a [Kwarg],
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        let callee = self.eval(func, f)?;
        if let Val::Builtin(b @ (Builtin::Any | Builtin::All)) = callee
            && kw.is_empty()
            && let [Elt::One(Expr::Comp(c))] = args
            && c.kind == CompKind::Gen
        {
            return self.any_all_lazy(b == Builtin::Any, c, f);
        }
        if let Some(buf) = self.eval_small_args(args, kw, f)? {
            return self.call_value(&callee, &buf[..args.len()], &[]);
        }
        let (a, k) = self.eval_args(args, kw, f)?;
        self.call_value(&callee, &a, &k)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_method_call(
        &mut self,
        recv: Val<'a>,
        name: &'a str,
        method: Option<Method>,
        args: &'a [Elt],
        kw: &'a [Kwarg],
        pattern: Option<&'a PatternObj>,
        hint: &'a AtomicUsize,
        f: &mut Frame<'a, '_>,
    ) -> R<Val<'a>> {
        // A record's field wins over a dict method of the same name.
        let direct = match (&recv, method) {
            (Val::Rec(m), Some(_)) => lookup(m, name, Some(hint)).is_none(),
            (Val::Rec(_), None) => false,
            (_, Some(_)) => true,
            (_, None) => false,
        };
        if direct && let Some(m) = method {
            // Python looks the method up before it evaluates the arguments:
            // `x.startswith(f())` on a float fails on the attribute first
            if !crate::builtins::has_method(&recv, m) {
                let callee = self.get_attr(recv, name, Some(hint))?;
                let (a, k) = self.eval_args(args, kw, f)?;
                return self.call_value(&callee, &a, &k);
            }
            if let Some(buf) = self.eval_small_args(args, kw, f)? {
                return self.call_method(recv, m, name, &buf[..args.len()], &[], pattern);
            }
            let (a, k) = self.eval_args(args, kw, f)?;
            return self.call_method(recv, m, name, &a, &k, pattern);
        }
        let callee = self.get_attr(recv, name, Some(hint))?;
        let (a, k) = self.eval_args(args, kw, f)?;
        self.call_value(&callee, &a, &k)
    }

    pub(crate) fn call_value(
        &mut self,
        callee: &Val<'a>,
        args: &[Val<'a>],
        kw: &[(&'a str, Val<'a>)],
    ) -> R<Val<'a>> {
        match callee {
            Val::Func(c) => self.call_closure(c, args, kw),
            Val::Builtin(b) => self.call_builtin(*b, args, kw),
            Val::Method(m) => {
                let name = m.method.name();
                if let Val::Builtin(b) = &m.recv {
                    // unbound (`str.lower`): the first argument is the receiver
                    let Some(recv) = args.first() else {
                        return Err(type_error(format!(
                            "unbound method {}.{name}() needs an argument",
                            b.name()
                        )));
                    };
                    if !Self::isinstance_one(recv, &m.recv)? {
                        return Err(type_error(format!(
                            "descriptor '{name}' for '{}' objects doesn't apply to a '{}' object",
                            b.name(),
                            recv.type_name()
                        )));
                    }
                    return self.call_method(recv.clone(), m.method, name, &args[1..], kw, None);
                }
                self.call_method(m.recv.clone(), m.method, name, args, kw, None)
            }
            other => Err(type_error(format!(
                "'{}' object is not callable",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn call_closure(
        &mut self,
        c: &Rc<Closure<'a>>,
        args: &[Val<'a>],
        kw: &[(&'a str, Val<'a>)],
    ) -> R<Val<'a>> {
        self.enter()?;
        let r = self.call_closure_inner(c, args, kw);
        self.depth -= 1;
        r
    }

    fn call_closure_inner(
        &mut self,
        c: &Rc<Closure<'a>>,
        args: &[Val<'a>],
        kw: &[(&'a str, Val<'a>)],
    ) -> R<Val<'a>> {
        let code = c.code;
        let mut frame = Frame::new(code, &c.captured);
        self.bind_params(c, &mut frame, args, kw)?;
        match &code.body {
            Body::Expr(e) => self.eval(e, &mut frame),
            Body::Stmts(s) => match self.exec_block(s, &mut frame)? {
                Flow::Return(v) => Ok(v),
                _ => Ok(Val::None),
            },
        }
    }

    #[inline(never)]
    fn bind_params(
        &mut self,
        c: &Rc<Closure<'a>>,
        frame: &mut Frame<'a, '_>,
        args: &[Val<'a>],
        kw: &[(&'a str, Val<'a>)],
    ) -> R<()> {
        let code = c.code;
        let npos = code.params.iter().filter(|p| !p.kw_only).count();
        if args.len() > npos {
            return Err(call_error(code, CallError::TooMany(npos, args.len())));
        }
        let mut filled = [false; 256];
        for (i, a) in args.iter().enumerate() {
            Self::store_local(frame, code.params[i].slot, a.clone());
            filled[i] = true;
        }
        for (name, v) in kw {
            let Some(i) = code.params.iter().position(|p| &*p.name == *name) else {
                return Err(call_error(code, CallError::Unexpected(name)));
            };
            if filled[i] {
                return Err(call_error(code, CallError::Multiple(name)));
            }
            Self::store_local(frame, code.params[i].slot, v.clone());
            filled[i] = true;
        }
        for (i, p) in code.params.iter().enumerate() {
            if filled[i] {
                continue;
            }
            match p.default {
                Some(d) => Self::store_local(frame, p.slot, c.defaults[d as usize].clone()),
                None => return Err(call_error(code, CallError::Missing(p))),
            }
        }
        Ok(())
    }

    /// An exception instance for `raise X(msg)`.
    pub(crate) fn make_exc(&mut self, class: Builtin, args: &[Val<'a>]) -> R<Val<'a>> {
        let msg = match args {
            [] => String::new(),
            [one] => str_of(one, self.limits.max_str_bytes)?.as_str().to_string(),
            many => repr(&Val::tuple(many.to_vec()), self.limits.max_str_bytes)?,
        };
        Ok(Val::Exc(Rc::new(ExcObj { class, msg })))
    }

    /// Looks up a compiled pattern for a run-time pattern string.
    pub(crate) fn pattern_for(&mut self, src: &str, flags: i64) -> R<Rc<PatternObj>> {
        if let Some((_, _, p)) = self
            .re_cache
            .iter()
            .find(|(s, fl, _)| s == src && *fl == flags)
        {
            return Ok(p.clone());
        }
        self.charge(src.len() as u64 + 100)?;
        let p = Rc::new(PatternObj::new(src, flags).map_err(|e| err("re.error", e))?);
        if self.re_cache.len() >= 16 {
            self.re_cache.remove(0);
        }
        self.re_cache.push((src.to_string(), flags, p.clone()));
        Ok(p)
    }
}

enum CallError<'x> {
    TooMany(usize, usize),
    Unexpected(&'x str),
    Multiple(&'x str),
    Missing(&'x crate::ir::Param),
}

#[cold]
#[inline(never)]
fn call_error(code: &FuncCode, e: CallError<'_>) -> EvalError {
    let name = &code.name;
    type_error(match e {
        CallError::TooMany(npos, n) => format!(
            "{name}() takes {npos} positional argument{} but {n} {} given",
            if npos == 1 { "" } else { "s" },
            if n == 1 { "was" } else { "were" }
        ),
        CallError::Unexpected(k) => format!("{name}() got an unexpected keyword argument '{k}'"),
        CallError::Multiple(k) => format!("{name}() got multiple values for argument '{k}'"),
        CallError::Missing(p) => format!(
            "{name}() missing 1 required {}argument: '{}'",
            if p.kw_only {
                "keyword-only "
            } else {
                "positional "
            },
            p.name
        ),
    })
}

#[cold]
#[inline(never)]
fn depth_error(max: usize) -> EvalError {
    err(
        "RecursionError",
        format!("maximum recursion depth exceeded ({max} nested calls)"),
    )
}

#[cold]
#[inline(never)]
fn stack_error(depth: usize) -> EvalError {
    err(
        "RecursionError",
        format!("maximum recursion depth exceeded (stack exhausted after {depth} nested calls)"),
    )
}

#[cold]
#[inline(never)]
fn budget_error(max: u64) -> EvalError {
    err(
        "RuntimeError",
        format!(
            "step budget exhausted: more than {max} steps on one record (a very large loop, range or recursion?)"
        ),
    )
}
