//! # rill-expr
//!
//! A sandboxed evaluator for a documented subset of Python, as used by
//! Beam-YAML-style transforms: `Filter` (`keep: "score > 0.8"`),
//! `MapToFields` (`fields: {x: "element.strip()"}`) and friends.
//!
//! Source is parsed once with the ruff Python parser, checked against the
//! subset below, and compiled into a small tree in which names are resolved
//! to slots and constant regular expressions are already compiled. Each
//! record is then evaluated against that tree, with no parsing.
//!
//! ```
//! use rill_core::{record, Value};
//! use rill_expr::{Program, truthy};
//!
//! let keep = Program::expression("temp > 20 and device.startswith('a')").unwrap();
//! let r = record! {"temp" => 21.5, "device" => "a-7"};
//! assert!(truthy(&keep.eval(&r).unwrap()));
//!
//! let f = Program::callable("lambda row: row.device.upper()").unwrap();
//! assert_eq!(f.eval(&r).unwrap(), Value::from("A-7"));
//! ```
//!
//! ## Two forms (Beam semantics)
//!
//! - [`Program::expression`]: every record field is a variable
//!   (`score > 0.8`); a bare field name reads the field (`plant`). A name
//!   that is neither a field nor a local is a per-record [`EvalError`].
//!   Fields shadow builtins of the same name; `math` and `re` are available
//!   without `import`.
//! - [`Program::callable`]: `lambda row: ...`, or a script whose last
//!   statement is `def f(row): ...` (it may be preceded by imports, helper
//!   `def`s and assignments). The function receives the row: fields are
//!   attributes (`row.x`) and items (`row['x']`); nested maps are rows too.
//!
//! ## The supported subset
//!
//! | Area | Supported | Not supported |
//! |---|---|---|
//! | Literals | int (64-bit), float, str (escapes, implicit concatenation, raw), f-strings with `{expr}`, `!r`/`!s`, format specs (`{x:.2f}`, `{n:>8,}`) and `{x=}`, bytes, `True`/`False`/`None`, list, tuple, dict, set | complex, `...`, t-strings, ints beyond 64 bits |
//! | Names | record fields, locals, closures over enclosing functions, builtins | `global`, `nonlocal`, dunder names (`__class__`, `__import__`) |
//! | Attributes, subscripts | `row.x`, `row['x']`, nested maps as rows, `t.shape`; indexing and slicing of str/list/tuple/bytes/range with negative indices and steps | dunder attributes, assigning to attributes, slice assignment, multi-dimensional slices |
//! | Operators | `+ - * / // % **` with Python semantics (`/` gives float, floor `//` and `%`), `<< >> & \| ^ ~`, unary `- + not`, set and dict `\|`, str `%` formatting, chained comparisons, `in`/`not in`, `is`/`is not`, `and`/`or` returning an operand, `x if c else y`, `:=` | `@`; ints never wrap: overflow is an `OverflowError` |
//! | Functions | `lambda`, `def` with defaults and keyword-only parameters, nested helper defs, recursion (depth-capped), keyword arguments, `*iterable` arguments | `*args`/`**kwargs` parameters, `**mapping` arguments, decorators, generators (`yield`), `async` |
//! | Statements | assignment (incl. tuple unpacking, `a, *rest = xs`, `x += 1`, `d[k] = v`), `if`/`elif`/`else`, `for` (with `break`, `continue`, `else`) over finite iterables, `return`, `pass`, `assert`, `raise ValueError(...)` | `while` (compile error), `try`, `with`, `class`, `del`, `match`, `global` |
//! | Comprehensions | list, dict, set comprehensions, generator expressions (`sum(x for x in xs)`; `any`/`all` stop early) | generator objects (other generator expressions are built eagerly) |
//! | Builtins | `len str int float bool abs min max round sum any all sorted reversed enumerate zip range list dict tuple set bytes isinstance repr map filter format divmod pow hex oct bin ord chr print` (no-op), exceptions for `raise` | `open exec eval compile __import__ getattr setattr globals locals vars input type id iter next ...` (compile error) |
//! | str methods | `strip lstrip rstrip lower upper title capitalize swapcase casefold split rsplit splitlines join replace startswith endswith find rfind index rindex count isdigit isdecimal isnumeric isalpha isalnum isspace isupper islower istitle format zfill partition rpartition center ljust rjust encode removeprefix removesuffix` | the rest |
//! | list, dict, set | list `append extend insert pop remove index count copy sort reverse clear`; dict `get keys values items pop setdefault update copy clear` (views are lists); set `add discard remove pop union intersection difference issubset issuperset update copy clear` | |
//! | `import re` | `match search fullmatch sub subn findall finditer split compile escape`, flags `I M S X A`, patterns with the same methods, match objects (`group(n\|name)`, `groups`, `groupdict`, `start`, `end`, `span`, `m[1]`, truthiness); replacement templates `\1`, `\g<name>` and functions | backreferences, lookahead/lookbehind, atomic groups (the `regex` crate has none); non-multiline `$` matches only at the very end |
//! | `import math` | `sqrt floor ceil trunc log log10 log2 exp pow fabs isnan isinf isfinite sin cos tan asin acos atan atan2 hypot degrees radians copysign fmod isclose gcd prod fsum`, `pi e tau inf nan` | the rest |
//! | Other modules | | every other `import` (compile error naming the module) |
//!
//! Values map to records as: int ↔ `Int`, float ↔ `Float`, str ↔ `String`,
//! bytes ↔ `Bytes`, `None` ↔ `Null`, bool ↔ `Bool`, list/tuple (and set) →
//! `List`, dict → `Map` (str keys only), maps → rows; a `Tensor` is opaque
//! but supports `len()`, `.shape`, `.dtype`, `.ndim`, `.size`. Returning a
//! function, module, pattern or match object is an error ("cannot store a
//! re.Match in a record"). `str()`/`repr()` of floats match Python
//! (`str(0.1) == '0.1'`, `str(1e20) == '1e+20'`).
//!
//! ## Resource bounds
//!
//! Each evaluation has a step budget (loop iterations, calls and bulk work;
//! default 1,000,000), caps on built strings (10 MB) and collections
//! (1,000,000 items), a call-depth cap (64) and a stack guard; exceeding any
//! is an [`EvalError`] (`RuntimeError: step budget exhausted ...`,
//! `MemoryError: ...`, `RecursionError: ...`), never a hang or a panic. See
//! [`Limits`].

mod builtins;
mod compile;
mod fmt;
pub use fmt::float_repr;
mod interp;
mod ir;
mod pyre;
pub mod spec;
mod val;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rill_core::{Record, Value};

use crate::compile::{Compiled, Kind};
use crate::interp::{Frame, Interp};
use crate::ir::Body;

/// A program that failed to compile: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct CompileError {
    pub msg: String,
    /// 1-based line within the source.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

/// An evaluation that failed for one record; the message reads like Python's
/// (`TypeError: unsupported operand type(s) for +: 'int' and 'str'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct EvalError {
    pub msg: String,
}

pub(crate) type R<T> = Result<T, EvalError>;

/// An error of a Python exception kind: `"{kind}: {msg}"`.
pub(crate) fn err(kind: &str, msg: impl std::fmt::Display) -> EvalError {
    EvalError {
        msg: format!("{kind}: {msg}"),
    }
}

/// Per-evaluation resource bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Steps (loop iterations, calls, and bulk work in proportion to its
    /// size) one evaluation may take.
    pub max_steps: u64,
    /// Nested calls of Python-level functions.
    pub max_depth: usize,
    /// Bytes in one built string.
    pub max_str_bytes: usize,
    /// Items in one built list, tuple, dict or set.
    pub max_items: usize,
    /// Bytes of the value an evaluation returns, as it is in the record:
    /// a list holding one large string many times costs each copy.
    pub max_result_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_steps: 1_000_000,
            max_depth: 64,
            max_str_bytes: 10_000_000,
            max_items: 1_000_000,
            max_result_bytes: 64 << 20,
        }
    }
}

/// A compiled program; cheap to clone and shareable between threads.
#[derive(Clone)]
pub struct Program {
    inner: Arc<Compiled>,
    limits: Limits,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("fields_read", &self.inner.fields_read)
            .finish_non_exhaustive()
    }
}

/// Runs the compiler on a thread with a large stack: the parser is
/// recursive, and deeply nested input must not overflow the caller's stack.
fn on_big_stack(
    src: &str,
    f: fn(&str) -> Result<Compiled, CompileError>,
) -> Result<Compiled, CompileError> {
    for stack in [256usize << 20, 32 << 20] {
        let spawned = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("rill-expr-compile".into())
                .stack_size(stack)
                .spawn_scoped(s, || f(src))
                .map(|h| h.join())
        });
        match spawned {
            Ok(Ok(r)) => return r,
            Ok(Err(p)) => std::panic::resume_unwind(p),
            Err(_) => continue,
        }
    }
    Err(CompileError {
        msg: "could not start the compiler thread".into(),
        line: 1,
        col: 1,
    })
}

impl Program {
    /// An expression over the record's fields: bare field names are
    /// variables (Beam: `keep: "score > 0.8"`,
    /// `fields: {x: "element.strip('# \\n')"}`).
    pub fn expression(src: &str) -> Result<Program, CompileError> {
        Ok(Program {
            inner: Arc::new(on_big_stack(src, compile::compile_expression)?),
            limits: Limits::default(),
        })
    }

    /// A callable applied to the whole row: `lambda row: row.x > 1`, or a
    /// small script whose last top-level statement is `def name(row): ...`
    /// (it may be preceded by `import re` / `import math`, other defs and
    /// assignments).
    pub fn callable(src: &str) -> Result<Program, CompileError> {
        Ok(Program {
            inner: Arc::new(on_big_stack(src, compile::compile_callable)?),
            limits: Limits::default(),
        })
    }

    /// The same program with other resource bounds.
    pub fn with_limits(mut self, limits: Limits) -> Program {
        self.limits = limits;
        self
    }

    /// The resource bounds of each evaluation.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Evaluates against one record.
    pub fn eval(&self, record: &Record) -> Result<Value, EvalError> {
        self.run(&record.fields, None)
    }

    /// Calls a callable with `arg` instead of a row (a `Combine` fn gets
    /// the list of a group's values: `lambda values: max(values) - min(values)`).
    /// An expression is evaluated with no fields.
    pub fn call(&self, arg: &Value) -> Result<Value, EvalError> {
        self.run(&rill_core::Fields::default(), Some(arg))
    }

    /// Runs the program over `rec`; a callable gets `arg`, else the row.
    fn run(&self, rec: &rill_core::Fields, arg: Option<&Value>) -> Result<Value, EvalError> {
        let inner: &Compiled = &self.inner;
        let marker = 0u8;
        let mut it = Interp {
            fields: &inner.fields,
            rec,
            limits: self.limits,
            steps: 0,
            depth: 0,
            stack_base: &marker as *const u8 as usize,
            re_cache: Vec::new(),
            shared: Vec::new(),
        };
        // a walk over values (hashing, comparing) stops within the budget
        val::set_walk_cap(self.limits.max_steps.saturating_mul(8).saturating_add(8));
        let v = match &inner.kind {
            Kind::Expr(code) => {
                let mut frame = Frame::new(code, &[]);
                match &code.body {
                    Body::Expr(e) => it.eval(e, &mut frame)?,
                    Body::Stmts(_) => val::Val::None,
                }
            }
            Kind::Callable { module, entry } => {
                let mut frame = Frame::new(module, &[]);
                if let Body::Stmts(stmts) = &module.body {
                    it.exec_block(stmts, &mut frame)?;
                }
                let f = it.eval(entry, &mut frame)?;
                let a = match arg {
                    Some(v) => it.rec_val(v)?,
                    None => val::Val::Rec(rec),
                };
                it.call_value(&f, &[a], &[])?
            }
        };
        val::to_value(&v, self.limits.max_items, self.limits.max_result_bytes)
    }

    /// Names of record fields the program reads, where they are known: the
    /// free names of an expression, or `row.<name>` / `row['<name>']` in
    /// the function a callable applies.
    pub fn fields_read(&self) -> Vec<String> {
        self.inner.fields_read.clone()
    }
}

/// Python truthiness of a record value (`None`, `0`, `0.0`, `''`, empty
/// bytes, lists and maps are false; a tensor is true when it has elements).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Bytes(b) => !b.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Tensor(t) => !t.data().is_empty(),
    }
}
