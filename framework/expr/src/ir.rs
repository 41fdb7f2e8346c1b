//! The compiled form of a program: names are resolved to slots, constants
//! are built and constant regular expressions are compiled, once.

use std::sync::atomic::AtomicUsize;

use crate::builtins::{Builtin, Method, Module};
use crate::pyre::PatternObj;

/// A record field read by the program, with a cached position: records of
/// one stream usually share their field order, so the lookup is usually a
/// string comparison instead of a hash.
#[derive(Debug)]
pub(crate) struct FieldSlot {
    pub name: Box<str>,
    pub hint: AtomicUsize,
}

#[derive(Debug, Clone)]
pub(crate) enum Const {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    Bytes(Box<[u8]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
    LShift,
    RShift,
    BitOr,
    BitXor,
    BitAnd,
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Pow => "** or pow()",
            BinOp::LShift => "<<",
            BinOp::RShift => ">>",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::BitAnd => "&",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Pos,
    Not,
    Invert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Is,
    IsNot,
}

/// One element of a display or of call arguments: `x` or `*x`.
#[derive(Debug)]
pub(crate) enum Elt {
    One(Expr),
    Star(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompKind {
    List,
    Set,
    Dict,
    Gen,
}

#[derive(Debug)]
pub(crate) struct CompFor {
    pub target: Target,
    pub iter: Expr,
    pub ifs: Vec<Expr>,
}

#[derive(Debug)]
pub(crate) struct Comp {
    pub kind: CompKind,
    /// The element, or the key of a dict comprehension.
    pub elt: Expr,
    /// The value of a dict comprehension.
    pub val: Option<Expr>,
    pub gens: Vec<CompFor>,
}

/// `!r`, `!s`, `!a` in an f-string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conv {
    None,
    Str,
    Repr,
}

#[derive(Debug)]
pub(crate) enum FPart {
    Lit(Box<str>),
    Val {
        expr: Expr,
        conv: Conv,
        spec: Option<Vec<FPart>>,
        /// `f"{x=}"`: the text printed before the value.
        debug: Option<Box<str>>,
    },
}

#[derive(Debug)]
pub(crate) struct Kwarg {
    pub name: Box<str>,
    pub value: Expr,
}

#[derive(Debug)]
pub(crate) enum Expr {
    Const(Const),
    /// A variable of the current frame.
    Local(u32),
    /// A variable captured from an enclosing function.
    Free(u32),
    /// A record field (expression mode).
    Field(u32),
    /// A record field if the record has it, else a builtin (expression mode:
    /// fields shadow builtins, as in Beam).
    FieldOr(u32, Box<Expr>),
    Builtin(Builtin),
    Module(Module),
    Attr {
        obj: Box<Expr>,
        name: Box<str>,
        hint: AtomicUsize,
    },
    Index(Box<Expr>, Box<Expr>),
    Slice {
        obj: Box<Expr>,
        lo: Option<Box<Expr>>,
        hi: Option<Box<Expr>>,
        step: Option<Box<Expr>>,
    },
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// A left-associated chain `a + b - c ...`, evaluated iteratively.
    BinChain(Box<Expr>, Vec<(BinOp, Expr)>),
    Unary(UnOp, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp(Box<Expr>, Vec<(CmpOp, Expr)>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    List(Vec<Elt>),
    Tuple(Vec<Elt>),
    Set(Vec<Elt>),
    /// Items; a `None` key is a `**mapping` splat.
    Dict(Vec<(Option<Expr>, Expr)>),
    Comp(Box<Comp>),
    Lambda(Box<FuncDef>),
    Call {
        func: Box<Expr>,
        args: Vec<Elt>,
        kw: Vec<Kwarg>,
    },
    /// `obj.name(args)`, without building a bound method.
    MethodCall {
        obj: Box<Expr>,
        name: Box<str>,
        method: Option<Method>,
        args: Vec<Elt>,
        kw: Vec<Kwarg>,
        /// For `re.<fn>("<constant pattern>", ...)`: the pattern, compiled.
        pattern: Option<Box<PatternObj>>,
        hint: AtomicUsize,
    },
    FStr(Vec<FPart>),
    /// `name := value`.
    Walrus(u32, Box<Expr>),
}

#[derive(Debug)]
pub(crate) enum Target {
    Slot(u32),
    Index(Expr, Expr),
    Unpack(Vec<Target>, Option<usize>),
}

#[derive(Debug)]
pub(crate) enum Stmt {
    Expr(Expr),
    Assign(Vec<Target>, Expr),
    AugAssign(Target, BinOp, Expr),
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    For {
        target: Target,
        iter: Expr,
        body: Vec<Stmt>,
        orelse: Vec<Stmt>,
    },
    Return(Option<Expr>),
    Pass,
    Break,
    Continue,
    Def(u32, Box<FuncDef>),
    Import(u32, Module),
    ImportFrom(u32, Module, Box<str>),
    Raise(Option<Expr>),
    Assert(Expr, Option<Expr>),
}

/// Where a closure's captured variable comes from when the closure is made.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FreeSrc {
    /// A cell slot of the enclosing frame.
    Slot(u32),
    /// A captured variable of the enclosing function.
    Free(u32),
}

#[derive(Debug)]
pub(crate) struct Param {
    pub name: Box<str>,
    pub slot: u32,
    /// Index into the closure's defaults.
    pub default: Option<u32>,
    pub kw_only: bool,
}

#[derive(Debug)]
pub(crate) enum Body {
    Expr(Expr),
    Stmts(Vec<Stmt>),
}

#[derive(Debug)]
pub(crate) struct FuncCode {
    pub name: Box<str>,
    pub params: Vec<Param>,
    pub nslots: u32,
    pub slot_names: Vec<Box<str>>,
    /// Slots captured by inner functions (they hold cells).
    pub cells: Vec<u32>,
    pub free: Vec<(Box<str>, FreeSrc)>,
    pub body: Body,
}

#[derive(Debug)]
pub(crate) struct FuncDef {
    pub code: FuncCode,
    /// Default values, evaluated when the function is made.
    pub defaults: Vec<Expr>,
}
