//! From the ruff Python AST to the IR: scope analysis (locals, closures,
//! record fields), checks of the supported subset, constant regexes.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use rustpython_ruff_python_ast::visitor::{Visitor, walk_expr};
use rustpython_ruff_python_ast::{self as ast};
use rustpython_ruff_python_parser::{ParseError, parse_expression, parse_module};
use rustpython_ruff_text_size::{Ranged, TextRange};

use crate::CompileError;
use crate::builtins::{Builtin, Method, Module, module_attr};
use crate::ir::{
    BinOp, Body, CmpOp, Comp, CompFor, CompKind, Const, Conv, Elt, Expr, FPart, FieldSlot, FreeSrc,
    FuncCode, FuncDef, Kwarg, Param, Stmt, Target, UnOp,
};
use crate::pyre::{PatternObj, flag_named};

/// How deeply expressions and blocks may nest.
pub(crate) const MAX_NESTING: usize = 100;

/// Python builtins that are deliberately unavailable (no I/O, no reflection).
const FORBIDDEN: &[&str] = &[
    "open",
    "exec",
    "eval",
    "compile",
    "__import__",
    "globals",
    "locals",
    "vars",
    "getattr",
    "setattr",
    "delattr",
    "hasattr",
    "input",
    "breakpoint",
    "exit",
    "quit",
    "help",
    "dir",
    "memoryview",
    "object",
    "type",
    "super",
    "classmethod",
    "staticmethod",
    "property",
    "id",
];

/// Python builtins that rill's subset does not implement.
const UNSUPPORTED: &[&str] = &[
    "iter",
    "next",
    "hash",
    "callable",
    "issubclass",
    "frozenset",
    "complex",
    "bytearray",
    "ascii",
    "slice",
    "aiter",
    "anext",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Expression,
    Callable,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    ExprTop,
    Module,
    Function,
}

struct Scope {
    kind: ScopeKind,
    locals: HashMap<String, u32>,
    comp: Vec<HashMap<String, u32>>,
    slot_names: Vec<Box<str>>,
    cells: Vec<u32>,
    free: Vec<(Box<str>, FreeSrc)>,
    loops: usize,
}

impl Scope {
    fn new(kind: ScopeKind) -> Scope {
        Scope {
            kind,
            locals: HashMap::new(),
            comp: Vec::new(),
            slot_names: Vec::new(),
            cells: Vec::new(),
            free: Vec::new(),
            loops: 0,
        }
    }

    fn lookup(&self, name: &str) -> Option<u32> {
        for m in self.comp.iter().rev() {
            if let Some(s) = m.get(name) {
                return Some(*s);
            }
        }
        self.locals.get(name).copied()
    }

    fn new_slot(&mut self, name: &str) -> u32 {
        self.slot_names.push(name.into());
        (self.slot_names.len() - 1) as u32
    }

    fn local(&mut self, name: &str) -> u32 {
        if let Some(s) = self.locals.get(name) {
            return *s;
        }
        let s = self.new_slot(name);
        self.locals.insert(name.to_string(), s);
        s
    }
}

/// Ends the slot name of a comprehension's variable: reading one before
/// its loop ran is an `UnboundLocalError` also at the top level, as in
/// CPython, where a comprehension is a scope of its own.
pub(crate) const COMP_MARK: char = '\u{1}';

/// The result of compiling.
pub(crate) struct Compiled {
    pub kind: Kind,
    pub fields: Vec<FieldSlot>,
    pub fields_read: Vec<String>,
}

pub(crate) enum Kind {
    Expr(FuncCode),
    Callable { module: FuncCode, entry: Expr },
}

struct Compiler<'s> {
    /// The text that was parsed.
    src: &'s str,
    /// The text as the user wrote it, for positions.
    orig: &'s str,
    /// Byte offset of `src` in `orig` (expression mode trims), or
    /// `None` when `src` was dedented (callable mode).
    base: Option<usize>,
    col_shift: usize,
    mode: Mode,
    scopes: Vec<Scope>,
    fields: Vec<FieldSlot>,
    field_ids: HashMap<String, u32>,
    fields_read: Vec<String>,
    row: Option<(usize, u32)>,
    mark_row: bool,
    depth: usize,
}

type CR<T> = Result<T, CompileError>;

/// Line and column (1-based, columns in characters) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(src.len());
    while !src.is_char_boundary(off) {
        off -= 1;
    }
    let before = &src[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Rough bracket depth of the source, ignoring string literals: a guard
/// against sources that would nest the parser very deeply.
fn bracket_depth(src: &str) -> usize {
    let b = src.as_bytes();
    let (mut i, mut depth, mut max) = (0, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                let triple = b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q;
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q
                        && (!triple || (b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q))
                    {
                        i += if triple { 3 } else { 1 };
                        break;
                    }
                    if b[i] == b'\n' && !triple {
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

fn pre_checks(src: &str) -> CR<()> {
    const MAX_SRC: usize = 64 * 1024;
    if src.len() > MAX_SRC {
        return Err(CompileError {
            msg: format!(
                "source is too long ({} bytes; the limit is {MAX_SRC})",
                src.len()
            ),
            line: 1,
            col: 1,
        });
    }
    if bracket_depth(src) > MAX_NESTING {
        return Err(CompileError {
            msg: format!("brackets nested more than {MAX_NESTING} levels deep"),
            line: 1,
            col: 1,
        });
    }
    Ok(())
}

fn is_dunder(name: &str) -> bool {
    name.len() > 4 && name.starts_with("__") && name.ends_with("__")
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "and"
            | "as"
            | "assert"
            | "async"
            | "await"
            | "break"
            | "class"
            | "continue"
            | "def"
            | "del"
            | "elif"
            | "else"
            | "except"
            | "finally"
            | "for"
            | "from"
            | "global"
            | "if"
            | "import"
            | "in"
            | "is"
            | "lambda"
            | "nonlocal"
            | "not"
            | "or"
            | "pass"
            | "raise"
            | "return"
            | "try"
            | "while"
            | "with"
            | "yield"
    )
}

/// Removes the common leading indentation of all non-blank lines.
fn dedent(src: &str) -> (String, usize) {
    let indent = src
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);
    if indent == 0 {
        return (src.to_string(), 0);
    }
    // Every non-blank line starts with at least `indent` bytes of ASCII
    // blanks; blank lines become empty.
    let out: Vec<&str> = src
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                &l[indent..]
            }
        })
        .collect();
    (out.join("\n"), indent)
}

/// Names bound by `:=` in an expression (not inside lambdas).
struct WalrusNames<'n> {
    out: &'n mut Vec<String>,
}

impl<'a> Visitor<'a> for WalrusNames<'_> {
    fn visit_expr(&mut self, e: &'a ast::Expr) {
        match e {
            ast::Expr::Named(n) => {
                if let ast::Expr::Name(t) = &*n.target {
                    self.out.push(t.id.to_string());
                }
                walk_expr(self, e);
            }
            ast::Expr::Lambda(_) => {}
            _ => walk_expr(self, e),
        }
    }
}

fn walrus_in(e: &ast::Expr, out: &mut Vec<String>) {
    WalrusNames { out }.visit_expr(e);
}

fn target_names(e: &ast::Expr, out: &mut Vec<String>) {
    match e {
        ast::Expr::Name(n) => out.push(n.id.to_string()),
        ast::Expr::Tuple(t) => t.elts.iter().for_each(|x| target_names(x, out)),
        ast::Expr::List(l) => l.elts.iter().for_each(|x| target_names(x, out)),
        ast::Expr::Starred(s) => target_names(&s.value, out),
        other => walrus_in(other, out),
    }
}

/// Names a block binds (its local variables), in order.
fn bound_names(stmts: &[ast::Stmt], out: &mut Vec<String>) {
    for s in stmts {
        match s {
            ast::Stmt::FunctionDef(d) => out.push(d.name.to_string()),
            ast::Stmt::Assign(a) => {
                walrus_in(&a.value, out);
                a.targets.iter().for_each(|t| target_names(t, out));
            }
            ast::Stmt::AugAssign(a) => {
                walrus_in(&a.value, out);
                target_names(&a.target, out);
            }
            ast::Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    walrus_in(v, out);
                }
                target_names(&a.target, out);
            }
            ast::Stmt::For(f) => {
                walrus_in(&f.iter, out);
                target_names(&f.target, out);
                bound_names(&f.body, out);
                bound_names(&f.orelse, out);
            }
            ast::Stmt::If(i) => {
                walrus_in(&i.test, out);
                bound_names(&i.body, out);
                for c in &i.elif_else_clauses {
                    if let Some(t) = &c.test {
                        walrus_in(t, out);
                    }
                    bound_names(&c.body, out);
                }
            }
            ast::Stmt::Import(i) => {
                for a in &i.names {
                    let n = a.asname.as_ref().unwrap_or(&a.name);
                    out.push(n.as_str().split('.').next().unwrap_or("").to_string());
                }
            }
            ast::Stmt::ImportFrom(i) => {
                for a in &i.names {
                    out.push(a.asname.as_ref().unwrap_or(&a.name).to_string());
                }
            }
            ast::Stmt::Expr(e) => walrus_in(&e.value, out),
            ast::Stmt::Return(r) => {
                if let Some(v) = &r.value {
                    walrus_in(v, out);
                }
            }
            ast::Stmt::Raise(r) => {
                if let Some(v) = &r.exc {
                    walrus_in(v, out);
                }
            }
            ast::Stmt::Assert(a) => walrus_in(&a.test, out),
            _ => {}
        }
    }
}

enum FnBody<'x> {
    Expr(&'x ast::Expr),
    Stmts(&'x [ast::Stmt]),
}

fn binop(op: ast::Operator) -> Option<BinOp> {
    Some(match op {
        ast::Operator::Add => BinOp::Add,
        ast::Operator::Sub => BinOp::Sub,
        ast::Operator::Mult => BinOp::Mul,
        ast::Operator::Div => BinOp::Div,
        ast::Operator::FloorDiv => BinOp::FloorDiv,
        ast::Operator::Mod => BinOp::Mod,
        ast::Operator::Pow => BinOp::Pow,
        ast::Operator::LShift => BinOp::LShift,
        ast::Operator::RShift => BinOp::RShift,
        ast::Operator::BitOr => BinOp::BitOr,
        ast::Operator::BitXor => BinOp::BitXor,
        ast::Operator::BitAnd => BinOp::BitAnd,
        ast::Operator::MatMult => return None,
    })
}

/// `re.I | re.M` and int literals, for pre-compiling constant patterns.
fn static_flags(e: &ast::Expr) -> Option<i64> {
    match e {
        ast::Expr::Attribute(a) => match &*a.value {
            ast::Expr::Name(n) if n.id.as_str() == "re" => flag_named(a.attr.as_str()),
            _ => None,
        },
        ast::Expr::BinOp(b) if b.op == ast::Operator::BitOr => {
            Some(static_flags(&b.left)? | static_flags(&b.right)?)
        }
        ast::Expr::NumberLiteral(n) => match &n.value {
            ast::Number::Int(i) => i.as_i64(),
            _ => None,
        },
        _ => None,
    }
}

impl<'s> Compiler<'s> {
    fn new(
        src: &'s str,
        orig: &'s str,
        base: Option<usize>,
        col_shift: usize,
        mode: Mode,
    ) -> Compiler<'s> {
        Compiler {
            src,
            orig,
            base,
            col_shift,
            mode,
            scopes: Vec::new(),
            fields: Vec::new(),
            field_ids: HashMap::new(),
            fields_read: Vec::new(),
            row: None,
            mark_row: false,
            depth: 0,
        }
    }

    fn pos(&self, offset: usize) -> (usize, usize) {
        match self.base {
            Some(b) => line_col(self.orig, b + offset),
            None => {
                let (l, c) = line_col(self.src, offset);
                (l, c + self.col_shift)
            }
        }
    }

    fn error(&self, range: TextRange, msg: impl Into<String>) -> CompileError {
        let (line, col) = self.pos(range.start().to_usize());
        CompileError {
            msg: msg.into(),
            line,
            col,
        }
    }

    fn parse_error(&self, e: &ParseError) -> CompileError {
        let (line, col) = self.pos(e.location.start().to_usize());
        CompileError {
            msg: format!("SyntaxError: {}", e.error),
            line,
            col,
        }
    }

    fn cur(&mut self) -> &mut Scope {
        let n = self.scopes.len() - 1;
        &mut self.scopes[n]
    }

    fn field_id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.field_ids.get(name) {
            return *i;
        }
        let i = self.fields.len() as u32;
        self.fields.push(FieldSlot {
            name: name.into(),
            hint: AtomicUsize::new(0),
        });
        self.field_ids.insert(name.to_string(), i);
        i
    }

    fn note_field(&mut self, name: &str) {
        if !self.fields_read.iter().any(|f| f == name) {
            self.fields_read.push(name.to_string());
        }
    }

    fn enter(&mut self, range: TextRange) -> CR<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(
                range,
                format!("code is nested more than {MAX_NESTING} levels deep"),
            ));
        }
        Ok(())
    }

    fn check_name(&self, name: &str, range: TextRange) -> CR<()> {
        if is_dunder(name) {
            return Err(self.error(
                range,
                format!("names with double underscores (`{name}`) are not allowed"),
            ));
        }
        Ok(())
    }

    fn forbidden(&self, name: &str, range: TextRange) -> CR<()> {
        if FORBIDDEN.contains(&name) {
            return Err(self.error(
                range,
                format!("`{name}` is not allowed in rill's Python sandbox"),
            ));
        }
        if UNSUPPORTED.contains(&name) {
            return Err(self.error(
                range,
                format!("`{name}()` is not supported by rill's Python subset"),
            ));
        }
        Ok(())
    }

    /// Finds `name` as a variable captured from an enclosing function.
    fn resolve_free(&mut self, level: usize, name: &str) -> Option<u32> {
        if let Some(i) = self.scopes[level]
            .free
            .iter()
            .position(|(n, _)| &**n == name)
        {
            return Some(i as u32);
        }
        if level == 0 {
            return None;
        }
        let parent = level - 1;
        let src = match self.scopes[parent].lookup(name) {
            Some(slot) => {
                if !self.scopes[parent].cells.contains(&slot) {
                    self.scopes[parent].cells.push(slot);
                }
                FreeSrc::Slot(slot)
            }
            None => FreeSrc::Free(self.resolve_free(parent, name)?),
        };
        self.scopes[level].free.push((name.into(), src));
        Some((self.scopes[level].free.len() - 1) as u32)
    }

    fn is_bound(&mut self, name: &str) -> bool {
        let n = self.scopes.len() - 1;
        self.scopes[n].lookup(name).is_some() || self.resolve_free(n, name).is_some()
    }

    fn load_name(&mut self, name: &str, range: TextRange) -> CR<Expr> {
        self.check_name(name, range)?;
        let n = self.scopes.len() - 1;
        if let Some(s) = self.scopes[n].lookup(name) {
            return Ok(Expr::Local(s));
        }
        if let Some(i) = self.resolve_free(n, name) {
            return Ok(Expr::Free(i));
        }
        match self.mode {
            Mode::Expression => {
                let fid = self.field_id(name);
                if let Some(b) = Builtin::from_name(name) {
                    return Ok(Expr::FieldOr(fid, Box::new(Expr::Builtin(b))));
                }
                if let Some(m) = Module::from_name(name) {
                    return Ok(Expr::FieldOr(fid, Box::new(Expr::Module(m))));
                }
                self.note_field(name);
                Ok(Expr::Field(fid))
            }
            Mode::Callable => {
                if let Some(b) = Builtin::from_name(name) {
                    return Ok(Expr::Builtin(b));
                }
                self.forbidden(name, range)?;
                if Module::from_name(name).is_some() {
                    return Err(self.error(
                        range,
                        format!("name '{name}' is not defined (add `import {name}` at the top of the script)"),
                    ));
                }
                Err(self.error(range, format!("name '{name}' is not defined")))
            }
        }
    }

    fn store_slot(&mut self, name: &str, range: TextRange) -> CR<u32> {
        self.check_name(name, range)?;
        Ok(self.cur().local(name))
    }

    // ---- statements --------------------------------------------------------------

    fn block(&mut self, stmts: &[ast::Stmt]) -> CR<Vec<Stmt>> {
        let mut out = Vec::with_capacity(stmts.len());
        for s in stmts {
            self.stmt(s, &mut out)?;
        }
        Ok(out)
    }

    fn stmt(&mut self, s: &ast::Stmt, out: &mut Vec<Stmt>) -> CR<()> {
        self.enter(s.range())?;
        let r = self.stmt_inner(s, out);
        self.depth -= 1;
        r
    }

    fn stmt_inner(&mut self, s: &ast::Stmt, out: &mut Vec<Stmt>) -> CR<()> {
        let range = s.range();
        let st = match s {
            ast::Stmt::FunctionDef(d) => {
                if d.is_async {
                    return Err(self.error(range, "`async def` is not supported"));
                }
                if !d.decorator_list.is_empty() {
                    return Err(
                        self.error(d.decorator_list[0].range(), "decorators are not supported")
                    );
                }
                if d.type_params.is_some() {
                    return Err(self.error(range, "type parameters are not supported"));
                }
                self.check_name(d.name.as_str(), d.name.range())?;
                let def = self.function(
                    d.name.as_str(),
                    Some(&d.parameters),
                    FnBody::Stmts(&d.body),
                    range,
                )?;
                let slot = self.store_slot(d.name.as_str(), d.name.range())?;
                Stmt::Def(slot, Box::new(def))
            }
            ast::Stmt::ClassDef(_) => {
                return Err(self.error(range, "class definitions are not allowed"));
            }
            ast::Stmt::Return(r) => {
                if self
                    .scopes
                    .last()
                    .is_some_and(|s| s.kind != ScopeKind::Function)
                {
                    return Err(self.error(range, "'return' outside function"));
                }
                Stmt::Return(r.value.as_deref().map(|v| self.expr(v)).transpose()?)
            }
            ast::Stmt::Delete(_) => return Err(self.error(range, "`del` is not supported")),
            ast::Stmt::TypeAlias(_) => {
                return Err(self.error(range, "`type` aliases are not supported"));
            }
            ast::Stmt::Assign(a) => {
                let v = self.expr(&a.value)?;
                let ts = a
                    .targets
                    .iter()
                    .map(|t| self.target(t))
                    .collect::<CR<Vec<_>>>()?;
                Stmt::Assign(ts, v)
            }
            ast::Stmt::AugAssign(a) => {
                let op = binop(a.op)
                    .ok_or_else(|| self.error(range, "the `@` operator is not supported"))?;
                let t = match &*a.target {
                    ast::Expr::Name(_) | ast::Expr::Subscript(_) | ast::Expr::Attribute(_) => {
                        self.target(&a.target)?
                    }
                    _ => {
                        return Err(self.error(
                            a.target.range(),
                            "illegal expression for augmented assignment",
                        ));
                    }
                };
                let v = self.expr(&a.value)?;
                Stmt::AugAssign(t, op, v)
            }
            ast::Stmt::AnnAssign(a) => match &a.value {
                Some(v) => {
                    let v = self.expr(v)?;
                    Stmt::Assign(vec![self.target(&a.target)?], v)
                }
                None => Stmt::Pass,
            },
            ast::Stmt::For(f) => {
                if f.is_async {
                    return Err(self.error(range, "`async for` is not supported"));
                }
                let iter = self.expr(&f.iter)?;
                let target = self.target(&f.target)?;
                self.cur().loops += 1;
                let body = self.block(&f.body)?;
                self.cur().loops -= 1;
                let orelse = self.block(&f.orelse)?;
                Stmt::For {
                    target,
                    iter,
                    body,
                    orelse,
                }
            }
            ast::Stmt::While(_) => {
                return Err(self.error(
                    range,
                    "while loops are not allowed: a per-record program must finish in bounded time; \
                     loop with `for` over a finite iterable instead (e.g. `for i in range(n):`)",
                ));
            }
            ast::Stmt::If(i) => {
                let test = self.expr(&i.test)?;
                let body = self.block(&i.body)?;
                let mut clauses = Vec::new();
                for c in &i.elif_else_clauses {
                    let t = c.test.as_ref().map(|t| self.expr(t)).transpose()?;
                    let b = self.block(&c.body)?;
                    clauses.push((t, b));
                }
                let mut orelse = Vec::new();
                for (t, b) in clauses.into_iter().rev() {
                    orelse = match t {
                        Some(t) => vec![Stmt::If(t, b, orelse)],
                        None => b,
                    };
                }
                Stmt::If(test, body, orelse)
            }
            ast::Stmt::With(_) => {
                return Err(self.error(range, "`with` statements are not allowed"));
            }
            ast::Stmt::Match(_) => {
                return Err(self.error(range, "`match` statements are not supported"));
            }
            ast::Stmt::Raise(r) => Stmt::Raise(r.exc.as_deref().map(|e| self.expr(e)).transpose()?),
            ast::Stmt::Try(_) => {
                return Err(self.error(
                    range,
                    "try/except is not allowed: an error fails the record (test for bad input with `if` instead)",
                ));
            }
            ast::Stmt::Assert(a) => {
                let t = self.expr(&a.test)?;
                let m = a.msg.as_deref().map(|m| self.expr(m)).transpose()?;
                Stmt::Assert(t, m)
            }
            ast::Stmt::Import(i) => {
                for a in &i.names {
                    let m = self.module(a.name.as_str(), a.name.range())?;
                    let bind = a.asname.as_ref().unwrap_or(&a.name);
                    let slot = self.store_slot(bind.as_str(), bind.range())?;
                    out.push(Stmt::Import(slot, m));
                }
                return Ok(());
            }
            ast::Stmt::ImportFrom(i) => {
                let Some(mname) = &i.module else {
                    return Err(self.error(range, "relative imports are not allowed"));
                };
                if i.level > 0 {
                    return Err(self.error(range, "relative imports are not allowed"));
                }
                let m = self.module(mname.as_str(), mname.range())?;
                for a in &i.names {
                    if a.name.as_str() == "*" {
                        return Err(self.error(a.range(), "`import *` is not allowed"));
                    }
                    self.check_name(a.name.as_str(), a.name.range())?;
                    if module_attr(m, a.name.as_str()).is_none() {
                        return Err(self.error(
                            a.name.range(),
                            format!(
                                "module '{}' has no attribute '{}' in rill",
                                m.name(),
                                a.name.as_str()
                            ),
                        ));
                    }
                    let bind = a.asname.as_ref().unwrap_or(&a.name);
                    let slot = self.store_slot(bind.as_str(), bind.range())?;
                    out.push(Stmt::ImportFrom(slot, m, a.name.as_str().into()));
                }
                return Ok(());
            }
            ast::Stmt::Global(_) => {
                return Err(self.error(range, "`global` statements are not allowed"));
            }
            ast::Stmt::Nonlocal(_) => {
                return Err(self.error(range, "`nonlocal` statements are not allowed"));
            }
            ast::Stmt::Expr(e) => Stmt::Expr(self.expr(&e.value)?),
            ast::Stmt::Pass(_) => Stmt::Pass,
            ast::Stmt::Break(_) | ast::Stmt::Continue(_) => {
                if self.scopes.last().is_none_or(|s| s.loops == 0) {
                    let what = if matches!(s, ast::Stmt::Break(_)) {
                        "break"
                    } else {
                        "continue"
                    };
                    return Err(self.error(range, format!("'{what}' outside loop")));
                }
                if matches!(s, ast::Stmt::Break(_)) {
                    Stmt::Break
                } else {
                    Stmt::Continue
                }
            }
            ast::Stmt::IpyEscapeCommand(_) => {
                return Err(self.error(range, "IPython escapes are not supported"));
            }
        };
        out.push(st);
        Ok(())
    }

    fn module(&self, name: &str, range: TextRange) -> CR<Module> {
        Module::from_name(name).ok_or_else(|| {
            self.error(
                range,
                format!("import of module '{name}' is not allowed; allowed modules: math, re"),
            )
        })
    }

    fn target(&mut self, t: &ast::Expr) -> CR<Target> {
        self.targets(t, false)
    }

    /// An assignment target; in a comprehension, names get fresh slots in
    /// the innermost comprehension scope.
    fn targets(&mut self, t: &ast::Expr, comp: bool) -> CR<Target> {
        let range = t.range();
        Ok(match t {
            ast::Expr::Name(n) => {
                let name = n.id.as_str();
                self.check_name(name, range)?;
                if comp {
                    let scope = self.cur();
                    // marked as a comprehension's (see `COMP_MARK`)
                    let slot = scope.new_slot(&format!("{name}{COMP_MARK}"));
                    if let Some(m) = scope.comp.last_mut() {
                        m.insert(name.to_string(), slot);
                    }
                    Target::Slot(slot)
                } else {
                    Target::Slot(self.store_slot(name, range)?)
                }
            }
            ast::Expr::Tuple(ast::ExprTuple { elts, .. })
            | ast::Expr::List(ast::ExprList { elts, .. }) => {
                let mut star = None;
                let mut ts = Vec::with_capacity(elts.len());
                for (i, e) in elts.iter().enumerate() {
                    if let ast::Expr::Starred(s) = e {
                        if star.is_some() {
                            return Err(
                                self.error(e.range(), "multiple starred expressions in assignment")
                            );
                        }
                        star = Some(i);
                        ts.push(self.targets(&s.value, comp)?);
                    } else {
                        ts.push(self.targets(e, comp)?);
                    }
                }
                Target::Unpack(ts, star)
            }
            ast::Expr::Subscript(s) => {
                if matches!(&*s.slice, ast::Expr::Slice(_)) {
                    return Err(self.error(range, "slice assignment is not supported"));
                }
                Target::Index(self.expr(&s.value)?, self.expr(&s.slice)?)
            }
            ast::Expr::Attribute(_) => {
                return Err(self.error(
                    range,
                    "cannot assign to an attribute: records are immutable here (build a dict instead)",
                ));
            }
            ast::Expr::Starred(_) => {
                return Err(self.error(
                    range,
                    "starred assignment target must be in a list or tuple",
                ));
            }
            _ => return Err(self.error(range, "cannot assign to expression")),
        })
    }

    // ---- functions -------------------------------------------------------------

    fn function(
        &mut self,
        name: &str,
        params: Option<&ast::Parameters>,
        body: FnBody<'_>,
        range: TextRange,
    ) -> CR<FuncDef> {
        let mark_row = std::mem::take(&mut self.mark_row);
        let mut defaults = Vec::new();
        let mut ps: Vec<(String, Option<u32>, bool, TextRange)> = Vec::new();
        if let Some(p) = params {
            if let Some(v) = &p.vararg {
                return Err(self.error(v.range(), "`*args` parameters are not supported"));
            }
            if let Some(k) = &p.kwarg {
                return Err(self.error(k.range(), "`**kwargs` parameters are not supported"));
            }
            let all = p
                .posonlyargs
                .iter()
                .chain(&p.args)
                .map(|x| (x, false))
                .chain(p.kwonlyargs.iter().map(|x| (x, true)));
            for (pw, kw_only) in all {
                let default = match &pw.default {
                    Some(d) => {
                        defaults.push(self.expr(d)?);
                        Some((defaults.len() - 1) as u32)
                    }
                    None => None,
                };
                let pname = pw.parameter.name.as_str();
                self.check_name(pname, pw.range())?;
                if ps.iter().any(|(n, ..)| n == pname) {
                    return Err(self.error(
                        pw.range(),
                        format!("duplicate argument '{pname}' in function definition"),
                    ));
                }
                ps.push((pname.to_string(), default, kw_only, pw.range()));
            }
        }
        if ps.len() > 255 {
            return Err(self.error(range, "too many parameters"));
        }
        self.scopes.push(Scope::new(ScopeKind::Function));
        let mut params_ir = Vec::with_capacity(ps.len());
        for (n, default, kw_only, _) in &ps {
            let slot = self.cur().local(n);
            params_ir.push(Param {
                name: n.as_str().into(),
                slot,
                default: *default,
                kw_only: *kw_only,
            });
        }
        if mark_row && let Some(first) = params_ir.first() {
            self.row = Some((self.scopes.len() - 1, first.slot));
        }
        let mut bound = Vec::new();
        match body {
            FnBody::Expr(e) => walrus_in(e, &mut bound),
            FnBody::Stmts(s) => bound_names(s, &mut bound),
        }
        for b in &bound {
            self.cur().local(b);
        }
        let body = match body {
            FnBody::Expr(e) => Body::Expr(self.expr(e)?),
            FnBody::Stmts(s) => Body::Stmts(self.block(s)?),
        };
        let scope = self
            .scopes
            .pop()
            .unwrap_or_else(|| Scope::new(ScopeKind::Function));
        Ok(FuncDef {
            code: FuncCode {
                name: name.into(),
                params: params_ir,
                nslots: scope.slot_names.len() as u32,
                slot_names: scope.slot_names,
                cells: scope.cells,
                free: scope.free,
                body,
            },
            defaults,
        })
    }

    // ---- expressions -------------------------------------------------------------

    fn expr(&mut self, e: &ast::Expr) -> CR<Expr> {
        self.enter(e.range())?;
        let r = self.expr_inner(e);
        self.depth -= 1;
        r
    }

    fn elts(&mut self, elts: &[ast::Expr]) -> CR<Vec<Elt>> {
        elts.iter()
            .map(|e| match e {
                ast::Expr::Starred(s) => Ok(Elt::Star(self.expr(&s.value)?)),
                e => Ok(Elt::One(self.expr(e)?)),
            })
            .collect()
    }

    fn bin_chain(&mut self, b: &ast::ExprBinOp) -> CR<Expr> {
        // Collect the left spine iteratively: `a + b + c` is ((a + b) + c).
        let mut rest = Vec::new();
        let mut cur = b;
        loop {
            let op = binop(cur.op)
                .ok_or_else(|| self.error(cur.range, "the `@` operator is not supported"))?;
            rest.push((op, &*cur.right));
            match &*cur.left {
                ast::Expr::BinOp(inner) if rest.len() < 100_000 => cur = inner,
                _ => break,
            }
        }
        let first = self.expr(&cur.left)?;
        rest.reverse();
        let mut ops = Vec::with_capacity(rest.len());
        for (op, e) in rest {
            ops.push((op, self.expr(e)?));
        }
        if ops.len() == 1 {
            let (op, r) = ops
                .pop()
                .ok_or_else(|| self.error(b.range, "empty operation"))?;
            return Ok(Expr::Bin(op, Box::new(first), Box::new(r)));
        }
        Ok(Expr::BinChain(Box::new(first), ops))
    }

    fn args(&mut self, a: &ast::Arguments) -> CR<(Vec<Elt>, Vec<Kwarg>)> {
        let args = self.elts(&a.args)?;
        let mut kw = Vec::with_capacity(a.keywords.len());
        for k in a.keywords.iter() {
            let Some(name) = &k.arg else {
                return Err(self.error(
                    k.range(),
                    "`**mapping` arguments in calls are not supported",
                ));
            };
            kw.push(Kwarg {
                name: name.as_str().into(),
                value: self.expr(&k.value)?,
            });
        }
        Ok((args, kw))
    }

    /// For `re.<fn>("<literal>", ...)`, the pattern compiled now.
    fn const_pattern(
        &self,
        a: &ast::ExprAttribute,
        c: &ast::ExprCall,
    ) -> CR<Option<Box<PatternObj>>> {
        let ast::Expr::Name(n) = &*a.value else {
            return Ok(None);
        };
        if n.id.as_str() != "re" {
            return Ok(None);
        }
        let Some(m) = Method::from_name(a.attr.as_str()) else {
            return Ok(None);
        };
        let flag_pos = match m {
            Method::Match
            | Method::Search
            | Method::Fullmatch
            | Method::Findall
            | Method::Finditer => 2,
            Method::Sub | Method::Subn => 4,
            Method::Split => 3,
            Method::Compile => 1,
            _ => return Ok(None),
        };
        let args = &c.arguments.args;
        if args.iter().any(|x| matches!(x, ast::Expr::Starred(_))) {
            return Ok(None);
        }
        let Some(ast::Expr::StringLiteral(p)) = args.first() else {
            return Ok(None);
        };
        let flags = if let Some(f) = args.get(flag_pos) {
            static_flags(f)
        } else if let Some(k) = c
            .arguments
            .keywords
            .iter()
            .find(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == "flags"))
        {
            static_flags(&k.value)
        } else {
            Some(0)
        };
        let Some(flags) = flags else { return Ok(None) };
        let src = p.value.to_str();
        PatternObj::new(src, flags)
            .map(|p| Some(Box::new(p)))
            .map_err(|e| {
                self.error(
                    p.range(),
                    format!(
                        "re.error: {e} (in pattern {})",
                        crate::val::repr_string(src)
                    ),
                )
            })
    }

    fn note_row_attr(&mut self, base: &ast::Expr, attr: &str) {
        if let (ast::Expr::Name(n), Some((lvl, slot))) = (base, self.row)
            && lvl == self.scopes.len() - 1
            && self.scopes[lvl].lookup(n.id.as_str()) == Some(slot)
        {
            self.note_field(attr);
        }
    }

    fn fstring_parts(
        &mut self,
        elements: &[ast::InterpolatedStringElement],
        out: &mut Vec<FPart>,
    ) -> CR<()> {
        for el in elements {
            match el {
                ast::InterpolatedStringElement::Literal(l) => out.push(FPart::Lit(l.value.clone())),
                ast::InterpolatedStringElement::Interpolation(i) => {
                    let expr = self.expr(&i.expression)?;
                    let conv = match i.conversion {
                        ast::ConversionFlag::None => Conv::None,
                        ast::ConversionFlag::Str => Conv::Str,
                        ast::ConversionFlag::Repr | ast::ConversionFlag::Ascii => Conv::Repr,
                    };
                    let spec = match &i.format_spec {
                        Some(sp) => {
                            let mut parts = Vec::new();
                            self.fstring_parts(&sp.elements, &mut parts)?;
                            Some(parts)
                        }
                        None => None,
                    };
                    let debug = i.debug_text.as_ref().map(|d| {
                        let r = i.expression.range();
                        let text = self
                            .src
                            .get(r.start().to_usize()..r.end().to_usize())
                            .unwrap_or("");
                        format!("{}{}{}", d.leading, text, d.trailing).into_boxed_str()
                    });
                    out.push(FPart::Val {
                        expr,
                        conv,
                        spec,
                        debug,
                    });
                }
            }
        }
        Ok(())
    }

    fn comp(
        &mut self,
        kind: CompKind,
        elt: &ast::Expr,
        val: Option<&ast::Expr>,
        gens: &[ast::Comprehension],
    ) -> CR<Expr> {
        let Some(first) = gens.first() else {
            return Err(self.error(elt.range(), "comprehension without `for`"));
        };
        // The first iterable is evaluated in the enclosing scope.
        let first_iter = self.expr(&first.iter)?;
        self.cur().comp.push(HashMap::new());
        let mut out = Vec::with_capacity(gens.len());
        let mut first_iter = Some(first_iter);
        // every `for` target is a local of the whole comprehension: a later
        // iterable that names one reads it (unbound before its loop runs),
        // not a field or an outer name of the same name, as in CPython
        let targets = gens
            .iter()
            .map(|g| self.targets(&g.target, true))
            .collect::<CR<Vec<_>>>()?;
        for (g, target) in gens.iter().zip(targets) {
            if g.is_async {
                return Err(self.error(g.range, "async comprehensions are not supported"));
            }
            let iter = match first_iter.take() {
                Some(i) => i,
                None => self.expr(&g.iter)?,
            };
            let ifs = g.ifs.iter().map(|c| self.expr(c)).collect::<CR<Vec<_>>>()?;
            out.push(CompFor { target, iter, ifs });
        }
        let elt = self.expr(elt)?;
        let val = val.map(|v| self.expr(v)).transpose()?;
        self.cur().comp.pop();
        Ok(Expr::Comp(Box::new(Comp {
            kind,
            elt,
            val,
            gens: out,
        })))
    }

    fn expr_inner(&mut self, e: &ast::Expr) -> CR<Expr> {
        let range = e.range();
        Ok(match e {
            ast::Expr::BoolOp(b) => {
                let vs = b
                    .values
                    .iter()
                    .map(|v| self.expr(v))
                    .collect::<CR<Vec<_>>>()?;
                match b.op {
                    ast::BoolOp::And => Expr::And(vs),
                    ast::BoolOp::Or => Expr::Or(vs),
                }
            }
            ast::Expr::Named(n) => {
                let ast::Expr::Name(t) = &*n.target else {
                    return Err(self.error(
                        n.target.range(),
                        "cannot use assignment expressions with this target",
                    ));
                };
                self.check_name(t.id.as_str(), t.range)?;
                let v = self.expr(&n.value)?;
                let slot = self.cur().local(t.id.as_str());
                Expr::Walrus(slot, Box::new(v))
            }
            ast::Expr::BinOp(b) => self.bin_chain(b)?,
            ast::Expr::UnaryOp(u) => {
                let op = match u.op {
                    ast::UnaryOp::Invert => UnOp::Invert,
                    ast::UnaryOp::Not => UnOp::Not,
                    ast::UnaryOp::UAdd => UnOp::Pos,
                    ast::UnaryOp::USub => UnOp::Neg,
                };
                // Fold negative literals so `-9223372036854775808` works.
                if op == UnOp::Neg
                    && let ast::Expr::NumberLiteral(n) = &*u.operand
                    && let ast::Number::Int(i) = &n.value
                    && i.as_i64().is_none()
                    && i.to_string() == "9223372036854775808"
                {
                    return Ok(Expr::Const(Const::Int(i64::MIN)));
                }
                Expr::Unary(op, Box::new(self.expr(&u.operand)?))
            }
            ast::Expr::Lambda(l) => {
                let def = self.function(
                    "<lambda>",
                    l.parameters.as_deref(),
                    FnBody::Expr(&l.body),
                    range,
                )?;
                Expr::Lambda(Box::new(def))
            }
            ast::Expr::If(i) => Expr::If(
                Box::new(self.expr(&i.test)?),
                Box::new(self.expr(&i.body)?),
                Box::new(self.expr(&i.orelse)?),
            ),
            ast::Expr::Dict(d) => {
                let mut items = Vec::with_capacity(d.items.len());
                for it in &d.items {
                    let k = it.key.as_ref().map(|k| self.expr(k)).transpose()?;
                    items.push((k, self.expr(&it.value)?));
                }
                Expr::Dict(items)
            }
            ast::Expr::Set(s) => Expr::Set(self.elts(&s.elts)?),
            ast::Expr::ListComp(c) => self.comp(CompKind::List, &c.elt, None, &c.generators)?,
            ast::Expr::SetComp(c) => self.comp(CompKind::Set, &c.elt, None, &c.generators)?,
            ast::Expr::DictComp(c) => {
                self.comp(CompKind::Dict, &c.key, Some(&c.value), &c.generators)?
            }
            ast::Expr::Generator(c) => self.comp(CompKind::Gen, &c.elt, None, &c.generators)?,
            ast::Expr::Await(_) => return Err(self.error(range, "`await` is not supported")),
            ast::Expr::Yield(_) | ast::Expr::YieldFrom(_) => {
                return Err(self.error(
                    range,
                    "`yield` is not supported (generators are not allowed)",
                ));
            }
            ast::Expr::Compare(c) => {
                let left = self.expr(&c.left)?;
                let mut rest = Vec::with_capacity(c.ops.len());
                for (op, r) in c.ops.iter().zip(c.comparators.iter()) {
                    let op = match op {
                        ast::CmpOp::Eq => CmpOp::Eq,
                        ast::CmpOp::NotEq => CmpOp::Ne,
                        ast::CmpOp::Lt => CmpOp::Lt,
                        ast::CmpOp::LtE => CmpOp::Le,
                        ast::CmpOp::Gt => CmpOp::Gt,
                        ast::CmpOp::GtE => CmpOp::Ge,
                        ast::CmpOp::Is => CmpOp::Is,
                        ast::CmpOp::IsNot => CmpOp::IsNot,
                        ast::CmpOp::In => CmpOp::In,
                        ast::CmpOp::NotIn => CmpOp::NotIn,
                    };
                    rest.push((op, self.expr(r)?));
                }
                Expr::Cmp(Box::new(left), rest)
            }
            ast::Expr::Call(c) => match &*c.func {
                ast::Expr::Attribute(a) => {
                    let attr = a.attr.as_str();
                    if is_dunder(attr) {
                        return Err(self.error(
                            a.attr.range(),
                            format!("access to dunder attribute `{attr}` is not allowed"),
                        ));
                    }
                    self.note_row_attr(&a.value, attr);
                    let pattern = self.const_pattern(a, c)?;
                    let obj = self.expr(&a.value)?;
                    let (args, kw) = self.args(&c.arguments)?;
                    Expr::MethodCall {
                        obj: Box::new(obj),
                        name: attr.into(),
                        method: Method::from_name(attr),
                        args,
                        kw,
                        pattern,
                        hint: AtomicUsize::new(0),
                    }
                }
                func => {
                    if let ast::Expr::Name(n) = func
                        && !self.is_bound(n.id.as_str())
                    {
                        self.forbidden(n.id.as_str(), n.range)?;
                    }
                    let f = self.expr(func)?;
                    let (args, kw) = self.args(&c.arguments)?;
                    Expr::Call {
                        func: Box::new(f),
                        args,
                        kw,
                    }
                }
            },
            ast::Expr::FString(f) => {
                let mut parts = Vec::new();
                for p in f.value.iter() {
                    match p {
                        ast::FStringPart::Literal(l) => parts.push(FPart::Lit(l.value.clone())),
                        ast::FStringPart::FString(fs) => {
                            self.fstring_parts(&fs.elements, &mut parts)?
                        }
                    }
                }
                Expr::FStr(parts)
            }
            ast::Expr::TString(_) => return Err(self.error(range, "t-strings are not supported")),
            ast::Expr::StringLiteral(s) => Expr::Const(Const::Str(s.value.to_str().into())),
            ast::Expr::BytesLiteral(b) => {
                let bytes: Vec<u8> = b
                    .value
                    .iter()
                    .flat_map(|p| p.as_slice().iter().copied())
                    .collect();
                Expr::Const(Const::Bytes(bytes.into_boxed_slice()))
            }
            ast::Expr::NumberLiteral(n) => match &n.value {
                ast::Number::Int(i) => Expr::Const(Const::Int(i.as_i64().ok_or_else(|| {
                    self.error(
                        range,
                        format!("integer literal {i} is too large (rill ints are 64-bit)"),
                    )
                })?)),
                ast::Number::Float(f) => Expr::Const(Const::Float(*f)),
                ast::Number::Complex { .. } => {
                    return Err(self.error(range, "complex numbers are not supported"));
                }
            },
            ast::Expr::BooleanLiteral(b) => Expr::Const(Const::Bool(b.value)),
            ast::Expr::NoneLiteral(_) => Expr::Const(Const::None),
            ast::Expr::EllipsisLiteral(_) => {
                return Err(self.error(range, "`...` is not supported"));
            }
            ast::Expr::Attribute(a) => {
                let attr = a.attr.as_str();
                if is_dunder(attr) {
                    return Err(self.error(
                        a.attr.range(),
                        format!("access to dunder attribute `{attr}` is not allowed"),
                    ));
                }
                self.note_row_attr(&a.value, attr);
                Expr::Attr {
                    obj: Box::new(self.expr(&a.value)?),
                    name: attr.into(),
                    hint: AtomicUsize::new(0),
                }
            }
            ast::Expr::Subscript(s) => {
                if let ast::Expr::StringLiteral(k) = &*s.slice {
                    self.note_row_attr(&s.value, k.value.to_str());
                }
                let obj = self.expr(&s.value)?;
                match &*s.slice {
                    ast::Expr::Slice(sl) => {
                        let mut part = |x: &Option<Box<ast::Expr>>| -> CR<Option<Box<Expr>>> {
                            x.as_deref().map(|e| self.expr(e).map(Box::new)).transpose()
                        };
                        Expr::Slice {
                            obj: Box::new(obj),
                            lo: part(&sl.lower)?,
                            hi: part(&sl.upper)?,
                            step: part(&sl.step)?,
                        }
                    }
                    ast::Expr::Tuple(t)
                        if t.elts.iter().any(|x| matches!(x, ast::Expr::Slice(_))) =>
                    {
                        return Err(self.error(
                            s.slice.range(),
                            "multi-dimensional slicing is not supported",
                        ));
                    }
                    idx => Expr::Index(Box::new(obj), Box::new(self.expr(idx)?)),
                }
            }
            ast::Expr::Starred(_) => {
                return Err(self.error(range, "a starred expression is not allowed here"));
            }
            ast::Expr::Name(n) => self.load_name(n.id.as_str(), range)?,
            ast::Expr::List(l) => Expr::List(self.elts(&l.elts)?),
            ast::Expr::Tuple(t) => Expr::Tuple(self.elts(&t.elts)?),
            ast::Expr::Slice(_) => {
                return Err(self.error(range, "a slice is only allowed inside `[...]`"));
            }
            ast::Expr::IpyEscapeCommand(_) => {
                return Err(self.error(range, "IPython escapes are not supported"));
            }
        })
    }
}

/// Compiles an expression over the record's fields.
pub(crate) fn compile_expression(orig: &str) -> CR<Compiled> {
    pre_checks(orig)?;
    let start = orig.len() - orig.trim_start().len();
    let src = orig.trim();
    // A bare field name that Python cannot parse (a keyword such as `from`)
    // still reads the field.
    if is_keyword(src) {
        let mut c = Compiler::new(src, orig, Some(start), 0, Mode::Expression);
        let fid = c.field_id(src);
        c.note_field(src);
        return Ok(Compiled {
            kind: Kind::Expr(FuncCode {
                name: "<expression>".into(),
                params: Vec::new(),
                nslots: 0,
                slot_names: Vec::new(),
                cells: Vec::new(),
                free: Vec::new(),
                body: Body::Expr(Expr::Field(fid)),
            }),
            fields: c.fields,
            fields_read: c.fields_read,
        });
    }
    let mut c = Compiler::new(src, orig, Some(start), 0, Mode::Expression);
    if src.is_empty() {
        return Err(CompileError {
            msg: "empty expression".into(),
            line: 1,
            col: 1,
        });
    }
    let parsed = parse_expression(src).map_err(|e| c.parse_error(&e))?;
    let expr = parsed.expr();
    c.scopes.push(Scope::new(ScopeKind::ExprTop));
    let mut bound = Vec::new();
    walrus_in(expr, &mut bound);
    for b in &bound {
        c.cur().local(b);
    }
    let body = c.expr(expr)?;
    let scope = c
        .scopes
        .pop()
        .unwrap_or_else(|| Scope::new(ScopeKind::ExprTop));
    Ok(Compiled {
        kind: Kind::Expr(FuncCode {
            name: "<expression>".into(),
            params: Vec::new(),
            nslots: scope.slot_names.len() as u32,
            slot_names: scope.slot_names,
            cells: scope.cells,
            free: Vec::new(),
            body: Body::Expr(body),
        }),
        fields: c.fields,
        fields_read: c.fields_read,
    })
}

/// Compiles a `lambda`, or a script ending in a `def`.
pub(crate) fn compile_callable(orig: &str) -> CR<Compiled> {
    pre_checks(orig)?;
    let (dedented, shift) = dedent(orig);
    let src = dedented.as_str();
    let mut c = Compiler::new(src, orig, None, shift, Mode::Callable);
    let parsed = parse_module(src).map_err(|e| c.parse_error(&e))?;
    let body = parsed.suite();
    let shape_error = |c: &Compiler<'_>, range: TextRange| {
        c.error(
            range,
            "a callable must be a `lambda` expression, or a script whose last statement is a `def`",
        )
    };
    let Some(last) = body.last() else {
        return Err(CompileError {
            msg: "empty callable".into(),
            line: 1,
            col: 1,
        });
    };
    c.scopes.push(Scope::new(ScopeKind::Module));
    let mut bound = Vec::new();
    bound_names(body, &mut bound);
    for b in &bound {
        c.cur().local(b);
    }
    let (stmts, entry) = match last {
        ast::Stmt::Expr(e) if matches!(&*e.value, ast::Expr::Lambda(_)) => {
            let stmts = c.block(&body[..body.len() - 1])?;
            c.mark_row = true;
            let entry = c.expr(&e.value)?;
            (stmts, entry)
        }
        ast::Stmt::FunctionDef(d) => {
            let mut stmts = c.block(&body[..body.len() - 1])?;
            c.mark_row = true;
            c.stmt(last, &mut stmts)?;
            let slot = c.cur().local(d.name.as_str());
            (stmts, Expr::Local(slot))
        }
        other => return Err(shape_error(&c, other.range())),
    };
    let scope = c
        .scopes
        .pop()
        .unwrap_or_else(|| Scope::new(ScopeKind::Module));
    Ok(Compiled {
        kind: Kind::Callable {
            module: FuncCode {
                name: "<module>".into(),
                params: Vec::new(),
                nslots: scope.slot_names.len() as u32,
                slot_names: scope.slot_names,
                cells: scope.cells,
                free: Vec::new(),
                body: Body::Stmts(stmts),
            },
            entry,
        },
        fields: c.fields,
        fields_read: c.fields_read,
    })
}
