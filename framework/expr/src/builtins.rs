//! Builtin functions, methods of the builtin types, and the `math` and `re`
//! modules.

use std::rc::Rc;

use indexmap::{IndexMap, IndexSet};

use crate::fmt::{format_value, repr};
use crate::interp::{Interp, seq_index, type_error};
use crate::pyre::{
    MatchObj, Mode, PatRef, PatternObj, TplPart, flag_named, parse_template, py_escape,
};
use crate::val::{
    Bin, Key, ListObj, Num, Str, Val, as_num, float_as_int, key_val, py_lt, range_len, repr_string,
    str_of, truthy,
};
use crate::{R, err};

macro_rules! named_enum {
    ($(#[$m:meta])* $ty:ident { $($v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $ty { $($v),* }
        impl $ty {
            pub(crate) fn from_name(s: &str) -> Option<$ty> {
                match s { $($s => Some($ty::$v),)* _ => None }
            }
            pub(crate) fn name(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }
        }
    };
}

named_enum! {
    /// A builtin function, type or exception class.
    Builtin {
        Len = "len", Str = "str", Int = "int", Float = "float", Bool = "bool", Abs = "abs",
        Min = "min", Max = "max", Round = "round", Sum = "sum", Any = "any", All = "all",
        Sorted = "sorted", Reversed = "reversed", Enumerate = "enumerate", Zip = "zip",
        Range = "range", List = "list", Dict = "dict", Tuple = "tuple", Set = "set",
        Bytes = "bytes", Isinstance = "isinstance", Repr = "repr", Map = "map",
        Filter = "filter", Print = "print", Format = "format", Divmod = "divmod", Pow = "pow",
        Hex = "hex", Oct = "oct", Bin = "bin", Ord = "ord", Chr = "chr",
        Exception = "Exception", ValueError = "ValueError", TypeError = "TypeError",
        KeyError = "KeyError", IndexError = "IndexError", RuntimeError = "RuntimeError",
        ZeroDivisionError = "ZeroDivisionError", AssertionError = "AssertionError",
    }
}

impl Builtin {
    pub(crate) fn is_type(self) -> bool {
        matches!(
            self,
            Builtin::Str
                | Builtin::Int
                | Builtin::Float
                | Builtin::Bool
                | Builtin::List
                | Builtin::Dict
                | Builtin::Tuple
                | Builtin::Set
                | Builtin::Bytes
                | Builtin::Range
        )
    }

    pub(crate) fn is_exception(self) -> bool {
        matches!(
            self,
            Builtin::Exception
                | Builtin::ValueError
                | Builtin::TypeError
                | Builtin::KeyError
                | Builtin::IndexError
                | Builtin::RuntimeError
                | Builtin::ZeroDivisionError
                | Builtin::AssertionError
        )
    }
}

named_enum! {
    /// A module that may be imported.
    Module { Math = "math", Re = "re" }
}

named_enum! {
    /// A method (or module function) name.
    Method {
        // str
        Strip = "strip", Lstrip = "lstrip", Rstrip = "rstrip", Lower = "lower", Upper = "upper",
        Title = "title", Capitalize = "capitalize", Swapcase = "swapcase", Casefold = "casefold",
        Split = "split", Rsplit = "rsplit", Splitlines = "splitlines", Join = "join",
        Replace = "replace", Startswith = "startswith", Endswith = "endswith", Find = "find",
        Rfind = "rfind", Index = "index", Rindex = "rindex", Count = "count",
        Isdigit = "isdigit", Isalpha = "isalpha", Isalnum = "isalnum", Isspace = "isspace",
        Isupper = "isupper", Islower = "islower", Isnumeric = "isnumeric", Isdecimal = "isdecimal",
        Istitle = "istitle", Format = "format", Zfill = "zfill", Partition = "partition",
        Rpartition = "rpartition", Center = "center", Ljust = "ljust", Rjust = "rjust",
        Encode = "encode", Removeprefix = "removeprefix", Removesuffix = "removesuffix",
        // bytes
        Decode = "decode", Hex = "hex",
        // list / dict / set
        Append = "append", Extend = "extend", Insert = "insert", Pop = "pop", Remove = "remove",
        Copy = "copy", Sort = "sort", Reverse = "reverse", Clear = "clear",
        Get = "get", Keys = "keys", Values = "values", Items = "items", Setdefault = "setdefault",
        Update = "update", Add = "add", Discard = "discard", Union = "union",
        Intersection = "intersection", Difference = "difference", Issubset = "issubset",
        Issuperset = "issuperset",
        // float
        IsInteger = "is_integer",
        // re match objects
        Group = "group", Groups = "groups", Groupdict = "groupdict", Start = "start", End = "end",
        Span = "span",
        // re module and patterns
        Match = "match", Search = "search", Fullmatch = "fullmatch", Sub = "sub", Subn = "subn",
        Findall = "findall", Finditer = "finditer", Compile = "compile", Escape = "escape",
        // math
        Sqrt = "sqrt", Floor = "floor", Ceil = "ceil", Log = "log", Log10 = "log10", Log2 = "log2",
        Exp = "exp", Pow = "pow", Fabs = "fabs", Isnan = "isnan", Isinf = "isinf",
        Isfinite = "isfinite", Sin = "sin", Cos = "cos", Tan = "tan", Asin = "asin", Acos = "acos",
        Atan = "atan", Atan2 = "atan2", Hypot = "hypot", Degrees = "degrees", Radians = "radians",
        Trunc = "trunc", Copysign = "copysign", Fmod = "fmod", Isclose = "isclose", Gcd = "gcd",
        Prod = "prod", Fsum = "fsum",
    }
}

use Method as M;

const STR_METHODS: &[Method] = &[
    M::Strip,
    M::Lstrip,
    M::Rstrip,
    M::Lower,
    M::Upper,
    M::Title,
    M::Capitalize,
    M::Swapcase,
    M::Casefold,
    M::Split,
    M::Rsplit,
    M::Splitlines,
    M::Join,
    M::Replace,
    M::Startswith,
    M::Endswith,
    M::Find,
    M::Rfind,
    M::Index,
    M::Rindex,
    M::Count,
    M::Isdigit,
    M::Isalpha,
    M::Isalnum,
    M::Isspace,
    M::Isupper,
    M::Islower,
    M::Isnumeric,
    M::Isdecimal,
    M::Istitle,
    M::Format,
    M::Zfill,
    M::Partition,
    M::Rpartition,
    M::Center,
    M::Ljust,
    M::Rjust,
    M::Encode,
    M::Removeprefix,
    M::Removesuffix,
];
const BYTES_METHODS: &[Method] = &[
    M::Decode,
    M::Hex,
    M::Startswith,
    M::Endswith,
    M::Count,
    M::Find,
];
const LIST_METHODS: &[Method] = &[
    M::Append,
    M::Extend,
    M::Insert,
    M::Pop,
    M::Remove,
    M::Index,
    M::Count,
    M::Copy,
    M::Sort,
    M::Reverse,
    M::Clear,
];
const TUPLE_METHODS: &[Method] = &[M::Index, M::Count];
const DICT_METHODS: &[Method] = &[
    M::Get,
    M::Keys,
    M::Values,
    M::Items,
    M::Pop,
    M::Setdefault,
    M::Update,
    M::Copy,
    M::Clear,
];
const REC_METHODS: &[Method] = &[M::Get, M::Keys, M::Values, M::Items, M::Copy];
const SET_METHODS: &[Method] = &[
    M::Add,
    M::Discard,
    M::Remove,
    M::Union,
    M::Intersection,
    M::Difference,
    M::Issubset,
    M::Issuperset,
    M::Copy,
    M::Update,
    M::Clear,
    M::Pop,
];
const MATCH_METHODS: &[Method] = &[M::Group, M::Groups, M::Groupdict, M::Start, M::End, M::Span];
const PATTERN_METHODS: &[Method] = &[
    M::Match,
    M::Search,
    M::Fullmatch,
    M::Sub,
    M::Subn,
    M::Findall,
    M::Finditer,
    M::Split,
];
const RE_FUNCS: &[Method] = &[
    M::Match,
    M::Search,
    M::Fullmatch,
    M::Sub,
    M::Subn,
    M::Findall,
    M::Finditer,
    M::Split,
    M::Compile,
    M::Escape,
];
const MATH_FUNCS: &[Method] = &[
    M::Sqrt,
    M::Floor,
    M::Ceil,
    M::Log,
    M::Log10,
    M::Log2,
    M::Exp,
    M::Pow,
    M::Fabs,
    M::Isnan,
    M::Isinf,
    M::Isfinite,
    M::Sin,
    M::Cos,
    M::Tan,
    M::Asin,
    M::Acos,
    M::Atan,
    M::Atan2,
    M::Hypot,
    M::Degrees,
    M::Radians,
    M::Trunc,
    M::Copysign,
    M::Fmod,
    M::Isclose,
    M::Gcd,
    M::Prod,
    M::Fsum,
];

/// Whether `v` has method `m`.
pub(crate) fn has_method(v: &Val<'_>, m: Method) -> bool {
    let table: &[Method] = match v {
        Val::Str(_) => STR_METHODS,
        Val::Bytes(_) => BYTES_METHODS,
        Val::List(_) => LIST_METHODS,
        Val::Tuple(_) => TUPLE_METHODS,
        Val::Dict(_) => DICT_METHODS,
        Val::Rec(_) => REC_METHODS,
        Val::Set(_) => SET_METHODS,
        Val::Match(_) => MATCH_METHODS,
        Val::Pattern(_) => PATTERN_METHODS,
        Val::Module(Module::Re) => RE_FUNCS,
        Val::Module(Module::Math) => MATH_FUNCS,
        Val::Float(_) => &[M::IsInteger],
        _ => &[],
    };
    table.contains(&m)
}

/// An attribute of a module: a constant or a function.
pub(crate) fn module_attr<'a>(m: Module, name: &str) -> Option<Val<'a>> {
    match m {
        Module::Math => match name {
            "pi" => return Some(Val::Float(std::f64::consts::PI)),
            "e" => return Some(Val::Float(std::f64::consts::E)),
            "tau" => return Some(Val::Float(std::f64::consts::TAU)),
            "inf" => return Some(Val::Float(f64::INFINITY)),
            "nan" => return Some(Val::Float(f64::NAN)),
            _ => {}
        },
        Module::Re => {
            if let Some(f) = flag_named(name) {
                return Some(Val::Int(f));
            }
        }
    }
    let meth = Method::from_name(name)?;
    let recv = Val::Module(m);
    has_method(&recv, meth)
        .then(|| Val::Method(Rc::new(crate::val::BoundMethod { recv, method: meth })))
}

// ---- argument helpers ------------------------------------------------------------

type Kw<'a> = [(&'a str, Val<'a>)];

/// Binds positional and keyword arguments to parameter names.
fn bind<'v, 'a, const N: usize>(
    fname: &str,
    args: &'v [Val<'a>],
    kw: &'v Kw<'a>,
    names: [&str; N],
    required: usize,
) -> R<[Option<&'v Val<'a>>; N]> {
    if args.len() > N {
        return Err(type_error(format!(
            "{fname}() takes at most {N} argument{} ({} given)",
            if N == 1 { "" } else { "s" },
            args.len()
        )));
    }
    let mut out: [Option<&'v Val<'a>>; N] = [None; N];
    for (i, a) in args.iter().enumerate() {
        out[i] = Some(a);
    }
    for (k, v) in kw {
        match names.iter().position(|n| n == k) {
            Some(i) if out[i].is_none() => out[i] = Some(v),
            Some(_) => {
                return Err(type_error(format!(
                    "{fname}() got multiple values for argument '{k}'"
                )));
            }
            None => {
                return Err(type_error(format!(
                    "{fname}() got an unexpected keyword argument '{k}'"
                )));
            }
        }
    }
    for (i, name) in names.iter().enumerate().take(required) {
        if out[i].is_none() {
            return Err(type_error(format!(
                "{fname}() missing required argument '{name}' (pos {})",
                i + 1
            )));
        }
    }
    Ok(out)
}

fn no_kw(fname: &str, kw: &Kw<'_>) -> R<()> {
    match kw.first() {
        Some((k, _)) => Err(type_error(format!(
            "{fname}() got an unexpected keyword argument '{k}'"
        ))),
        None => Ok(()),
    }
}

fn n_args(fname: &str, args: &[Val<'_>], min: usize, max: usize) -> R<()> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("exactly {min}")
        } else if args.len() < min {
            format!("at least {min}")
        } else {
            format!("at most {max}")
        };
        return Err(type_error(format!(
            "{fname}() takes {want} argument{} ({} given)",
            if max == 1 { "" } else { "s" },
            args.len()
        )));
    }
    Ok(())
}

fn as_int(v: &Val<'_>) -> R<i64> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Bool(b) => Ok(*b as i64),
        other => Err(type_error(format!(
            "'{}' object cannot be interpreted as an integer",
            other.type_name()
        ))),
    }
}

fn opt_int(v: Option<&Val<'_>>) -> R<Option<i64>> {
    match v {
        None | Some(Val::None) => Ok(None),
        Some(v) => as_int(v).map(Some),
    }
}

fn as_f64(v: &Val<'_>) -> R<f64> {
    as_num(v)
        .map(Num::f)
        .ok_or_else(|| type_error(format!("must be real number, not {}", v.type_name())))
}

fn as_str<'v, 'a>(v: &'v Val<'a>, what: &str) -> R<&'v Str<'a>> {
    match v {
        Val::Str(s) => Ok(s),
        other => Err(type_error(format!(
            "{what} must be str, not {}",
            other.type_name()
        ))),
    }
}

fn domain() -> crate::EvalError {
    err("ValueError", "math domain error")
}

/// A float to an int (`int(x)`, `math.floor`, ...).
fn float_to_int(f: f64) -> R<i64> {
    if f.is_nan() {
        return Err(err("ValueError", "cannot convert float NaN to integer"));
    }
    if f.is_infinite() {
        return Err(err(
            "OverflowError",
            "cannot convert float infinity to integer",
        ));
    }
    float_as_int(f.trunc())
        .ok_or_else(|| err("OverflowError", "int too large (rill ints are 64-bit)"))
}

/// CPython's `_PyUnicode_TransformDecimalAndSpaceToASCII` (what `int()`
/// and `float()` of a str do first): every Unicode decimal digit becomes its
/// ASCII digit, every other space a space.
fn ascii_decimal(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        return std::borrow::Cow::Borrowed(s);
    }
    static ND: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let nd = ND.get_or_init(|| regex::Regex::new(r"^\p{Nd}$").expect("valid regex"));
    let is_nd = |c: char| nd.is_match(c.encode_utf8(&mut [0u8; 4]));
    s.chars()
        .map(|c| {
            if c.is_ascii() {
                c
            } else if py_space(c) {
                ' '
            } else if is_nd(c) {
                // Nd digits come in runs of ten, 0 to 9
                let mut k = 0u32;
                while char::from_u32(c as u32 - k - 1).is_some_and(is_nd) {
                    k += 1;
                }
                char::from(b'0' + (k % 10) as u8)
            } else {
                c
            }
        })
        .collect::<String>()
        .into()
}

/// Python's `int(str, base)`.
fn parse_int(s: &str, base: i64) -> R<i64> {
    let bad = || {
        err(
            "ValueError",
            format!(
                "invalid literal for int() with base {base}: {}",
                repr_string(s)
            ),
        )
    };
    let u = ascii_decimal(s);
    let t = u.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = match base {
        0 => {
            if let Some(r) = lower.strip_prefix("0x") {
                (16, r.to_string())
            } else if let Some(r) = lower.strip_prefix("0o") {
                (8, r.to_string())
            } else if let Some(r) = lower.strip_prefix("0b") {
                (2, r.to_string())
            } else {
                if lower.len() > 1
                    && lower.starts_with('0')
                    && lower.chars().any(|c| c != '0' && c != '_')
                {
                    return Err(bad());
                }
                (10, lower.clone())
            }
        }
        16 => (16, lower.strip_prefix("0x").unwrap_or(&lower).to_string()),
        8 => (8, lower.strip_prefix("0o").unwrap_or(&lower).to_string()),
        2 => (2, lower.strip_prefix("0b").unwrap_or(&lower).to_string()),
        b if (2..=36).contains(&b) => (b as u32, lower.clone()),
        _ => return Err(err("ValueError", "int() base must be >= 2 and <= 36, or 0")),
    };
    let digits = digits.strip_prefix('_').unwrap_or(&digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(bad());
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let signed = if neg { format!("-{clean}") } else { clean };
    i64::from_str_radix(&signed, radix)
        .map_err(|_| err("OverflowError", "int too large (rill ints are 64-bit)"))
}

/// Python's `float(str)`.
fn parse_float(s: &str) -> R<f64> {
    let bad = || {
        err(
            "ValueError",
            format!("could not convert string to float: {}", repr_string(s)),
        )
    };
    let u = ascii_decimal(s);
    let t = u.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "infinity" | "nan") {
        let v = if body == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        };
        return Ok(if lower.starts_with('-') { -v } else { v });
    }
    if lower.contains("inf") || lower.contains("nan") || t.is_empty() {
        return Err(bad());
    }
    let clean = if t.contains('_') {
        let cs: Vec<char> = t.chars().collect();
        for (i, c) in cs.iter().enumerate() {
            if *c == '_'
                && !(i > 0
                    && cs[i - 1].is_ascii_digit()
                    && cs.get(i + 1).is_some_and(|n| n.is_ascii_digit()))
            {
                return Err(bad());
            }
        }
        t.replace('_', "")
    } else {
        t.to_string()
    };
    clean.parse::<f64>().map_err(|_| bad())
}

/// `round(x)` to an int, ties to even.
fn round_int(i: i64, nd: i64) -> R<i64> {
    if nd >= 0 {
        return Ok(i);
    }
    let Some(p) = 10i64.checked_pow(u32::try_from(-nd).unwrap_or(u32::MAX)) else {
        return Ok(0);
    };
    let q = i.div_euclid(p);
    let r = i.rem_euclid(p);
    let twice = (r as i128) * 2;
    let q = if twice > p as i128 || (twice == p as i128 && q % 2 != 0) {
        q + 1
    } else {
        q
    };
    q.checked_mul(p)
        .ok_or_else(|| err("OverflowError", "int too large (rill ints are 64-bit)"))
}

fn round_float(x: f64, nd: i64) -> f64 {
    if !x.is_finite() || nd > 323 {
        return x;
    }
    if nd >= 0 {
        format!("{:.*}", nd as usize, x).parse().unwrap_or(x)
    } else if nd < -308 {
        0.0f64.copysign(x)
    } else {
        round_to_pow10(x, (-nd) as usize)
    }
}

/// `x` rounded to a multiple of `10**k` (k >= 1) on its exact decimal
/// expansion, ties to even, converted back once (as CPython's `round`).
fn round_to_pow10(x: f64, k: usize) -> f64 {
    // exact for |x| >= 1 (at most 52 fraction digits); below 1 it is 0
    let s = format!("{:.52}", x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((s.as_str(), ""));
    if int == "0" || int.len() < k {
        return 0.0f64.copysign(x);
    }
    let (head, tail) = int.split_at(int.len() - k);
    let up = match tail.as_bytes()[0] {
        b'6'..=b'9' => true,
        b'5' => {
            tail[1..].bytes().any(|b| b != b'0')
                || frac.bytes().any(|b| b != b'0')
                || head.ends_with(['1', '3', '5', '7', '9'])
        }
        _ => false,
    };
    let mut d = head.as_bytes().to_vec();
    if up {
        let mut i = d.len();
        loop {
            if i == 0 {
                d.insert(0, b'1');
                break;
            }
            i -= 1;
            if d[i] == b'9' {
                d[i] = b'0';
            } else {
                d[i] += 1;
                break;
            }
        }
    }
    let digits = if d.is_empty() {
        "0"
    } else {
        std::str::from_utf8(&d).unwrap_or("0")
    };
    format!("{digits}e{k}")
        .parse::<f64>()
        .unwrap_or(0.0)
        .copysign(x)
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

fn py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\x1c'..='\x1f')
}

/// Python's character-index window `[start:end]` of `s` as byte offsets,
/// plus the character index of the window start.
fn char_window(s: &str, start: Option<i64>, end: Option<i64>) -> (usize, usize, usize) {
    let ascii = s.is_ascii();
    let n = if ascii { s.len() } else { s.chars().count() };
    let norm = |v: Option<i64>, def: usize| -> usize {
        match v {
            None => def,
            Some(v) if v < 0 => (n as i64 + v).max(0) as usize,
            Some(v) => (v as u64).min(n as u64) as usize,
        }
    };
    let a = norm(start, 0);
    let b = norm(end, n).max(a);
    if ascii {
        return (a, b, a);
    }
    let byte = |ci: usize| s.char_indices().nth(ci).map(|(i, _)| i).unwrap_or(s.len());
    (byte(a), byte(b), a)
}

/// Whether `[start:end]` starts after it ends, as CPython's `ADJUST_INDICES`
/// sees it (a start past the end is not clamped): nothing matches there,
/// not even `''`.
fn window_inverted(s: &str, start: Option<i64>, end: Option<i64>) -> bool {
    let Some(start) = start else {
        return false;
    };
    let n = if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    } as i64;
    let adj = |v: i64| {
        if v < 0 { v.saturating_add(n).max(0) } else { v }
    };
    adj(start) > end.map_or(n, |e| adj(e).min(n))
}

fn char_index(s: &str, byte: usize) -> i64 {
    if s.is_ascii() {
        byte as i64
    } else {
        s[..byte].chars().count() as i64
    }
}

fn is_titlecase(c: char) -> bool {
    matches!(
        c as u32,
        0x1C5
            | 0x1C8
            | 0x1CB
            | 0x1F2
            | 0x1F88..=0x1F8F
            | 0x1F98..=0x1F9F
            | 0x1FA8..=0x1FAF
            | 0x1FBC
            | 0x1FCC
            | 0x1FFC
    )
}

fn is_cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase() || is_titlecase(c)
}

/// Python's full title-case mapping of one character (not its upper case:
/// `ǆ` → `ǅ`, `ß` → `Ss`).
fn push_title(c: char, out: &mut String) {
    let t = match c as u32 {
        0x1C4..=0x1C6 => Some('\u{1C5}'),
        0x1C7..=0x1C9 => Some('\u{1C8}'),
        0x1CA..=0x1CC => Some('\u{1CB}'),
        0x1F1..=0x1F3 => Some('\u{1F2}'),
        // Georgian: title case is itself
        0x10D0..=0x10FA | 0x10FD..=0x10FF => Some(c),
        0x1F80..=0x1FAF => char::from_u32(c as u32 | 8),
        0x1FB3 | 0x1FBC => Some('\u{1FBC}'),
        0x1FC3 | 0x1FCC => Some('\u{1FCC}'),
        0x1FF3 | 0x1FFC => Some('\u{1FFC}'),
        _ => None,
    };
    if let Some(t) = t {
        out.push(t);
        return;
    }
    let mut up = c.to_uppercase();
    out.push(up.next().unwrap_or(c));
    let rest: String = up.collect();
    match c as u32 {
        0x1FB2 | 0x1FB4 | 0x1FB7 | 0x1FC2 | 0x1FC4 | 0x1FC7 | 0x1FF2 | 0x1FF4 | 0x1FF7 => {
            out.push_str(&rest.replace('\u{399}', "\u{345}"))
        }
        0xDF | 0x587 | 0xFB00..=0xFB06 | 0xFB13..=0xFB17 => out.push_str(&rest.to_lowercase()),
        _ => out.push_str(&rest),
    }
}

fn title_case(s: &str) -> String {
    // `str::to_lowercase` maps char by char, except that Σ takes its final
    // form from its context: the slices of `lowered` line up with `s`
    let lowered = s.to_lowercase();
    let mut out = String::with_capacity(s.len());
    let (mut pos, mut prev_cased) = (0usize, false);
    for c in s.chars() {
        let n: usize = c.to_lowercase().map(char::len_utf8).sum();
        if prev_cased {
            out.push_str(&lowered[pos..pos + n]);
        } else {
            push_title(c, &mut out);
        }
        pos += n;
        prev_cased = is_cased(c);
    }
    out
}

/// Python's `str.casefold` (full case folding, no final sigma).
fn casefold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c as u32 {
            0x131 | 0x13A0..=0x13F5 => out.push(c),
            0x13F8..=0x13FD => out.extend(char::from_u32(c as u32 - 8)),
            0xAB70..=0xABBF => out.extend(char::from_u32(c as u32 - 0xAB70 + 0x13A0)),
            0x1E9E => out.push_str("ss"),
            _ => {
                for u in c.to_uppercase() {
                    out.extend(u.to_lowercase())
                }
            }
        }
    }
    out
}

/// Stable merge sort of `(key, item)` pairs with a fallible `<`.
fn merge_sort<'a>(v: Vec<(Val<'a>, Val<'a>)>, w: &mut u64) -> R<Vec<(Val<'a>, Val<'a>)>> {
    if v.len() <= 1 {
        return Ok(v);
    }
    let mut v = v;
    let right = v.split_off(v.len() / 2);
    let left = merge_sort(v, w)?;
    let right = merge_sort(right, w)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (Some(a), Some(b)) => {
                if py_lt(&b.0, &a.0, w)? {
                    out.extend(r.next());
                } else {
                    out.extend(l.next());
                }
            }
            (Some(_), None) => out.extend(l.by_ref()),
            (None, Some(_)) => out.extend(r.by_ref()),
            (None, None) => break,
        }
    }
    Ok(out)
}

impl<'a> Interp<'a> {
    fn limit(&self) -> usize {
        self.limits.max_str_bytes
    }

    fn new_str(&mut self, s: String) -> R<Val<'a>> {
        self.alloc_str(s.len())?;
        Ok(Val::str(s))
    }

    fn sort_items(
        &mut self,
        items: Vec<Val<'a>>,
        key: Option<&Val<'a>>,
        reverse: bool,
    ) -> R<Vec<Val<'a>>> {
        let n = items.len() as u64;
        self.charge(n * (64 - n.leading_zeros() as u64).max(1) / 4)?;
        let mut pairs = Vec::with_capacity(items.len());
        for x in items {
            let k = match key {
                Some(Val::None) | None => x.clone(),
                Some(f) => self.call_value(f, std::slice::from_ref(&x), &[])?,
            };
            pairs.push((k, x));
        }
        if reverse {
            pairs.reverse();
        }
        let mut w = 0;
        let sorted = merge_sort(pairs, &mut w);
        self.charge(w / 8)?;
        let mut sorted: Vec<Val<'a>> = sorted?.into_iter().map(|(_, x)| x).collect();
        if reverse {
            sorted.reverse();
        }
        Ok(sorted)
    }

    fn min_max(
        &mut self,
        fname: &str,
        args: &[Val<'a>],
        kw: &Kw<'a>,
        want_max: bool,
    ) -> R<Val<'a>> {
        let [key, default] = bind(fname, &[], kw, ["key", "default"], 0)?;
        let items = match args {
            [] => {
                return Err(type_error(format!(
                    "{fname} expected at least 1 argument, got 0"
                )));
            }
            [one] => self.collect(one)?,
            many => {
                if default.is_some() {
                    return Err(type_error(format!(
                        "Cannot specify a default for {fname}() with multiple positional arguments"
                    )));
                }
                many.to_vec()
            }
        };
        let mut best: Option<(Val<'a>, Val<'a>)> = None;
        for x in items {
            let k = match key {
                Some(Val::None) | None => x.clone(),
                Some(f) => self.call_value(f, std::slice::from_ref(&x), &[])?,
            };
            best = match best {
                None => Some((k, x)),
                Some((bk, bx)) => {
                    let better = if want_max {
                        self.order(crate::val::Ord4::Lt, &bk, &k)?
                    } else {
                        self.order(crate::val::Ord4::Lt, &k, &bk)?
                    };
                    if better { Some((k, x)) } else { Some((bk, bx)) }
                }
            };
        }
        match (best, default) {
            (Some((_, x)), _) => Ok(x),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => Err(err(
                "ValueError",
                format!("{fname}() iterable argument is empty"),
            )),
        }
    }

    fn sum(&mut self, args: &[Val<'a>], kw: &Kw<'a>) -> R<Val<'a>> {
        let [it, start] = bind("sum", args, kw, ["iterable", "start"], 1)?;
        let mut acc = start.cloned().unwrap_or(Val::Int(0));
        if let Val::Str(_) = acc {
            return Err(type_error(
                "sum() can't sum strings [use ''.join(seq) instead]",
            ));
        }
        let mut src = self.iter_of(it.unwrap_or(&Val::None))?;
        let mut iter = std::iter::from_fn(|| src.next_val());
        // Exact int sum, then compensated float sum (as CPython 3.12+).
        while let Some(x) = iter.next() {
            self.step()?;
            match (&acc, &x) {
                (Val::Int(_) | Val::Bool(_), Val::Int(_) | Val::Bool(_)) => {
                    acc = crate::interp::arith(
                        crate::ir::BinOp::Add,
                        as_num(&acc).unwrap_or(Num::I(0)),
                        as_num(&x).unwrap_or(Num::I(0)),
                    )?;
                }
                (
                    Val::Int(_) | Val::Bool(_) | Val::Float(_),
                    Val::Float(_) | Val::Int(_) | Val::Bool(_),
                ) => {
                    let mut total = as_f64(&acc)?;
                    let mut comp = 0.0f64;
                    let add = |total: &mut f64, comp: &mut f64, v: f64| {
                        let t = *total + v;
                        if total.abs() >= v.abs() {
                            *comp += (*total - t) + v;
                        } else {
                            *comp += (v - t) + *total;
                        }
                        *total = t;
                    };
                    add(&mut total, &mut comp, as_f64(&x)?);
                    let mut rest = None;
                    for y in iter.by_ref() {
                        self.step()?;
                        match as_num(&y) {
                            Some(n) => add(&mut total, &mut comp, n.f()),
                            None => {
                                rest = Some(y);
                                break;
                            }
                        }
                    }
                    if comp != 0.0 && comp.is_finite() {
                        total += comp;
                    }
                    acc = Val::Float(total);
                    if let Some(y) = rest {
                        acc = self.binop(crate::ir::BinOp::Add, acc, y)?;
                    }
                }
                _ => {
                    if let Val::Str(_) = x {
                        return Err(type_error(
                            "unsupported operand type(s) for +: 'int' and 'str'",
                        ));
                    }
                    acc = self.binop(crate::ir::BinOp::Add, acc, x)?;
                }
            }
        }
        Ok(acc)
    }

    pub(crate) fn isinstance_one(v: &Val<'a>, cls: &Val<'a>) -> R<bool> {
        let Val::Builtin(b) = cls else {
            return Err(type_error(
                "isinstance() arg 2 must be a type, a tuple of types, or a union",
            ));
        };
        Ok(match b {
            Builtin::Int => matches!(v, Val::Int(_) | Val::Bool(_)),
            Builtin::Bool => matches!(v, Val::Bool(_)),
            Builtin::Float => matches!(v, Val::Float(_)),
            Builtin::Str => matches!(v, Val::Str(_)),
            Builtin::Bytes => matches!(v, Val::Bytes(_)),
            Builtin::List => matches!(v, Val::List(_)),
            Builtin::Tuple => matches!(v, Val::Tuple(_)),
            Builtin::Dict => matches!(v, Val::Dict(_) | Val::Rec(_)),
            Builtin::Set => matches!(v, Val::Set(_)),
            Builtin::Range => matches!(v, Val::Range(..)),
            e if e.is_exception() => match v {
                Val::Exc(x) => x.class == *e || *e == Builtin::Exception,
                _ => false,
            },
            _ => {
                return Err(type_error(
                    "isinstance() arg 2 must be a type, a tuple of types, or a union",
                ));
            }
        })
    }

    pub(crate) fn call_builtin(&mut self, b: Builtin, args: &[Val<'a>], kw: &Kw<'a>) -> R<Val<'a>> {
        let fname = b.name();
        if b.is_exception() {
            no_kw(fname, kw)?;
            return self.make_exc(b, args);
        }
        match b {
            Builtin::Len => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let n: u64 = match &args[0] {
                    Val::Str(s) => {
                        let s = s.as_str();
                        if s.is_ascii() {
                            s.len() as u64
                        } else {
                            s.chars().count() as u64
                        }
                    }
                    Val::Bytes(b) => b.as_bytes().len() as u64,
                    Val::List(l) => l.0.borrow().len() as u64,
                    Val::Tuple(t) => t.0.len() as u64,
                    Val::Dict(d) => d.0.borrow().len() as u64,
                    Val::Set(s) => s.0.borrow().len() as u64,
                    Val::Rec(m) => m.len() as u64,
                    Val::Range(a, b, s) => range_len(*a, *b, *s),
                    Val::Tensor(t) => match t.shape().first() {
                        Some(d) => *d as u64,
                        None => return Err(type_error("len() of unsized object")),
                    },
                    other => {
                        return Err(type_error(format!(
                            "object of type '{}' has no len()",
                            other.type_name()
                        )));
                    }
                };
                i64::try_from(n).map(Val::Int).map_err(|_| {
                    err(
                        "OverflowError",
                        "Python int too large to convert to C ssize_t",
                    )
                })
            }
            Builtin::Str => {
                let [v, enc, _errors] = bind(fname, args, kw, ["object", "encoding", "errors"], 0)?;
                match (v, enc) {
                    (None, _) => Ok(Val::Str(Str::B(""))),
                    (Some(Val::Bytes(b)), Some(_)) => self.decode(b.as_bytes(), enc, _errors),
                    (Some(Val::Str(x)), _) => Ok(Val::Str(x.clone())),
                    (Some(v), _) => {
                        let out = str_of(v, self.limit())?;
                        self.alloc_str(out.as_str().len())?;
                        Ok(Val::Str(out))
                    }
                }
            }
            Builtin::Int => {
                let [v, base] = bind(fname, args, kw, ["x", "base"], 0)?;
                let base = opt_int(base)?;
                match (v, base) {
                    (None, _) => Ok(Val::Int(0)),
                    (Some(Val::Str(s)), b) => Ok(Val::Int(parse_int(s.as_str(), b.unwrap_or(10))?)),
                    (Some(_), Some(_)) => Err(type_error(
                        "int() can't convert non-string with explicit base",
                    )),
                    (Some(Val::Int(i)), None) => Ok(Val::Int(*i)),
                    (Some(Val::Bool(b)), None) => Ok(Val::Int(*b as i64)),
                    (Some(Val::Float(f)), None) => Ok(Val::Int(float_to_int(*f)?)),
                    (Some(Val::Bytes(b)), None) => {
                        let s = std::str::from_utf8(b.as_bytes())
                            .map_err(|_| err("ValueError", "invalid literal for int()"))?;
                        Ok(Val::Int(parse_int(s, 10)?))
                    }
                    (Some(other), None) => Err(type_error(format!(
                        "int() argument must be a string, a bytes-like object or a real number, not '{}'",
                        other.type_name()
                    ))),
                }
            }
            Builtin::Float => {
                no_kw(fname, kw)?;
                n_args(fname, args, 0, 1)?;
                match args.first() {
                    None => Ok(Val::Float(0.0)),
                    Some(Val::Str(s)) => Ok(Val::Float(parse_float(s.as_str())?)),
                    Some(v) => match as_num(v) {
                        Some(n) => Ok(Val::Float(n.f())),
                        None => Err(type_error(format!(
                            "float() argument must be a string or a real number, not '{}'",
                            v.type_name()
                        ))),
                    },
                }
            }
            Builtin::Bool => {
                no_kw(fname, kw)?;
                n_args(fname, args, 0, 1)?;
                Ok(Val::Bool(args.first().is_some_and(truthy)))
            }
            Builtin::Abs => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                match &args[0] {
                    Val::Int(i) => i.checked_abs().map(Val::Int).ok_or_else(|| {
                        err("OverflowError", "int too large (rill ints are 64-bit)")
                    }),
                    Val::Bool(b) => Ok(Val::Int(*b as i64)),
                    Val::Float(f) => Ok(Val::Float(f.abs())),
                    other => Err(type_error(format!(
                        "bad operand type for abs(): '{}'",
                        other.type_name()
                    ))),
                }
            }
            Builtin::Min => self.min_max("min", args, kw, false),
            Builtin::Max => self.min_max("max", args, kw, true),
            Builtin::Round => {
                let [x, nd] = bind(fname, args, kw, ["number", "ndigits"], 1)?;
                let nd = opt_int(nd)?;
                match (x.unwrap_or(&Val::None), nd) {
                    (Val::Int(i), nd) => Ok(Val::Int(round_int(*i, nd.unwrap_or(0))?)),
                    (Val::Bool(b), nd) => Ok(Val::Int(round_int(*b as i64, nd.unwrap_or(0))?)),
                    (Val::Float(f), None) => Ok(Val::Int(float_to_int(f.round_ties_even())?)),
                    (Val::Float(f), Some(n)) => Ok(Val::Float(round_float(*f, n))),
                    (other, _) => Err(type_error(format!(
                        "type {} doesn't define __round__ method",
                        other.type_name()
                    ))),
                }
            }
            Builtin::Sum => self.sum(args, kw),
            Builtin::Any | Builtin::All => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let want = b == Builtin::Any;
                let mut it = self.iter_of(&args[0])?;
                while let Some(x) = it.next_val() {
                    self.step()?;
                    if truthy(&x) == want {
                        return Ok(Val::Bool(want));
                    }
                }
                Ok(Val::Bool(!want))
            }
            Builtin::Sorted => {
                n_args(fname, args, 1, 1)?;
                let [key, reverse] = bind(fname, &[], kw, ["key", "reverse"], 0)?;
                let items = self.collect(&args[0])?;
                let rev = reverse.is_some_and(truthy);
                Ok(Val::list(self.sort_items(items, key, rev)?))
            }
            Builtin::Reversed => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                if matches!(args[0], Val::Set(_)) {
                    return Err(type_error(format!(
                        "'{}' object is not reversible",
                        args[0].type_name()
                    )));
                }
                let mut items = self.collect(&args[0])?;
                items.reverse();
                Ok(Val::list(items))
            }
            Builtin::Enumerate => {
                let [it, start] = bind(fname, args, kw, ["iterable", "start"], 1)?;
                let start = opt_int(start)?.unwrap_or(0);
                let items = self.collect(it.unwrap_or(&Val::None))?;
                let mut out = Vec::with_capacity(items.len());
                for (i, x) in items.into_iter().enumerate() {
                    let n = start
                        .checked_add(i as i64)
                        .ok_or_else(|| err("OverflowError", "enumerate index overflow"))?;
                    out.push(Val::tuple(vec![Val::Int(n), x]));
                }
                Ok(Val::list(out))
            }
            Builtin::Zip => {
                let [strict] = bind(fname, &[], kw, ["strict"], 0)?;
                let cols = args
                    .iter()
                    .map(|a| self.collect(a))
                    .collect::<R<Vec<_>>>()?;
                let n = cols.iter().map(Vec::len).min().unwrap_or(0);
                if strict.is_some_and(truthy) && cols.iter().any(|c| c.len() != n) {
                    return Err(err("ValueError", "zip() arguments have different lengths"));
                }
                let out = (0..n)
                    .map(|i| Val::tuple(cols.iter().map(|c| c[i].clone()).collect()))
                    .collect();
                Ok(Val::list(out))
            }
            Builtin::Range => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 3)?;
                let ints = args.iter().map(as_int).collect::<R<Vec<_>>>()?;
                let (a, b, s) = match ints.as_slice() {
                    [b] => (0, *b, 1),
                    [a, b] => (*a, *b, 1),
                    [a, b, s] => (*a, *b, *s),
                    _ => (0, 0, 1),
                };
                if s == 0 {
                    return Err(err("ValueError", "range() arg 3 must not be zero"));
                }
                Ok(Val::Range(a, b, s))
            }
            Builtin::List | Builtin::Tuple => {
                no_kw(fname, kw)?;
                n_args(fname, args, 0, 1)?;
                let items = match args.first() {
                    Some(v) => self.collect(v)?,
                    None => Vec::new(),
                };
                Ok(if b == Builtin::List {
                    Val::list(items)
                } else {
                    Val::tuple(items)
                })
            }
            Builtin::Set => {
                no_kw(fname, kw)?;
                n_args(fname, args, 0, 1)?;
                let mut s = IndexSet::new();
                if let Some(v) = args.first() {
                    for x in self.collect(v)? {
                        let k = self.key(&x)?;
                        s.insert(k);
                    }
                }
                Ok(Val::set(s))
            }
            Builtin::Dict => {
                n_args(fname, args, 0, 1)?;
                let mut m = IndexMap::new();
                if let Some(src) = args.first() {
                    for (k, v) in self.pairs(src)? {
                        m.insert(k, v);
                    }
                }
                for (k, v) in kw {
                    m.insert(Key::Str(Str::B(k)), v.clone());
                }
                Ok(Val::dict(m))
            }
            Builtin::Bytes => {
                let [src, enc, errors] =
                    bind(fname, args, kw, ["source", "encoding", "errors"], 0)?;
                match src {
                    None => Ok(Val::Bytes(Bin::B(b""))),
                    Some(Val::Str(s)) => {
                        if enc.is_none() {
                            return Err(type_error("string argument without an encoding"));
                        }
                        self.encode(s.as_str(), enc, errors)
                    }
                    Some(Val::Int(n)) => {
                        let n =
                            usize::try_from(*n).map_err(|_| err("ValueError", "negative count"))?;
                        self.alloc_str(n)?;
                        Ok(Val::Bytes(Bin::owned(vec![0; n])))
                    }
                    Some(Val::Bytes(b)) => Ok(Val::Bytes(b.clone())),
                    Some(other) => {
                        let items = self.collect(other)?;
                        let bytes = items
                            .iter()
                            .map(|x| {
                                as_int(x).and_then(|i| {
                                    u8::try_from(i).map_err(|_| {
                                        err("ValueError", "bytes must be in range(0, 256)")
                                    })
                                })
                            })
                            .collect::<R<Vec<u8>>>()?;
                        Ok(Val::Bytes(Bin::owned(bytes)))
                    }
                }
            }
            Builtin::Isinstance => {
                no_kw(fname, kw)?;
                n_args(fname, args, 2, 2)?;
                match &args[1] {
                    Val::Tuple(t) => {
                        for c in t.0.iter() {
                            if Self::isinstance_one(&args[0], c)? {
                                return Ok(Val::Bool(true));
                            }
                        }
                        Ok(Val::Bool(false))
                    }
                    c => Ok(Val::Bool(Self::isinstance_one(&args[0], c)?)),
                }
            }
            Builtin::Repr => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let out = repr(&args[0], self.limit())?;
                self.new_str(out)
            }
            Builtin::Map => {
                no_kw(fname, kw)?;
                if args.len() < 2 {
                    return Err(type_error("map() must have at least two arguments."));
                }
                let cols = args[1..]
                    .iter()
                    .map(|a| self.collect(a))
                    .collect::<R<Vec<_>>>()?;
                let n = cols.iter().map(Vec::len).min().unwrap_or(0);
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let call_args: Vec<Val<'a>> = cols.iter().map(|c| c[i].clone()).collect();
                    out.push(self.call_value(&args[0], &call_args, &[])?);
                }
                Ok(Val::list(out))
            }
            Builtin::Filter => {
                no_kw(fname, kw)?;
                n_args(fname, args, 2, 2)?;
                let items = self.collect(&args[1])?;
                let mut out = Vec::new();
                for x in items {
                    let keep = match &args[0] {
                        Val::None => truthy(&x),
                        f => {
                            let r = self.call_value(f, std::slice::from_ref(&x), &[])?;
                            truthy(&r)
                        }
                    };
                    if keep {
                        out.push(x);
                    }
                }
                Ok(Val::list(out))
            }
            Builtin::Print => Ok(Val::None),
            Builtin::Format => {
                let [v, spec] = bind(fname, args, kw, ["value", "format_spec"], 1)?;
                let spec = match spec {
                    Some(s) => as_str(s, "format_spec")?.as_str(),
                    None => "",
                };
                let s = format_value(v.unwrap_or(&Val::None), spec, self.limit())?;
                self.new_str(s)
            }
            Builtin::Divmod => {
                no_kw(fname, kw)?;
                n_args(fname, args, 2, 2)?;
                let q = self.binop(crate::ir::BinOp::FloorDiv, args[0].clone(), args[1].clone())?;
                let r = self.binop(crate::ir::BinOp::Mod, args[0].clone(), args[1].clone())?;
                Ok(Val::tuple(vec![q, r]))
            }
            Builtin::Pow => {
                let [x, y, m] = bind(fname, args, kw, ["base", "exp", "mod"], 2)?;
                let (x, y) = (x.unwrap_or(&Val::None), y.unwrap_or(&Val::None));
                match m {
                    None | Some(Val::None) => {
                        self.binop(crate::ir::BinOp::Pow, x.clone(), y.clone())
                    }
                    Some(m) => {
                        let (b, e, m) = (as_int(x)?, as_int(y)?, as_int(m)?);
                        if m == 0 {
                            return Err(err("ValueError", "pow() 3rd argument cannot be 0"));
                        }
                        let n = (m as i128).abs();
                        if n == 1 {
                            return Ok(Val::Int(0));
                        }
                        let mut base = (b as i128).rem_euclid(n);
                        if e < 0 {
                            // the modular inverse (Python 3.8+)
                            let (mut r0, mut r1, mut t0, mut t1) = (n, base, 0i128, 1i128);
                            while r1 != 0 {
                                let q = r0 / r1;
                                (r0, r1) = (r1, r0 - q * r1);
                                (t0, t1) = (t1, t0 - q * t1);
                            }
                            if r0 != 1 {
                                return Err(err(
                                    "ValueError",
                                    "base is not invertible for the given modulus",
                                ));
                            }
                            base = t0.rem_euclid(n);
                        }
                        let mut result: i128 = 1;
                        let mut e = e.unsigned_abs();
                        while e > 0 {
                            if e & 1 == 1 {
                                result = result * base % n;
                            }
                            base = base * base % n;
                            e >>= 1;
                        }
                        if m < 0 && result != 0 {
                            result -= n;
                        }
                        Ok(Val::Int(result as i64))
                    }
                }
            }
            Builtin::Hex | Builtin::Oct | Builtin::Bin => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let i = as_int(&args[0])?;
                let mag = i.unsigned_abs();
                let body = match b {
                    Builtin::Hex => format!("0x{mag:x}"),
                    Builtin::Oct => format!("0o{mag:o}"),
                    _ => format!("0b{mag:b}"),
                };
                Ok(Val::str(if i < 0 { format!("-{body}") } else { body }))
            }
            Builtin::Ord => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                match &args[0] {
                    Val::Str(s) => {
                        let mut cs = s.as_str().chars();
                        match (cs.next(), cs.next()) {
                            (Some(c), None) => Ok(Val::Int(c as i64)),
                            _ => Err(type_error(format!(
                                "ord() expected a character, but string of length {} found",
                                s.as_str().chars().count()
                            ))),
                        }
                    }
                    Val::Bytes(b) if b.as_bytes().len() == 1 => {
                        Ok(Val::Int(b.as_bytes()[0] as i64))
                    }
                    other => Err(type_error(format!(
                        "ord() expected string of length 1, but {} found",
                        other.type_name()
                    ))),
                }
            }
            Builtin::Chr => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let i = as_int(&args[0])?;
                let c = u32::try_from(i)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| err("ValueError", "chr() arg not in range(0x110000)"))?;
                Ok(Val::str(c.to_string()))
            }
            _ => Err(type_error(format!("'{fname}' is not callable here"))),
        }
    }

    /// Key/value pairs from a mapping or an iterable of pairs.
    fn pairs(&mut self, src: &Val<'a>) -> R<Vec<(Key<'a>, Val<'a>)>> {
        if matches!(src, Val::Dict(_) | Val::Rec(_)) {
            return self.mapping_items(src);
        }
        let items = self.collect(src)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let kv = self.collect(it)?;
            let [k, v] = <[Val<'a>; 2]>::try_from(kv).map_err(|kv| {
                err(
                    "ValueError",
                    format!(
                        "dictionary update sequence element #{i} has length {}; 2 is required",
                        kv.len()
                    ),
                )
            })?;
            out.push((self.key(&k)?, v));
        }
        Ok(out)
    }

    fn decode(&mut self, b: &[u8], enc: Option<&Val<'a>>, errors: Option<&Val<'a>>) -> R<Val<'a>> {
        let enc = match enc {
            Some(e) => as_str(e, "encoding")?
                .as_str()
                .to_ascii_lowercase()
                .replace('_', "-"),
            None => "utf-8".into(),
        };
        let errors = match errors {
            Some(e) => as_str(e, "errors")?.as_str().to_string(),
            None => "strict".into(),
        };
        let s = match enc.as_str() {
            "utf-8" | "utf8" => match std::str::from_utf8(b) {
                Ok(s) => s.to_string(),
                Err(e) => match errors.as_str() {
                    "replace" => String::from_utf8_lossy(b).into_owned(),
                    "ignore" => String::from_utf8_lossy(b).replace('\u{fffd}', ""),
                    _ => {
                        return Err(err(
                            "UnicodeDecodeError",
                            format!(
                                "'utf-8' codec can't decode byte 0x{:02x} in position {}: invalid utf-8",
                                b.get(e.valid_up_to()).copied().unwrap_or(0),
                                e.valid_up_to()
                            ),
                        ));
                    }
                },
            },
            "ascii" | "us-ascii" => {
                if let Some(p) = b.iter().position(|c| !c.is_ascii()) {
                    match errors.as_str() {
                        "replace" => b
                            .iter()
                            .map(|c| if c.is_ascii() { *c as char } else { '\u{fffd}' })
                            .collect(),
                        "ignore" => b
                            .iter()
                            .filter(|c| c.is_ascii())
                            .map(|c| *c as char)
                            .collect(),
                        _ => {
                            return Err(err(
                                "UnicodeDecodeError",
                                format!(
                                    "'ascii' codec can't decode byte 0x{:02x} in position {p}",
                                    b[p]
                                ),
                            ));
                        }
                    }
                } else {
                    b.iter().map(|c| *c as char).collect()
                }
            }
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => {
                b.iter().map(|c| *c as char).collect()
            }
            other => return Err(err("LookupError", format!("unknown encoding: {other}"))),
        };
        self.new_str(s)
    }

    fn encode(&mut self, s: &str, enc: Option<&Val<'a>>, errors: Option<&Val<'a>>) -> R<Val<'a>> {
        let enc = match enc {
            Some(e) => as_str(e, "encoding")?
                .as_str()
                .to_ascii_lowercase()
                .replace('_', "-"),
            None => "utf-8".into(),
        };
        let errors = match errors {
            Some(e) => as_str(e, "errors")?.as_str().to_string(),
            None => "strict".into(),
        };
        let (limit, name) = match enc.as_str() {
            "utf-8" | "utf8" => return Ok(Val::Bytes(Bin::owned(s.as_bytes().to_vec()))),
            "ascii" | "us-ascii" => (0x80u32, "ascii"),
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => (0x100u32, "latin-1"),
            other => return Err(err("LookupError", format!("unknown encoding: {other}"))),
        };
        let mut out = Vec::with_capacity(s.len());
        for (i, c) in s.chars().enumerate() {
            if (c as u32) < limit {
                out.push(c as u32 as u8);
            } else {
                match errors.as_str() {
                    "replace" => out.push(b'?'),
                    "ignore" => {}
                    _ => {
                        return Err(err(
                            "UnicodeEncodeError",
                            format!(
                                "'{name}' codec can't encode character {} in position {i}: ordinal not in range({limit})",
                                repr_string(&c.to_string())
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Val::Bytes(Bin::owned(out)))
    }

    // ---- methods ---------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_method(
        &mut self,
        recv: Val<'a>,
        m: Method,
        name: &str,
        args: &[Val<'a>],
        kw: &Kw<'a>,
        pattern: Option<&'a PatternObj>,
    ) -> R<Val<'a>> {
        let r = match &recv {
            Val::Str(s) => self.str_method(s, m, args, kw)?,
            Val::Bytes(b) => self.bytes_method(b, m, args, kw)?,
            Val::List(l) => self.list_method(l, m, args, kw)?,
            Val::Tuple(t) => self.seq_method(&t.0, m, args, kw)?,
            Val::Dict(d) => self.dict_method(d, m, args, kw)?,
            Val::Rec(r) => self.rec_method(r, m, args, kw)?,
            Val::Set(s) => self.set_method(s, m, args, kw)?,
            Val::Float(x) if m == Method::IsInteger => {
                n_args(name, args, 0, 0)?;
                Some(Val::Bool(x.is_finite() && x.fract() == 0.0))
            }
            Val::Module(Module::Math) => self.math_fn(m, args, kw)?,
            Val::Module(Module::Re) => self.re_fn(m, args, kw, pattern)?,
            Val::Pattern(p) => self.pattern_method(p.clone(), m, args, kw)?,
            Val::Match(mo) => self.match_method(mo, m, args, kw)?,
            _ => None,
        };
        r.ok_or_else(|| self.no_attr(&recv, name))
    }

    fn str_method(
        &mut self,
        s: &Str<'a>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let text = s.as_str();
        let fname = m.name();
        let strip_set = |v: Option<&Val<'a>>| -> R<Option<Vec<char>>> {
            match v {
                None | Some(Val::None) => Ok(None),
                Some(Val::Str(c)) => Ok(Some(c.as_str().chars().collect())),
                Some(o) => Err(type_error(format!(
                    "{fname} arg must be None or str, not {}",
                    o.type_name()
                ))),
            }
        };
        let v = match m {
            M::Strip | M::Lstrip | M::Rstrip => {
                let [chars] = bind(fname, args, kw, ["chars"], 0)?;
                let set = strip_set(chars)?;
                let is_strip = |c: char| match &set {
                    None => py_space(c),
                    Some(cs) => cs.contains(&c),
                };
                let start = if m == M::Rstrip {
                    0
                } else {
                    text.len() - text.trim_start_matches(is_strip).len()
                };
                let end = if m == M::Lstrip {
                    text.len()
                } else {
                    text.trim_end_matches(is_strip).len()
                };
                Val::Str(s.sub(start, end.max(start)))
            }
            M::Lower | M::Upper | M::Casefold | M::Swapcase | M::Title | M::Capitalize => {
                n_args(fname, args, 0, 0)?;
                let out = match m {
                    M::Lower if text.is_ascii() => text.to_ascii_lowercase(),
                    M::Upper if text.is_ascii() => text.to_ascii_uppercase(),
                    M::Lower => text.to_lowercase(),
                    M::Upper => text.to_uppercase(),
                    M::Casefold => casefold(text),
                    M::Swapcase => {
                        // (Σ lowered takes its final form from its context)
                        let lowered = text.to_lowercase();
                        let mut out = String::with_capacity(text.len());
                        let mut pos = 0usize;
                        for c in text.chars() {
                            let n: usize = c.to_lowercase().map(char::len_utf8).sum();
                            if c.is_uppercase() {
                                out.push_str(&lowered[pos..pos + n]);
                            } else if c.is_lowercase() {
                                out.extend(c.to_uppercase());
                            } else {
                                out.push(c);
                            }
                            pos += n;
                        }
                        out
                    }
                    M::Title => title_case(text),
                    _ => match text.chars().next() {
                        Some(c) => {
                            let mut out = String::with_capacity(text.len());
                            push_title(c, &mut out);
                            let skip: usize = c.to_lowercase().map(char::len_utf8).sum();
                            out.push_str(&text.to_lowercase()[skip..]);
                            out
                        }
                        None => String::new(),
                    },
                };
                self.new_str(out)?
            }
            M::Split | M::Rsplit => {
                let [sep, maxsplit] = bind(fname, args, kw, ["sep", "maxsplit"], 0)?;
                let max = opt_int(maxsplit)?.unwrap_or(-1);
                let max = if max < 0 { usize::MAX } else { max as usize };
                self.charge(text.len() as u64 / 16)?;
                let parts: Vec<Val<'a>> = match sep {
                    None | Some(Val::None) => self.split_ws(s, max, m == M::Rsplit),
                    Some(sep) => {
                        let sep = as_str(sep, "sep")?.as_str();
                        if sep.is_empty() {
                            return Err(err("ValueError", "empty separator"));
                        }
                        let base = text.as_ptr() as usize;
                        let off = |p: &str| p.as_ptr() as usize - base;
                        let mut pieces: Vec<Val<'a>> = if m == M::Split {
                            text.splitn(max.saturating_add(1), sep)
                                .map(|p| Val::Str(s.sub(off(p), off(p) + p.len())))
                                .collect()
                        } else {
                            text.rsplitn(max.saturating_add(1), sep)
                                .map(|p| Val::Str(s.sub(off(p), off(p) + p.len())))
                                .collect()
                        };
                        if m == M::Rsplit {
                            pieces.reverse();
                        }
                        pieces
                    }
                };
                self.alloc_items(parts.len(), "list")?;
                Val::list(parts)
            }
            M::Splitlines => {
                let [keep] = bind(fname, args, kw, ["keepends"], 0)?;
                let keep = keep.is_some_and(truthy);
                let mut out = Vec::new();
                let mut start = 0;
                let mut it = text.char_indices().peekable();
                while let Some((i, c)) = it.next() {
                    if is_line_break(c) {
                        let mut end = i + c.len_utf8();
                        if c == '\r' && it.peek().map(|x| x.1) == Some('\n') {
                            it.next();
                            end += 1;
                        }
                        out.push(Val::Str(s.sub(start, if keep { end } else { i })));
                        start = end;
                    }
                }
                if start < text.len() {
                    out.push(Val::Str(s.sub(start, text.len())));
                }
                self.alloc_items(out.len(), "list")?;
                Val::list(out)
            }
            M::Join => {
                n_args(fname, args, 1, 1)?;
                no_kw(fname, kw)?;
                let items = self.collect(&args[0])?;
                let mut total = 0usize;
                for (i, x) in items.iter().enumerate() {
                    match x {
                        Val::Str(p) => total = total.saturating_add(p.as_str().len()),
                        other => {
                            return Err(type_error(format!(
                                "sequence item {i}: expected str instance, {} found",
                                other.type_name()
                            )));
                        }
                    }
                }
                total =
                    total.saturating_add(text.len().saturating_mul(items.len().saturating_sub(1)));
                self.alloc_str(total)?;
                let mut out = String::with_capacity(total);
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(text);
                    }
                    if let Val::Str(p) = x {
                        out.push_str(p.as_str());
                    }
                }
                Val::str(out)
            }
            M::Replace => {
                let [old, new, count] = bind(fname, args, kw, ["old", "new", "count"], 2)?;
                let old = as_str(old.unwrap_or(&Val::None), "replace() argument 1")?.as_str();
                let new = as_str(new.unwrap_or(&Val::None), "replace() argument 2")?.as_str();
                let count = opt_int(count)?.unwrap_or(-1);
                let max = if count < 0 {
                    usize::MAX
                } else {
                    count as usize
                };
                let occurrences = if old.is_empty() {
                    text.chars().count() + 1
                } else {
                    text.matches(old).count()
                }
                .min(max);
                let size = (text.len() as u128 + occurrences as u128 * new.len() as u128)
                    .saturating_sub(occurrences as u128 * old.len() as u128);
                self.alloc_str(usize::try_from(size).unwrap_or(usize::MAX))?;
                if occurrences == 0 {
                    Val::Str(s.clone())
                } else {
                    Val::str(text.replacen(old, new, max))
                }
            }
            M::Startswith | M::Endswith => {
                let [prefix, start, end] = bind(fname, args, kw, ["prefix", "start", "end"], 1)?;
                let (start, end) = (opt_int(start)?, opt_int(end)?);
                let (lo, hi, _) = if start.is_some() || end.is_some() {
                    char_window(text, start, end)
                } else {
                    (0, text.len(), 0)
                };
                let inverted = window_inverted(text, start, end);
                let window = &text[lo..hi];
                let test = |p: &str| {
                    !inverted
                        && if m == M::Startswith {
                            window.starts_with(p)
                        } else {
                            window.ends_with(p)
                        }
                };
                match prefix.unwrap_or(&Val::None) {
                    Val::Str(p) => Val::Bool(test(p.as_str())),
                    Val::Tuple(t) => {
                        let mut any = false;
                        for p in t.0.iter() {
                            if test(as_str(p, "tuple for startswith")?.as_str()) {
                                any = true;
                                break;
                            }
                        }
                        Val::Bool(any)
                    }
                    other => {
                        return Err(type_error(format!(
                            "{fname} first arg must be str or a tuple of str, not {}",
                            other.type_name()
                        )));
                    }
                }
            }
            M::Find | M::Rfind | M::Index | M::Rindex | M::Count => {
                let [sub, start, end] = bind(fname, args, kw, ["sub", "start", "end"], 1)?;
                let sub = as_str(sub.unwrap_or(&Val::None), "must be str")?.as_str();
                let (start, end) = (opt_int(start)?, opt_int(end)?);
                if window_inverted(text, start, end) {
                    return match m {
                        M::Count => Ok(Some(Val::Int(0))),
                        M::Find | M::Rfind => Ok(Some(Val::Int(-1))),
                        _ => Err(err("ValueError", "substring not found")),
                    };
                }
                let (lo, hi, clo) = char_window(text, start, end);
                let window = &text[lo..hi];
                self.charge(window.len() as u64 / 64)?;
                if m == M::Count {
                    let n = if sub.is_empty() {
                        window.chars().count() + 1
                    } else {
                        window.matches(sub).count()
                    };
                    return Ok(Some(Val::Int(n as i64)));
                }
                let found = if matches!(m, M::Find | M::Index) {
                    window.find(sub)
                } else {
                    window.rfind(sub)
                };
                match found {
                    Some(b) => Val::Int(clo as i64 + char_index(window, b)),
                    None if matches!(m, M::Find | M::Rfind) => Val::Int(-1),
                    None => return Err(err("ValueError", "substring not found")),
                }
            }
            M::Isdigit | M::Isdecimal | M::Isnumeric | M::Isalpha | M::Isalnum | M::Isspace => {
                n_args(fname, args, 0, 0)?;
                let test: fn(char) -> bool = match m {
                    M::Isdecimal => py_decimal,
                    M::Isdigit => py_digit,
                    M::Isnumeric => char::is_numeric,
                    M::Isalpha => py_alpha,
                    M::Isalnum => |c| py_alpha(c) || c.is_numeric(),
                    _ => py_space,
                };
                Val::Bool(!text.is_empty() && text.chars().all(test))
            }
            M::Isupper | M::Islower => {
                n_args(fname, args, 0, 0)?;
                // as CPython: a title-case letter (`ǅ`) is neither, and
                // makes both false
                let upper = m == M::Isupper;
                let mut cased = false;
                let mut ok = true;
                for c in text.chars() {
                    let (is, other) = if upper {
                        (c.is_uppercase(), c.is_lowercase())
                    } else {
                        (c.is_lowercase(), c.is_uppercase())
                    };
                    if other || is_titlecase(c) {
                        ok = false;
                        break;
                    }
                    cased |= is;
                }
                Val::Bool(ok && cased)
            }
            M::Istitle => {
                n_args(fname, args, 0, 0)?;
                let has_cased = text.chars().any(|c| c.is_alphabetic());
                Val::Bool(has_cased && title_case(text) == text)
            }
            M::Format => {
                let out = self.str_format(text, args, kw, 0)?;
                self.new_str(out)?
            }
            M::Zfill => {
                n_args(fname, args, 1, 1)?;
                let width = as_int(&args[0])?.max(0) as usize;
                let n = text.chars().count();
                if n >= width {
                    Val::Str(s.clone())
                } else {
                    self.alloc_str(width)?;
                    let (sign, rest) = match text.chars().next() {
                        Some(c @ ('+' | '-')) => (c.to_string(), &text[1..]),
                        _ => (String::new(), text),
                    };
                    Val::str(format!("{sign}{}{rest}", "0".repeat(width - n)))
                }
            }
            M::Center | M::Ljust | M::Rjust => {
                let [width, fill] = bind(fname, args, kw, ["width", "fillchar"], 1)?;
                let width = as_int(width.unwrap_or(&Val::None))?.max(0) as usize;
                let fill = match fill {
                    None => ' ',
                    Some(f) => {
                        let f = as_str(f, "fillchar")?.as_str();
                        let mut cs = f.chars();
                        match (cs.next(), cs.next()) {
                            (Some(c), None) => c,
                            _ => {
                                return Err(type_error(
                                    "The fill character must be exactly one character long",
                                ));
                            }
                        }
                    }
                };
                let n = text.chars().count();
                if n >= width {
                    Val::Str(s.clone())
                } else {
                    self.alloc_str(width.saturating_mul(fill.len_utf8()))?;
                    let pad = width - n;
                    let (l, r) = match m {
                        M::Ljust => (0, pad),
                        M::Rjust => (pad, 0),
                        _ => {
                            let l = pad / 2 + (pad & width & 1);
                            (l, pad - l)
                        }
                    };
                    let f = |k: usize| std::iter::repeat_n(fill, k).collect::<String>();
                    Val::str(format!("{}{text}{}", f(l), f(r)))
                }
            }
            M::Partition | M::Rpartition => {
                n_args(fname, args, 1, 1)?;
                let sep = as_str(&args[0], "sep")?.as_str();
                if sep.is_empty() {
                    return Err(err("ValueError", "empty separator"));
                }
                let found = if m == M::Partition {
                    text.find(sep)
                } else {
                    text.rfind(sep)
                };
                let empty = || Val::Str(Str::B(""));
                match found {
                    Some(i) => Val::tuple(vec![
                        Val::Str(s.sub(0, i)),
                        Val::Str(s.sub(i, i + sep.len())),
                        Val::Str(s.sub(i + sep.len(), text.len())),
                    ]),
                    None if m == M::Partition => {
                        Val::tuple(vec![Val::Str(s.clone()), empty(), empty()])
                    }
                    None => Val::tuple(vec![empty(), empty(), Val::Str(s.clone())]),
                }
            }
            M::Encode => {
                let [enc, errors] = bind(fname, args, kw, ["encoding", "errors"], 0)?;
                self.encode(text, enc, errors)?
            }
            M::Removeprefix | M::Removesuffix => {
                n_args(fname, args, 1, 1)?;
                let p = as_str(&args[0], fname)?.as_str();
                if m == M::Removeprefix && text.starts_with(p) {
                    Val::Str(s.sub(p.len(), text.len()))
                } else if m == M::Removesuffix && !p.is_empty() && text.ends_with(p) {
                    Val::Str(s.sub(0, text.len() - p.len()))
                } else {
                    Val::Str(s.clone())
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    /// `str.split()` / `str.rsplit()` on runs of whitespace.
    fn split_ws(&self, s: &Str<'a>, max: usize, from_right: bool) -> Vec<Val<'a>> {
        let text = s.as_str();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        if !from_right {
            let mut i = 0;
            let bytes_len = text.len();
            while i < bytes_len {
                let rest = &text[i..];
                let skip = rest.len() - rest.trim_start_matches(py_space).len();
                i += skip;
                if i >= bytes_len {
                    break;
                }
                if spans.len() == max {
                    spans.push((i, bytes_len));
                    break;
                }
                let rest = &text[i..];
                let len = rest.find(py_space).unwrap_or(rest.len());
                spans.push((i, i + len));
                i += len;
            }
        } else {
            let mut end = text.len();
            while end > 0 {
                let head = &text[..end];
                end = head.trim_end_matches(py_space).len();
                if end == 0 {
                    break;
                }
                if spans.len() == max {
                    spans.push((0, end));
                    break;
                }
                let head = &text[..end];
                let start = head
                    .rfind(py_space)
                    .map(|i| i + head[i..].chars().next().map_or(1, char::len_utf8))
                    .unwrap_or(0);
                spans.push((start, end));
                end = start;
            }
            spans.reverse();
        }
        spans
            .into_iter()
            .map(|(a, b)| Val::Str(s.sub(a, b)))
            .collect()
    }

    /// `str.format(*args, **kwargs)`.
    fn str_format(&mut self, fmt: &str, args: &[Val<'a>], kw: &Kw<'a>, depth: usize) -> R<String> {
        if depth > 2 {
            return Err(err("ValueError", "Max string recursion exceeded"));
        }
        let cs: Vec<char> = fmt.chars().collect();
        let mut out = String::new();
        let mut auto = 0usize;
        let mut manual = false;
        let mut i = 0;
        while i < cs.len() {
            let c = cs[i];
            if c == '}' {
                if cs.get(i + 1) == Some(&'}') {
                    out.push('}');
                    i += 2;
                    continue;
                }
                return Err(err("ValueError", "Single '}' encountered in format string"));
            }
            if c != '{' {
                out.push(c);
                i += 1;
                continue;
            }
            if cs.get(i + 1) == Some(&'{') {
                out.push('{');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            let mut level = 1;
            while j < cs.len() {
                match cs[j] {
                    '{' => level += 1,
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if j >= cs.len() {
                return Err(err("ValueError", "expected '}' before end of string"));
            }
            let field: String = cs[i + 1..j].iter().collect();
            i = j + 1;
            let (head, spec) = match field.find(':') {
                Some(k) => (&field[..k], &field[k + 1..]),
                None => (field.as_str(), ""),
            };
            let (name, conv) = match head.find('!') {
                Some(k) => (&head[..k], Some(&head[k + 1..])),
                None => (head, None),
            };
            let first_end = name.find(['.', '[']).unwrap_or(name.len());
            let first = &name[..first_end];
            let mut v = if first.is_empty() {
                if manual {
                    return Err(err(
                        "ValueError",
                        "cannot switch from manual field specification to automatic field numbering",
                    ));
                }
                let v = args.get(auto).cloned().ok_or_else(|| {
                    err(
                        "IndexError",
                        format!("Replacement index {auto} out of range for positional args tuple"),
                    )
                })?;
                auto += 1;
                v
            } else if let Ok(n) = first.parse::<usize>() {
                manual = true;
                args.get(n).cloned().ok_or_else(|| {
                    err(
                        "IndexError",
                        format!("Replacement index {n} out of range for positional args tuple"),
                    )
                })?
            } else {
                kw.iter()
                    .find(|(k, _)| *k == first)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| err("KeyError", repr_string(first)))?
            };
            let mut rest = &name[first_end..];
            while !rest.is_empty() {
                if let Some(r) = rest.strip_prefix('.') {
                    let end = r.find(['.', '[']).unwrap_or(r.len());
                    v = self.get_attr(v, &r[..end], None)?;
                    rest = &r[end..];
                } else if let Some(r) = rest.strip_prefix('[') {
                    let end = r
                        .find(']')
                        .ok_or_else(|| err("ValueError", "Missing ']' in format string"))?;
                    let key = &r[..end];
                    let k = match key.parse::<i64>() {
                        Ok(n) => Val::Int(n),
                        Err(_) => Val::str(key.to_string()),
                    };
                    v = self.get_item(&v, &k)?;
                    rest = &r[end + 1..];
                } else {
                    return Err(err(
                        "ValueError",
                        "Only '.' or '[' may follow ']' in format field specifier",
                    ));
                }
            }
            let v = match conv {
                None => v,
                Some("s") => Val::Str(str_of(&v, self.limit())?),
                Some("r") | Some("a") => Val::str(repr(&v, self.limit())?),
                Some(c) => {
                    return Err(err(
                        "ValueError",
                        format!("Unknown conversion specifier {c}"),
                    ));
                }
            };
            let spec = if spec.contains('{') {
                self.str_format(spec, args, kw, depth + 1)?
            } else {
                spec.to_string()
            };
            out.push_str(&format_value(&v, &spec, self.limit())?);
            self.alloc_str(out.len())?;
        }
        Ok(out)
    }

    fn bytes_method(
        &mut self,
        b: &Bin<'a>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let bytes = b.as_bytes();
        let fname = m.name();
        let bytes_arg = |v: &Val<'a>| -> R<Vec<u8>> {
            match v {
                Val::Bytes(x) => Ok(x.as_bytes().to_vec()),
                other => Err(type_error(format!(
                    "a bytes-like object is required, not '{}'",
                    other.type_name()
                ))),
            }
        };
        Ok(Some(match m {
            M::Decode => {
                let [enc, errors] = bind(fname, args, kw, ["encoding", "errors"], 0)?;
                self.decode(bytes, enc, errors)?
            }
            M::Hex => {
                n_args(fname, args, 0, 0)?;
                self.alloc_str(bytes.len() * 2)?;
                Val::str(bytes.iter().map(|x| format!("{x:02x}")).collect())
            }
            M::Startswith | M::Endswith => {
                n_args(fname, args, 1, 1)?;
                let p = bytes_arg(&args[0])?;
                Val::Bool(if m == M::Startswith {
                    bytes.starts_with(&p)
                } else {
                    bytes.ends_with(&p)
                })
            }
            M::Count | M::Find => {
                n_args(fname, args, 1, 1)?;
                let p = bytes_arg(&args[0])?;
                if p.is_empty() {
                    return Ok(Some(Val::Int(if m == M::Count {
                        bytes.len() as i64 + 1
                    } else {
                        0
                    })));
                }
                let positions: Vec<usize> = (0..bytes.len().saturating_sub(p.len() - 1))
                    .filter(|&i| bytes[i..].starts_with(&p))
                    .collect();
                if m == M::Find {
                    Val::Int(positions.first().map_or(-1, |x| *x as i64))
                } else {
                    let mut n = 0;
                    let mut next = 0;
                    for x in positions {
                        if x >= next {
                            n += 1;
                            next = x + p.len();
                        }
                    }
                    Val::Int(n)
                }
            }
            _ => return Ok(None),
        }))
    }

    /// Methods shared by lists and tuples.
    fn seq_method(
        &mut self,
        items: &[Val<'a>],
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        Ok(Some(match m {
            M::Count => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                self.charge(items.len() as u64 / 4)?;
                let mut n = 0;
                for x in items {
                    if self.eq(x, &args[0])? {
                        n += 1;
                    }
                }
                Val::Int(n)
            }
            M::Index => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 3)?;
                let (start, _, count) = crate::interp::slice_indices(
                    items.len(),
                    opt_int(args.get(1))?,
                    opt_int(args.get(2))?,
                    1,
                );
                self.charge(items.len() as u64 / 4)?;
                for k in 0..count {
                    let i = start.max(0) as usize + k;
                    if self.eq(&items[i], &args[0])? {
                        return Ok(Some(Val::Int(i as i64)));
                    }
                }
                return Err(err(
                    "ValueError",
                    format!("{} is not in list", repr(&args[0], 1000)?),
                ));
            }
            _ => return Ok(None),
        }))
    }

    fn list_method(
        &mut self,
        l: &Rc<ListObj<'a>>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        Ok(Some(match m {
            M::Count | M::Index => {
                let items = l.0.borrow().clone();
                return self.seq_method(&items, m, args, kw);
            }
            M::Append => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let n = l.0.borrow().len();
                self.alloc_items(n + 1, "list")?;
                l.0.borrow_mut().push(args[0].clone());
                Val::None
            }
            M::Extend => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let items = self.collect(&args[0])?;
                let n = l.0.borrow().len();
                self.alloc_items(n + items.len(), "list")?;
                l.0.borrow_mut().extend(items);
                Val::None
            }
            M::Insert => {
                no_kw(fname, kw)?;
                n_args(fname, args, 2, 2)?;
                let i = as_int(&args[0])?;
                let n = l.0.borrow().len();
                self.alloc_items(n + 1, "list")?;
                let (start, _, _) = crate::interp::slice_indices(n, Some(i), None, 1);
                l.0.borrow_mut()
                    .insert(start.clamp(0, n as i64) as usize, args[1].clone());
                Val::None
            }
            M::Pop => {
                no_kw(fname, kw)?;
                n_args(fname, args, 0, 1)?;
                let mut v = l.0.borrow_mut();
                if v.is_empty() {
                    return Err(err("IndexError", "pop from empty list"));
                }
                let i = match args.first() {
                    Some(x) => seq_index(as_int(x)?, v.len(), "pop")?,
                    None => v.len() - 1,
                };
                v.remove(i)
            }
            M::Remove => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 1)?;
                let pos = {
                    let v = l.0.borrow();
                    let mut pos = None;
                    for (i, x) in v.iter().enumerate() {
                        if self.eq(x, &args[0])? {
                            pos = Some(i);
                            break;
                        }
                    }
                    pos
                };
                match pos {
                    Some(i) => {
                        l.0.borrow_mut().remove(i);
                    }
                    None => return Err(err("ValueError", "list.remove(x): x not in list")),
                }
                Val::None
            }
            M::Copy => {
                n_args(fname, args, 0, 0)?;
                let items = self.collect(&Val::List(l.clone()))?;
                Val::list(items)
            }
            M::Sort => {
                n_args(fname, args, 0, 0)?;
                let [key, reverse] = bind(fname, &[], kw, ["key", "reverse"], 0)?;
                let items = l.0.borrow().clone();
                let sorted = self.sort_items(items, key, reverse.is_some_and(truthy))?;
                *l.0.borrow_mut() = sorted;
                Val::None
            }
            M::Reverse => {
                n_args(fname, args, 0, 0)?;
                l.0.borrow_mut().reverse();
                Val::None
            }
            M::Clear => {
                n_args(fname, args, 0, 0)?;
                let old = std::mem::take(&mut *l.0.borrow_mut());
                drop(old);
                Val::None
            }
            _ => return Ok(None),
        }))
    }

    fn dict_method(
        &mut self,
        d: &Rc<crate::val::DictObj<'a>>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        Ok(Some(match m {
            M::Get => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 2)?;
                let k = self.key(&args[0])?;
                d.0.borrow()
                    .get(&k)
                    .cloned()
                    .unwrap_or_else(|| args.get(1).cloned().unwrap_or(Val::None))
            }
            M::Keys | M::Values | M::Items => {
                n_args(fname, args, 0, 0)?;
                let d = d.0.borrow();
                self.charge(d.len() as u64 / 4)?;
                Val::list(match m {
                    M::Keys => d.keys().map(key_val).collect(),
                    M::Values => d.values().cloned().collect(),
                    _ => d
                        .iter()
                        .map(|(k, v)| Val::tuple(vec![key_val(k), v.clone()]))
                        .collect(),
                })
            }
            M::Pop => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 2)?;
                let k = self.key(&args[0])?;
                let removed = d.0.borrow_mut().shift_remove(&k);
                match (removed, args.get(1)) {
                    (Some(v), _) => v,
                    (None, Some(dflt)) => dflt.clone(),
                    (None, None) => return Err(err("KeyError", repr(&args[0], 1000)?)),
                }
            }
            M::Setdefault => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 2)?;
                let k = self.key(&args[0])?;
                let existing = d.0.borrow().get(&k).cloned();
                match existing {
                    Some(v) => v,
                    None => {
                        let v = args.get(1).cloned().unwrap_or(Val::None);
                        self.alloc_items(d.0.borrow().len() + 1, "dict")?;
                        d.0.borrow_mut().insert(k, v.clone());
                        v
                    }
                }
            }
            M::Update => {
                n_args(fname, args, 0, 1)?;
                let mut new = match args.first() {
                    Some(src) => self.pairs(src)?,
                    None => Vec::new(),
                };
                new.extend(kw.iter().map(|(k, v)| (Key::Str(Str::B(k)), v.clone())));
                self.alloc_items(d.0.borrow().len() + new.len(), "dict")?;
                let mut dm = d.0.borrow_mut();
                for (k, v) in new {
                    dm.insert(k, v);
                }
                Val::None
            }
            M::Copy => {
                n_args(fname, args, 0, 0)?;
                let items = self.mapping_items(&Val::Dict(d.clone()))?;
                Val::dict(items.into_iter().collect())
            }
            M::Clear => {
                n_args(fname, args, 0, 0)?;
                let old = std::mem::take(&mut *d.0.borrow_mut());
                drop(old);
                Val::None
            }
            _ => return Ok(None),
        }))
    }

    fn rec_method(
        &mut self,
        r: &'a rill_core::Fields,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        Ok(Some(match m {
            M::Get => {
                no_kw(fname, kw)?;
                n_args(fname, args, 1, 2)?;
                let found = match &args[0] {
                    Val::Str(s) => r.get(s.as_str()),
                    other => {
                        // an unhashable key is a TypeError, as in a dict
                        self.key(other)?;
                        None
                    }
                };
                match found {
                    Some(v) => self.rec_val(v)?,
                    None => args.get(1).cloned().unwrap_or(Val::None),
                }
            }
            M::Keys | M::Values | M::Items | M::Copy => {
                n_args(fname, args, 0, 0)?;
                self.charge(r.len() as u64 / 4)?;
                match m {
                    M::Keys => Val::list(r.keys().map(|k| Val::Str(Str::B(k))).collect()),
                    M::Values => {
                        Val::list(r.values().map(|v| self.rec_val(v)).collect::<R<Vec<_>>>()?)
                    }
                    M::Items => Val::list(
                        r.iter()
                            .map(|(k, v)| {
                                Ok(Val::tuple(vec![Val::Str(Str::B(k)), self.rec_val(v)?]))
                            })
                            .collect::<R<Vec<_>>>()?,
                    ),
                    _ => Val::dict(
                        r.iter()
                            .map(|(k, v)| Ok((Key::Str(Str::B(k)), self.rec_val(v)?)))
                            .collect::<R<IndexMap<_, _>>>()?,
                    ),
                }
            }
            _ => return Ok(None),
        }))
    }

    fn set_method(
        &mut self,
        s: &Rc<crate::val::SetObj<'a>>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        no_kw(fname, kw)?;
        let keys_of = |this: &mut Self, v: &Val<'a>| -> R<IndexSet<Key<'a>>> {
            let items = this.collect(v)?;
            items.iter().map(|x| this.key(x)).collect()
        };
        Ok(Some(match m {
            M::Add => {
                n_args(fname, args, 1, 1)?;
                let k = self.key(&args[0])?;
                self.alloc_items(s.0.borrow().len() + 1, "set")?;
                s.0.borrow_mut().insert(k);
                Val::None
            }
            M::Discard | M::Remove => {
                n_args(fname, args, 1, 1)?;
                let k = self.key(&args[0])?;
                let removed = s.0.borrow_mut().shift_remove(&k);
                if !removed && m == M::Remove {
                    return Err(err("KeyError", repr(&args[0], 1000)?));
                }
                Val::None
            }
            M::Pop => {
                n_args(fname, args, 0, 0)?;
                let k =
                    s.0.borrow_mut()
                        .pop()
                        .ok_or_else(|| err("KeyError", "'pop from an empty set'"))?;
                key_val(&k)
            }
            M::Union | M::Intersection | M::Difference | M::Update => {
                let mut cur: IndexSet<Key<'a>> = s.0.borrow().clone();
                for a in args {
                    let other = keys_of(self, a)?;
                    cur = match m {
                        M::Union | M::Update => cur.union(&other).cloned().collect(),
                        M::Intersection => cur.intersection(&other).cloned().collect(),
                        _ => cur.difference(&other).cloned().collect(),
                    };
                }
                self.alloc_items(cur.len(), "set")?;
                if m == M::Update {
                    *s.0.borrow_mut() = cur;
                    Val::None
                } else {
                    Val::set(cur)
                }
            }
            M::Issubset | M::Issuperset => {
                n_args(fname, args, 1, 1)?;
                let other = keys_of(self, &args[0])?;
                let cur = s.0.borrow();
                Val::Bool(if m == M::Issubset {
                    cur.iter().all(|k| other.contains(k))
                } else {
                    other.iter().all(|k| cur.contains(k))
                })
            }
            M::Copy => {
                n_args(fname, args, 0, 0)?;
                Val::set(s.0.borrow().clone())
            }
            M::Clear => {
                n_args(fname, args, 0, 0)?;
                s.0.borrow_mut().clear();
                Val::None
            }
            _ => return Ok(None),
        }))
    }

    fn math_fn(&mut self, m: Method, args: &[Val<'a>], kw: &Kw<'a>) -> R<Option<Val<'a>>> {
        let fname = m.name();
        let one = |args: &[Val<'a>]| -> R<f64> {
            n_args(fname, args, 1, 1)?;
            as_f64(&args[0])
        };
        let two = |args: &[Val<'a>]| -> R<(f64, f64)> {
            n_args(fname, args, 2, 2)?;
            Ok((as_f64(&args[0])?, as_f64(&args[1])?))
        };
        let checked = |r: f64, x: f64| -> R<Val<'a>> {
            if r.is_nan() && !x.is_nan() {
                Err(domain())
            } else if r.is_infinite() && x.is_finite() {
                Err(err("OverflowError", "math range error"))
            } else {
                Ok(Val::Float(r))
            }
        };
        if !matches!(m, M::Isclose) {
            no_kw(fname, kw)?;
        }
        Ok(Some(match m {
            M::Sqrt => {
                let x = one(args)?;
                if x < 0.0 {
                    return Err(domain());
                }
                Val::Float(x.sqrt())
            }
            M::Floor | M::Ceil | M::Trunc => {
                n_args(fname, args, 1, 1)?;
                match &args[0] {
                    Val::Int(i) => Val::Int(*i),
                    Val::Bool(b) => Val::Int(*b as i64),
                    v => {
                        let x = as_f64(v)?;
                        Val::Int(float_to_int(match m {
                            M::Floor => x.floor(),
                            M::Ceil => x.ceil(),
                            _ => x.trunc(),
                        })?)
                    }
                }
            }
            M::Log => {
                n_args(fname, args, 1, 2)?;
                let x = as_f64(&args[0])?;
                if x <= 0.0 {
                    return Err(domain());
                }
                match args.get(1) {
                    None => Val::Float(x.ln()),
                    Some(b) => {
                        let b = as_f64(b)?;
                        if b <= 0.0 || b == 1.0 {
                            return Err(if b == 1.0 {
                                err("ZeroDivisionError", "float division by zero")
                            } else {
                                domain()
                            });
                        }
                        Val::Float(x.ln() / b.ln())
                    }
                }
            }
            M::Log10 | M::Log2 => {
                let x = one(args)?;
                if x <= 0.0 {
                    return Err(domain());
                }
                Val::Float(if m == M::Log10 { x.log10() } else { x.log2() })
            }
            M::Exp => {
                let x = one(args)?;
                checked(x.exp(), x)?
            }
            M::Pow => {
                let (x, y) = two(args)?;
                if x == 0.0 && y < 0.0 && y.is_finite() {
                    return Err(domain());
                }
                if x < 0.0 && x.is_finite() && y.is_finite() && y.fract() != 0.0 {
                    return Err(domain());
                }
                let r = x.powf(y);
                if r.is_infinite() && x.is_finite() && y.is_finite() {
                    return Err(err("OverflowError", "math range error"));
                }
                Val::Float(r)
            }
            M::Fabs => Val::Float(one(args)?.abs()),
            M::Isnan => Val::Bool(one(args)?.is_nan()),
            M::Isinf => Val::Bool(one(args)?.is_infinite()),
            M::Isfinite => Val::Bool(one(args)?.is_finite()),
            M::Sin | M::Cos | M::Tan => {
                let x = one(args)?;
                if x.is_infinite() {
                    return Err(domain());
                }
                Val::Float(match m {
                    M::Sin => x.sin(),
                    M::Cos => x.cos(),
                    _ => x.tan(),
                })
            }
            M::Asin | M::Acos => {
                let x = one(args)?;
                if !(-1.0..=1.0).contains(&x) {
                    return Err(domain());
                }
                Val::Float(if m == M::Asin { x.asin() } else { x.acos() })
            }
            M::Atan => Val::Float(one(args)?.atan()),
            M::Atan2 => {
                let (y, x) = two(args)?;
                Val::Float(y.atan2(x))
            }
            M::Hypot => {
                let xs = args.iter().map(as_f64).collect::<R<Vec<f64>>>()?;
                Val::Float(vector_norm(&xs))
            }
            M::Degrees => Val::Float(one(args)?.to_degrees()),
            M::Radians => Val::Float(one(args)?.to_radians()),
            M::Copysign => {
                let (x, y) = two(args)?;
                Val::Float(x.copysign(y))
            }
            M::Fmod => {
                let (x, y) = two(args)?;
                // a domain error only where the result is NaN from numbers
                let r = x % y;
                if r.is_nan() && !x.is_nan() && !y.is_nan() {
                    return Err(domain());
                }
                Val::Float(r)
            }
            M::Isclose => {
                n_args(fname, args, 2, 2)?;
                let [rel, abs] = bind(fname, &[], kw, ["rel_tol", "abs_tol"], 0)?;
                let rel = rel.map(as_f64).transpose()?.unwrap_or(1e-9);
                let abs = abs.map(as_f64).transpose()?.unwrap_or(0.0);
                let (a, b) = (as_f64(&args[0])?, as_f64(&args[1])?);
                if rel < 0.0 || abs < 0.0 {
                    return Err(err("ValueError", "tolerances must be non-negative"));
                }
                let close = a == b
                    || (a.is_finite() && b.is_finite() && {
                        let diff = (b - a).abs();
                        diff <= (rel * b).abs() || diff <= (rel * a).abs() || diff <= abs
                    });
                Val::Bool(close)
            }
            M::Gcd => {
                let mut g: u64 = 0;
                for a in args {
                    let mut x = as_int(a)?.unsigned_abs();
                    let mut y = g;
                    while y != 0 {
                        let t = x % y;
                        x = y;
                        y = t;
                    }
                    g = x;
                }
                Val::Int(
                    i64::try_from(g).map_err(|_| {
                        err("OverflowError", "int too large (rill ints are 64-bit)")
                    })?,
                )
            }
            M::Prod => {
                n_args(fname, args, 1, 2)?;
                let items = self.collect(&args[0])?;
                let mut acc = args.get(1).cloned().unwrap_or(Val::Int(1));
                for x in items {
                    acc = self.binop(crate::ir::BinOp::Mul, acc, x)?;
                }
                acc
            }
            M::Fsum => {
                n_args(fname, args, 1, 1)?;
                let items = self.collect(&args[0])?;
                let xs = items.iter().map(as_f64).collect::<R<Vec<f64>>>()?;
                Val::Float(fsum(&xs)?)
            }
            _ => return Ok(None),
        }))
    }

    // ---- re --------------------------------------------------------------------

    fn pattern_arg(
        &mut self,
        p: &Val<'a>,
        flags: i64,
        pre: Option<&'a PatternObj>,
    ) -> R<PatRef<'a>> {
        if let (Some(pre), Val::Str(_)) = (pre, p) {
            return Ok(PatRef::B(pre));
        }
        match p {
            Val::Pattern(x) => {
                if flags != 0 {
                    return Err(err(
                        "ValueError",
                        "cannot process flags argument with a compiled pattern",
                    ));
                }
                Ok(x.clone())
            }
            Val::Str(s) => Ok(PatRef::O(self.pattern_for(s.as_str(), flags)?)),
            other => Err(type_error(format!(
                "first argument must be string or compiled pattern, not {}",
                other.type_name()
            ))),
        }
    }

    fn re_fn(
        &mut self,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
        pre: Option<&'a PatternObj>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        let flags_of = |v: Option<&Val<'a>>| -> R<i64> { Ok(opt_int(v)?.unwrap_or(0)) };
        Ok(Some(match m {
            M::Match | M::Search | M::Fullmatch => {
                let [p, s, fl] = bind(fname, args, kw, ["pattern", "string", "flags"], 2)?;
                let pat = self.pattern_arg(p.unwrap_or(&Val::None), flags_of(fl)?, pre)?;
                let mode = match m {
                    M::Match => Mode::Match,
                    M::Search => Mode::Search,
                    _ => Mode::Full,
                };
                self.re_exec(pat, mode, s.unwrap_or(&Val::None))?
            }
            M::Sub | M::Subn => {
                let [p, repl, s, count, fl] = bind(
                    fname,
                    args,
                    kw,
                    ["pattern", "repl", "string", "count", "flags"],
                    3,
                )?;
                let pat = self.pattern_arg(p.unwrap_or(&Val::None), flags_of(fl)?, pre)?;
                self.re_sub(
                    pat,
                    repl.unwrap_or(&Val::None),
                    s.unwrap_or(&Val::None),
                    opt_int(count)?.unwrap_or(0),
                    m == M::Subn,
                )?
            }
            M::Findall | M::Finditer => {
                let [p, s, fl] = bind(fname, args, kw, ["pattern", "string", "flags"], 2)?;
                let pat = self.pattern_arg(p.unwrap_or(&Val::None), flags_of(fl)?, pre)?;
                self.re_findall(pat, s.unwrap_or(&Val::None), m == M::Finditer)?
            }
            M::Split => {
                let [p, s, max, fl] = bind(
                    fname,
                    args,
                    kw,
                    ["pattern", "string", "maxsplit", "flags"],
                    2,
                )?;
                let pat = self.pattern_arg(p.unwrap_or(&Val::None), flags_of(fl)?, pre)?;
                self.re_split(pat, s.unwrap_or(&Val::None), opt_int(max)?.unwrap_or(0))?
            }
            M::Compile => {
                let [p, fl] = bind(fname, args, kw, ["pattern", "flags"], 1)?;
                Val::Pattern(self.pattern_arg(p.unwrap_or(&Val::None), flags_of(fl)?, pre)?)
            }
            M::Escape => {
                let [p] = bind(fname, args, kw, ["pattern"], 1)?;
                let s = as_str(p.unwrap_or(&Val::None), "pattern")?.as_str();
                let out = py_escape(s);
                self.new_str(out)?
            }
            _ => return Ok(None),
        }))
    }

    fn pattern_method(
        &mut self,
        pat: PatRef<'a>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        Ok(Some(match m {
            M::Match | M::Search | M::Fullmatch => {
                let [s] = bind(fname, args, kw, ["string"], 1)?;
                let mode = match m {
                    M::Match => Mode::Match,
                    M::Search => Mode::Search,
                    _ => Mode::Full,
                };
                self.re_exec(pat, mode, s.unwrap_or(&Val::None))?
            }
            M::Sub | M::Subn => {
                let [repl, s, count] = bind(fname, args, kw, ["repl", "string", "count"], 2)?;
                self.re_sub(
                    pat,
                    repl.unwrap_or(&Val::None),
                    s.unwrap_or(&Val::None),
                    opt_int(count)?.unwrap_or(0),
                    m == M::Subn,
                )?
            }
            M::Findall | M::Finditer => {
                let [s] = bind(fname, args, kw, ["string"], 1)?;
                self.re_findall(pat, s.unwrap_or(&Val::None), m == M::Finditer)?
            }
            M::Split => {
                let [s, max] = bind(fname, args, kw, ["string", "maxsplit"], 1)?;
                self.re_split(pat, s.unwrap_or(&Val::None), opt_int(max)?.unwrap_or(0))?
            }
            _ => return Ok(None),
        }))
    }

    fn subject<'v>(s: &'v Val<'a>) -> R<&'v Str<'a>> {
        match s {
            Val::Str(s) => Ok(s),
            other => Err(type_error(format!(
                "expected string or bytes-like object, got '{}'",
                other.type_name()
            ))),
        }
    }

    fn re_exec(&mut self, pat: PatRef<'a>, mode: Mode, s: &Val<'a>) -> R<Val<'a>> {
        let subject = Self::subject(s)?.clone();
        self.charge(subject.as_str().len() as u64 / 32 + 1)?;
        match pat.exec(mode, subject.as_str())? {
            Some(spans) => Ok(Val::Match(Rc::new(MatchObj {
                pat,
                subject,
                spans,
            }))),
            None => Ok(Val::None),
        }
    }

    fn all_matches(
        &mut self,
        pat: &PatternObj,
        text: &str,
        limit: usize,
    ) -> R<Vec<crate::pyre::Spans>> {
        self.charge(text.len() as u64 / 32 + 1)?;
        let all = pat.exec_all(text, limit)?;
        self.alloc_items(all.len(), "list of matches")?;
        Ok(all)
    }

    fn re_sub(
        &mut self,
        pat: PatRef<'a>,
        repl: &Val<'a>,
        s: &Val<'a>,
        count: i64,
        subn: bool,
    ) -> R<Val<'a>> {
        let subject = Self::subject(s)?.clone();
        let text = subject.as_str();
        let limit = if count <= 0 {
            usize::MAX
        } else {
            count as usize
        };
        let matches = self.all_matches(&pat, text, limit)?;
        let template = match repl {
            Val::Str(r) => Some(parse_template(r.as_str(), &pat)?),
            _ => None,
        };
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let n = matches.len();
        for spans in matches {
            let Some((ms, me)) = spans[0] else { continue };
            out.push_str(&text[last..ms]);
            match &template {
                Some(parts) => {
                    for p in parts {
                        match p {
                            TplPart::Lit(l) => out.push_str(l),
                            TplPart::Group(g) => {
                                if let Some(Some((a, b))) = spans.get(*g) {
                                    out.push_str(&text[*a..*b]);
                                }
                            }
                        }
                    }
                }
                None => {
                    let mo = Val::Match(Rc::new(MatchObj {
                        pat: pat.clone(),
                        subject: subject.clone(),
                        spans,
                    }));
                    let r = self.call_value(repl, std::slice::from_ref(&mo), &[])?;
                    match r {
                        Val::Str(x) => out.push_str(x.as_str()),
                        other => {
                            return Err(type_error(format!(
                                "expected str instance, {} found",
                                other.type_name()
                            )));
                        }
                    }
                }
            }
            last = me;
            self.alloc_str(out.len())?;
        }
        out.push_str(&text[last..]);
        let v = if n == 0 {
            Val::Str(subject.clone())
        } else {
            self.new_str(out)?
        };
        Ok(if subn {
            Val::tuple(vec![v, Val::Int(n as i64)])
        } else {
            v
        })
    }

    fn re_findall(&mut self, pat: PatRef<'a>, s: &Val<'a>, iter: bool) -> R<Val<'a>> {
        let subject = Self::subject(s)?.clone();
        let matches = self.all_matches(&pat, subject.as_str(), usize::MAX)?;
        let ngroups = pat.group_count();
        let piece = |sp: Option<(usize, usize)>| match sp {
            Some((a, b)) => Val::Str(subject.sub(a, b)),
            None => Val::Str(Str::B("")),
        };
        let out: Vec<Val<'a>> = matches
            .into_iter()
            .map(|spans| {
                if iter {
                    Val::Match(Rc::new(MatchObj {
                        pat: pat.clone(),
                        subject: subject.clone(),
                        spans,
                    }))
                } else if ngroups == 0 {
                    piece(spans[0])
                } else if ngroups == 1 {
                    piece(spans[1])
                } else {
                    Val::tuple(spans[1..].iter().map(|x| piece(*x)).collect())
                }
            })
            .collect();
        Ok(Val::list(out))
    }

    fn re_split(&mut self, pat: PatRef<'a>, s: &Val<'a>, maxsplit: i64) -> R<Val<'a>> {
        let subject = Self::subject(s)?.clone();
        let text = subject.as_str();
        let limit = if maxsplit <= 0 {
            usize::MAX
        } else {
            maxsplit as usize
        };
        let matches = self.all_matches(&pat, text, limit)?;
        let mut out = Vec::new();
        let mut last = 0;
        for spans in matches {
            let Some((ms, me)) = spans[0] else { continue };
            out.push(Val::Str(subject.sub(last, ms)));
            for g in &spans[1..] {
                out.push(match g {
                    Some((a, b)) => Val::Str(subject.sub(*a, *b)),
                    None => Val::None,
                });
            }
            last = me;
        }
        out.push(Val::Str(subject.sub(last, text.len())));
        self.alloc_items(out.len(), "list")?;
        Ok(Val::list(out))
    }

    fn match_method(
        &mut self,
        mo: &Rc<MatchObj<'a>>,
        m: Method,
        args: &[Val<'a>],
        kw: &Kw<'a>,
    ) -> R<Option<Val<'a>>> {
        let fname = m.name();
        let group_or = |g: usize, default: &Val<'a>| match mo.spans.get(g).copied().flatten() {
            Some(_) => mo.group_val(g),
            None => default.clone(),
        };
        Ok(Some(match m {
            M::Group => {
                no_kw(fname, kw)?;
                match args {
                    [] => mo.group_val(0),
                    [g] => mo.group_val(mo.pat.group_index(g)?),
                    many => Val::tuple(
                        many.iter()
                            .map(|g| Ok(mo.group_val(mo.pat.group_index(g)?)))
                            .collect::<R<Vec<_>>>()?,
                    ),
                }
            }
            M::Groups => {
                let [default] = bind(fname, args, kw, ["default"], 0)?;
                let d = default.cloned().unwrap_or(Val::None);
                Val::tuple((1..mo.spans.len()).map(|g| group_or(g, &d)).collect())
            }
            M::Groupdict => {
                let [default] = bind(fname, args, kw, ["default"], 0)?;
                let d = default.cloned().unwrap_or(Val::None);
                let mut out = IndexMap::new();
                for (g, name) in mo.pat.names.iter().enumerate() {
                    if let Some(n) = name {
                        out.insert(Key::Str(Str::owned(n.clone())), group_or(g, &d));
                    }
                }
                Val::dict(out)
            }
            M::Start | M::End | M::Span => {
                no_kw(fname, kw)?;
                n_args(fname, args, 0, 1)?;
                let g = match args.first() {
                    Some(g) => mo.pat.group_index(g)?,
                    None => 0,
                };
                let (a, b) = match mo.span_chars(g) {
                    Some((a, b)) => (a as i64, b as i64),
                    None => (-1, -1),
                };
                match m {
                    M::Start => Val::Int(a),
                    M::End => Val::Int(b),
                    _ => Val::tuple(vec![Val::Int(a), Val::Int(b)]),
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// `str.isalpha()` of one character: Unicode's letters (general category
/// L), as in CPython; `char::is_alphabetic` also takes `Ⅻ` and marks.
pub(crate) fn py_alpha(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    c.general_category_group() == GeneralCategoryGroup::Letter
}

/// `str.isdecimal()` of one character: decimal digits (category Nd).
fn py_decimal(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.is_ascii_digit() || (!c.is_ascii() && c.general_category() == GeneralCategory::DecimalNumber)
}

/// `str.isdigit()` of one character: decimal digits and the digits of
/// Unicode's numeric type "Digit" (superscripts, subscripts, circled and
/// parenthesised digits), not fractions or Roman numerals.
fn py_digit(c: char) -> bool {
    py_decimal(c)
        || matches!(c as u32,
            0xB2 | 0xB3 | 0xB9 | 0x1369..=0x1371 | 0x19DA | 0x2070 | 0x2074..=0x2079
            | 0x2080..=0x2089 | 0x2460..=0x2468 | 0x2474..=0x247C | 0x2488..=0x2490
            | 0x24EA | 0x24F5..=0x24FD | 0x24FF | 0x2776..=0x277E | 0x2780..=0x2788
            | 0x278A..=0x2792 | 0x10A40..=0x10A43 | 0x10E60..=0x10E68 | 0x11052..=0x1105A
            | 0x1F100..=0x1F10A)
}

/// `math.fsum`: the correctly rounded sum (Shewchuk's partials, as CPython
/// computes it), with CPython's answers for infinities and NaN.
fn fsum(xs: &[f64]) -> R<f64> {
    let mut partials: Vec<f64> = Vec::new();
    let (mut special, mut inf_sum) = (0.0f64, 0.0f64);
    for &x0 in xs {
        let mut x = x0;
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        if x != 0.0 {
            if !x.is_finite() {
                if x0.is_finite() {
                    return Err(err("OverflowError", "intermediate overflow in fsum"));
                }
                if x0.is_infinite() {
                    inf_sum += x0;
                }
                special += x0;
                partials.clear();
            } else {
                partials.push(x);
            }
        }
    }
    if special != 0.0 {
        if inf_sum.is_nan() {
            return Err(err("ValueError", "-inf + inf in fsum"));
        }
        return Ok(special);
    }
    let mut hi = 0.0f64;
    let mut n = partials.len();
    if n > 0 {
        n -= 1;
        hi = partials[n];
        let mut lo = 0.0f64;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = partials[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
    }
    Ok(hi)
}

/// `math.hypot(*coords)` as CPython computes it (`vector_norm`: scaled,
/// with exact squares and a differential correction), so that the last
/// digit agrees; `f64::hypot` differs in it now and then.
fn vector_norm(xs: &[f64]) -> f64 {
    let mut max = 0.0f64;
    let mut nan = false;
    for &x in xs {
        let a = x.abs();
        nan |= a.is_nan();
        if a > max {
            max = a;
        }
    }
    if max.is_infinite() {
        return max;
    }
    if nan {
        return f64::NAN;
    }
    if max == 0.0 || xs.len() <= 1 {
        return max;
    }
    let max_e = frexp_exp(max);
    if max_e < -1023 {
        let scaled: Vec<f64> = xs.iter().map(|x| x / f64::MIN_POSITIVE).collect();
        return f64::MIN_POSITIVE * vector_norm(&scaled);
    }
    let scale = pow2(-max_e);
    let (mut csum, mut frac1, mut frac2) = (1.0f64, 0.0f64, 0.0f64);
    for &x in xs {
        let x = x * scale;
        let (hi, lo) = (x * x, x.mul_add(x, -(x * x)));
        let s = csum + hi;
        frac2 += (csum - s) + hi;
        csum = s;
        frac1 += lo;
    }
    let mut h = (csum - 1.0 + (frac1 + frac2)).sqrt();
    let (hi, lo) = (-h * h, (-h).mul_add(h, h * h));
    let s = csum + hi;
    frac2 += (csum - s) + hi;
    csum = s;
    frac1 += lo;
    let x = csum - 1.0 + (frac1 + frac2);
    h += x / (2.0 * h);
    h / scale
}

/// `2**e` exactly, also where it is subnormal (`powi` would go through
/// `1 / 2**1024`, which is 0).
fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (52 + e + 1022))
    }
}

/// The exponent `frexp` gives: `x = m * 2**e` with `0.5 <= m < 1`.
fn frexp_exp(x: f64) -> i32 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i32;
    if e == 0 {
        // subnormal: normalise first
        return frexp_exp(x * 2f64.powi(64)) - 64;
    }
    e - 1022
}

/// A value of the type `b` names, to ask which methods the type has
/// (`str.lower` is a method of `str` because `''.lower` is).
pub(crate) fn type_sample<'a>(b: Builtin) -> Option<Val<'a>> {
    Some(match b {
        Builtin::Str => Val::Str(Str::B("")),
        Builtin::Bytes => Val::Bytes(Bin::B(b"")),
        Builtin::List => Val::list(Vec::new()),
        Builtin::Dict => Val::dict(IndexMap::new()),
        Builtin::Float => Val::Float(0.0),
        _ => return None,
    })
}
