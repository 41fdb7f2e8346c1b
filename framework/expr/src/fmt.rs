//! Python number formatting: `repr(float)`, the format-spec mini-language
//! (`format()`, f-strings, `str.format`) and `%`-formatting.

use crate::val::{Str, Val, as_num, repr_into, str_of};
use crate::{R, err};

/// `repr(v)` as a `String`.
pub(crate) fn repr(v: &Val<'_>, limit: usize) -> R<String> {
    let mut s = String::new();
    repr_into(v, &mut s, 0, limit)?;
    Ok(s)
}

/// Splits Rust's `{:e}` output (`"1.5e-7"`) into digits-with-point and exponent.
fn split_exp(s: &str) -> (&str, i32) {
    match s.split_once('e') {
        Some((m, e)) => (m, e.parse().unwrap_or(0)),
        None => (s, 0),
    }
}

fn exp_suffix(e: i32, upper: bool) -> String {
    let sign = if e < 0 { '-' } else { '+' };
    format!(
        "{}{}{:02}",
        if upper { 'E' } else { 'e' },
        sign,
        e.unsigned_abs()
    )
}

/// Python's `repr(float)` / `str(float)`: the shortest string that round
/// trips, in fixed notation for exponents -4..16, else scientific.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let mut s = format!("{f:e}");
    // the shortest digits that read back as `f`; where two such strings
    // are equally near (`...586.25` between `.2` and `.3`), CPython takes
    // the correctly rounded one (ties to even), which Rust's shortest form
    // need not be
    let n = split_exp(&s).0.chars().filter(char::is_ascii_digit).count();
    let exact = format!("{:.*e}", n.saturating_sub(1), f);
    if exact != s && exact.parse::<f64>() == Ok(f) {
        s = exact;
    }
    let (mant, exp) = split_exp(&s);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&exp_suffix(exp, false));
    }
    out
}

/// A parsed format spec: `[[fill]align][sign][z][#][0][width][,|_][.precision][type]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    fill: Option<char>,
    align: Option<char>,
    sign: Option<char>,
    alt: bool,
    zero: bool,
    width: usize,
    grouping: Option<char>,
    precision: Option<usize>,
    ty: Option<char>,
}

/// Widths and precisions beyond this are refused (a guard against
/// `f"{x:1000000000}"`).
const MAX_WIDTH: usize = 100_000;

impl Spec {
    pub(crate) fn parse(s: &str) -> R<Spec> {
        let bad = || err("ValueError", format!("invalid format specifier '{s}'"));
        let cs: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut spec = Spec::default();
        let is_align = |c: char| matches!(c, '<' | '>' | '^' | '=');
        if cs.len() >= 2 && is_align(cs[1]) {
            spec.fill = Some(cs[0]);
            spec.align = Some(cs[1]);
            i = 2;
        } else if !cs.is_empty() && is_align(cs[0]) {
            spec.align = Some(cs[0]);
            i = 1;
        }
        if i < cs.len() && matches!(cs[i], '+' | '-' | ' ') {
            spec.sign = Some(cs[i]);
            i += 1;
        }
        if i < cs.len() && cs[i] == 'z' {
            i += 1;
        }
        if i < cs.len() && cs[i] == '#' {
            spec.alt = true;
            i += 1;
        }
        if i < cs.len() && cs[i] == '0' {
            spec.zero = true;
            i += 1;
        }
        let num = |i: &mut usize| -> R<Option<usize>> {
            let start = *i;
            while *i < cs.len() && cs[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i == start {
                return Ok(None);
            }
            let n: String = cs[start..*i].iter().collect();
            match n.parse::<usize>() {
                Ok(n) if n <= MAX_WIDTH => Ok(Some(n)),
                _ => Err(err(
                    "MemoryError",
                    format!("format width or precision {n} exceeds the limit of {MAX_WIDTH}"),
                )),
            }
        };
        spec.width = num(&mut i)?.unwrap_or(0);
        if i < cs.len() && matches!(cs[i], ',' | '_') {
            spec.grouping = Some(cs[i]);
            i += 1;
        }
        if i < cs.len() && cs[i] == '.' {
            i += 1;
            spec.precision = Some(num(&mut i)?.ok_or_else(bad)?);
        }
        if i < cs.len() {
            spec.ty = Some(cs[i]);
            i += 1;
        }
        if i != cs.len() {
            return Err(bad());
        }
        Ok(spec)
    }

    /// Pads `body` (whose sign, if any, is `sign`) to the width.
    fn pad(&self, sign: &str, body: &str, numeric: bool) -> String {
        let len = sign.chars().count() + body.chars().count();
        let (fill, align) = if self.zero && self.fill.is_none() && self.align.is_none() {
            ('0', if numeric { '=' } else { '<' })
        } else {
            (
                self.fill.unwrap_or(' '),
                self.align.unwrap_or(if numeric { '>' } else { '<' }),
            )
        };
        if len >= self.width {
            return format!("{sign}{body}");
        }
        let n = self.width - len;
        let fills = |k: usize| std::iter::repeat_n(fill, k).collect::<String>();
        match align {
            '<' => format!("{sign}{body}{}", fills(n)),
            '^' => format!("{}{sign}{body}{}", fills(n / 2), fills(n - n / 2)),
            '=' => format!("{sign}{}{body}", fills(n)),
            _ => format!("{}{sign}{body}", fills(n)),
        }
    }

    fn sign_of(&self, neg: bool) -> &'static str {
        if neg {
            "-"
        } else {
            match self.sign {
                Some('+') => "+",
                Some(' ') => " ",
                _ => "",
            }
        }
    }
}

/// Inserts a thousands separator into a run of digits.
fn group(digits: &str, sep: char, every: usize) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n + n / every);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(every) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// Groups the integer part of a formatted number (`1234.5` -> `1,234.5`).
fn group_number(body: &str, sep: char) -> String {
    let end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    format!("{}{}", group(&body[..end], sep, 3), &body[end..])
}

fn format_int(i: i64, spec: &Spec) -> R<String> {
    let neg = i < 0;
    let mag = i.unsigned_abs();
    let (body, prefix) = match spec.ty {
        None | Some('d') | Some('n') => (mag.to_string(), ""),
        Some('x') => (format!("{mag:x}"), "0x"),
        Some('X') => (format!("{mag:X}"), "0X"),
        Some('o') => (format!("{mag:o}"), "0o"),
        Some('b') => (format!("{mag:b}"), "0b"),
        Some('c') => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| err("OverflowError", "%c arg not in range(0x110000)"))?;
            return Ok(spec.pad("", &c.to_string(), false));
        }
        Some('e' | 'E' | 'f' | 'F' | 'g' | 'G' | '%') => return format_float(i as f64, spec),
        Some(t) => {
            return Err(err(
                "ValueError",
                format!("Unknown format code '{t}' for object of type 'int'"),
            ));
        }
    };
    if spec.precision.is_some() {
        return Err(err(
            "ValueError",
            "Precision not allowed in integer format specifier",
        ));
    }
    let body = match spec.grouping {
        Some(sep) => {
            let every = if matches!(spec.ty, Some('x' | 'X' | 'o' | 'b')) {
                4
            } else {
                3
            };
            group(&body, sep, every)
        }
        None => body,
    };
    let sign = format!(
        "{}{}",
        spec.sign_of(neg),
        if spec.alt { prefix } else { "" }
    );
    Ok(spec.pad(&sign, &body, true))
}

fn strip_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Python's `%e` body for a non-negative finite number.
fn fmt_exp(x: f64, prec: usize, upper: bool) -> String {
    let s = format!("{x:.prec$e}");
    let (m, e) = split_exp(&s);
    format!("{m}{}", exp_suffix(e, upper))
}

/// Python's `%g` body for a non-negative finite number.
fn fmt_general(x: f64, prec: usize, alt: bool, upper: bool, repr_like: bool) -> String {
    let p = prec.max(1);
    let exp = if x == 0.0 {
        0
    } else {
        split_exp(&format!("{:.*e}", p - 1, x)).1
    };
    // With the `.0` added (no type letter), one digit less fits before
    // switching to exponent notation, as in CPython.
    let limit = if repr_like { p as i64 - 1 } else { p as i64 };
    if exp >= -4 && (exp as i64) < limit {
        let decimals = (p as i64 - 1 - exp as i64).max(0) as usize;
        let s = format!("{x:.decimals$}");
        let mut s = if alt { s } else { strip_zeros(&s) };
        if repr_like && !s.contains('.') {
            s.push_str(".0");
        }
        s
    } else {
        let s = format!("{:.*e}", p - 1, x);
        let (m, e) = split_exp(&s);
        let m = if alt { m.to_string() } else { strip_zeros(m) };
        format!("{m}{}", exp_suffix(e, upper))
    }
}

fn format_float(f: f64, spec: &Spec) -> R<String> {
    if let Some(t) = spec.ty
        && !matches!(t, 'f' | 'F' | 'e' | 'E' | 'g' | 'G' | 'n' | '%')
    {
        // also for `inf` and `nan`
        return Err(err(
            "ValueError",
            format!("Unknown format code '{t}' for object of type 'float'"),
        ));
    }
    let neg = f.is_sign_negative() && !f.is_nan();
    let x = f.abs();
    let upper = matches!(spec.ty, Some('E' | 'F' | 'G'));
    let mut body = if !x.is_finite() {
        let s = if x.is_nan() { "nan" } else { "inf" };
        let s = if upper {
            s.to_uppercase()
        } else {
            s.to_string()
        };
        if spec.ty == Some('%') {
            format!("{s}%")
        } else {
            s
        }
    } else {
        match spec.ty {
            None => match spec.precision {
                None => float_repr(x),
                Some(p) => fmt_general(x, p, spec.alt, false, true),
            },
            Some('f' | 'F') => format!("{:.*}", spec.precision.unwrap_or(6), x),
            Some('e' | 'E') => fmt_exp(x, spec.precision.unwrap_or(6), upper),
            Some('g' | 'G' | 'n') => {
                fmt_general(x, spec.precision.unwrap_or(6), spec.alt, upper, false)
            }
            Some('%') => format!("{:.*}%", spec.precision.unwrap_or(6), x * 100.0),
            Some(t) => {
                return Err(err(
                    "ValueError",
                    format!("Unknown format code '{t}' for object of type 'float'"),
                ));
            }
        }
    };
    if let Some(sep) = spec.grouping
        && x.is_finite()
    {
        body = group_number(&body, sep);
    }
    Ok(spec.pad(spec.sign_of(neg), &body, true))
}

/// CPython's check of a grouping option (`,` or `_`) against the type it
/// formats with (`default_ty` when the spec names none).
fn check_grouping(sp: &Spec, default_ty: char) -> R<()> {
    let Some(sep) = sp.grouping else {
        return Ok(());
    };
    let ty = sp.ty.unwrap_or(default_ty);
    if matches!(ty, 'd' | 'e' | 'f' | 'g' | 'E' | 'G' | '%' | 'F' | '\0')
        || (sep == '_' && matches!(ty, 'b' | 'o' | 'x' | 'X'))
    {
        Ok(())
    } else {
        Err(err(
            "ValueError",
            format!("Cannot specify '{sep}' with '{ty}'."),
        ))
    }
}

/// `format(v, spec)`.
pub(crate) fn format_value(v: &Val<'_>, spec: &str, limit: usize) -> R<String> {
    if spec.is_empty() {
        return Ok(str_of(v, limit)?.as_str().to_string());
    }
    let sp = Spec::parse(spec)?;
    match v {
        Val::Bool(b) => {
            check_grouping(&sp, 'd')?;
            format_int(*b as i64, &sp)
        }
        Val::Int(i) => {
            check_grouping(&sp, 'd')?;
            format_int(*i, &sp)
        }
        Val::Float(f) => {
            check_grouping(&sp, '\0')?;
            format_float(*f, &sp)
        }
        Val::Str(s) => {
            check_grouping(&sp, 's')?;
            if sp.alt {
                return Err(err(
                    "ValueError",
                    "Alternate form (#) not allowed in string format specifier",
                ));
            }
            if sp.align == Some('=') {
                return Err(err(
                    "ValueError",
                    "'=' alignment not allowed in string format specifier",
                ));
            }
            if !matches!(sp.ty, None | Some('s')) {
                return Err(err(
                    "ValueError",
                    format!(
                        "Unknown format code '{}' for object of type 'str'",
                        sp.ty.unwrap_or('?')
                    ),
                ));
            }
            if sp.sign.is_some() {
                return Err(err(
                    "ValueError",
                    "Sign not allowed in string format specifier",
                ));
            }
            let s = s.as_str();
            let body: &str = match sp.precision {
                Some(p) => match s.char_indices().nth(p) {
                    Some((i, _)) => &s[..i],
                    None => s,
                },
                None => s,
            };
            Ok(sp.pad("", body, false))
        }
        Val::None => Err(err(
            "TypeError",
            "unsupported format string passed to NoneType.__format__",
        )),
        other => Err(err(
            "TypeError",
            format!(
                "unsupported format string passed to {}.__format__",
                other.type_name()
            ),
        )),
    }
}

/// `fmt % args` for strings.
pub(crate) fn percent_format(fmt: &str, args: &Val<'_>, limit: usize) -> R<String> {
    let positional: Vec<Val<'_>> = match args {
        Val::Tuple(t) => t.0.clone(),
        other => vec![other.clone()],
    };
    let mut next = 0usize;
    let mut out = String::new();
    let cs: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut used_mapping = false;
    while i < cs.len() {
        let c = cs[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        if i >= cs.len() {
            return Err(err("ValueError", "incomplete format"));
        }
        let mut key: Option<String> = None;
        if cs[i] == '(' {
            let start = i + 1;
            let end = cs[start..]
                .iter()
                .position(|c| *c == ')')
                .ok_or_else(|| err("ValueError", "incomplete format key"))?;
            key = Some(cs[start..start + end].iter().collect());
            i = start + end + 1;
        }
        let mut spec = Spec::default();
        while i < cs.len() && matches!(cs[i], '-' | '+' | ' ' | '0' | '#') {
            match cs[i] {
                '-' => spec.align = Some('<'),
                '+' => spec.sign = Some('+'),
                ' ' => {
                    if spec.sign.is_none() {
                        spec.sign = Some(' ')
                    }
                }
                '0' => spec.zero = true,
                _ => spec.alt = true,
            }
            i += 1;
        }
        if spec.align == Some('<') {
            spec.zero = false;
        }
        let take_num = |i: &mut usize| -> R<Option<usize>> {
            let start = *i;
            while *i < cs.len() && cs[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i == start {
                return Ok(None);
            }
            let n: String = cs[start..*i].iter().collect();
            match n.parse::<usize>() {
                Ok(n) if n <= MAX_WIDTH => Ok(Some(n)),
                _ => Err(err(
                    "MemoryError",
                    format!("format width {n} exceeds the limit of {MAX_WIDTH}"),
                )),
            }
        };
        spec.width = take_num(&mut i)?.unwrap_or(0);
        if i < cs.len() && cs[i] == '.' {
            i += 1;
            spec.precision = Some(take_num(&mut i)?.unwrap_or(0));
        }
        if i >= cs.len() {
            return Err(err("ValueError", "incomplete format"));
        }
        let ty = cs[i];
        i += 1;
        if ty == '%' {
            out.push('%');
            continue;
        }
        let arg: Val<'_> = match &key {
            Some(k) => {
                used_mapping = true;
                match args {
                    Val::Dict(d) => {
                        d.0.borrow()
                            .get(&crate::val::Key::Str(Str::B(k)))
                            .cloned()
                            .ok_or_else(|| err("KeyError", crate::val::repr_string(k)))?
                    }
                    Val::Rec(m) => crate::val::from_value(
                        m.get(k.as_str())
                            .ok_or_else(|| err("KeyError", crate::val::repr_string(k)))?,
                    )?,
                    _ => return Err(err("TypeError", "format requires a mapping")),
                }
            }
            None => {
                let a = positional
                    .get(next)
                    .cloned()
                    .ok_or_else(|| err("TypeError", "not enough arguments for format string"))?;
                next += 1;
                a
            }
        };
        let piece = match ty {
            's' | 'r' | 'a' => {
                let s = if ty == 's' {
                    str_of(&arg, limit)?.as_str().to_string()
                } else {
                    repr(&arg, limit)?
                };
                let s = match spec.precision {
                    Some(p) => s.chars().take(p).collect(),
                    None => s,
                };
                // right-aligned unless `-` says otherwise
                spec.zero = false;
                spec.align = Some(spec.align.unwrap_or('>'));
                spec.pad("", &s, false)
            }
            'd' | 'i' | 'u' | 'x' | 'X' | 'o' | 'c' => {
                let n = match (&arg, as_num(&arg)) {
                    (_, Some(crate::val::Num::I(i))) => i,
                    (_, Some(crate::val::Num::F(f))) if matches!(ty, 'd' | 'i' | 'u') => {
                        crate::val::float_as_int(f.trunc()).ok_or_else(|| {
                            if f.is_nan() {
                                err("ValueError", "cannot convert float NaN to integer")
                            } else if f.is_infinite() {
                                err("OverflowError", "cannot convert float infinity to integer")
                            } else {
                                err("OverflowError", "int too large (rill ints are 64-bit)")
                            }
                        })?
                    }
                    (Val::Str(s), _) if ty == 'c' && s.as_str().chars().count() == 1 => {
                        s.as_str().chars().next().map(|c| c as i64).unwrap_or(0)
                    }
                    _ => {
                        return Err(err(
                            "TypeError",
                            format!(
                                "%{ty} format: a real number is required, not {}",
                                arg.type_name()
                            ),
                        ));
                    }
                };
                let mag = n.unsigned_abs();
                let digits = match ty {
                    'x' => format!("{mag:x}"),
                    'X' => format!("{mag:X}"),
                    'o' => format!("{mag:o}"),
                    'c' => {
                        let c = u32::try_from(n)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| err("OverflowError", "%c arg not in range(0x110000)"))?;
                        spec.zero = false;
                        spec.align = Some(spec.align.unwrap_or('>'));
                        out.push_str(&spec.pad("", &c.to_string(), false));
                        continue;
                    }
                    _ => mag.to_string(),
                };
                let digits = match spec.precision {
                    Some(p) if digits.len() < p => {
                        format!("{}{digits}", "0".repeat(p - digits.len()))
                    }
                    _ => digits,
                };
                let prefix = match (spec.alt, ty) {
                    (true, 'x') => "0x",
                    (true, 'X') => "0X",
                    (true, 'o') => "0o",
                    _ => "",
                };
                let sign = format!("{}{prefix}", spec.sign_of(n < 0));
                spec.pad(&sign, &digits, true)
            }
            'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
                let f = as_num(&arg).map(|n| n.f()).ok_or_else(|| {
                    err(
                        "TypeError",
                        format!("must be real number, not {}", arg.type_name()),
                    )
                })?;
                let mut sp = spec.clone();
                sp.ty = Some(ty);
                if sp.precision.is_none() {
                    sp.precision = Some(6);
                }
                format_float(f, &sp)?
            }
            t => {
                return Err(err(
                    "ValueError",
                    format!("unsupported format character '{t}' (0x{:x})", t as u32),
                ));
            }
        };
        out.push_str(&piece);
        if out.len() > limit {
            return Err(err(
                "MemoryError",
                format!("string exceeds the limit of {limit} bytes"),
            ));
        }
    }
    if !used_mapping && next < positional.len() && matches!(args, Val::Tuple(_)) {
        return Err(err(
            "TypeError",
            "not all arguments converted during string formatting",
        ));
    }
    Ok(out)
}
