//! Python `re` on top of the `regex` crate.
//!
//! Python pattern syntax is translated to the `regex` crate's: `(?P<name>)`,
//! classes, `\d \w \s \b` (Unicode-aware in both) carry over; `\Z` becomes
//! `\z`; a `{` that is not a quantifier is a literal, as in Python. What the
//! `regex` crate cannot do (backreferences, lookaround, atomic groups) is an
//! error naming the construct. `re.match` and `re.fullmatch` use anchored
//! variants of the pattern, compiled on first use.

use std::fmt;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

use crate::val::{Str, Val};
use crate::{R, err};

pub(crate) const FLAG_I: i64 = 2;
pub(crate) const FLAG_L: i64 = 4;
pub(crate) const FLAG_M: i64 = 8;
pub(crate) const FLAG_S: i64 = 16;
pub(crate) const FLAG_U: i64 = 32;
pub(crate) const FLAG_X: i64 = 64;
pub(crate) const FLAG_A: i64 = 256;

/// The `re` module's flag constants.
pub(crate) fn flag_named(name: &str) -> Option<i64> {
    Some(match name {
        "I" | "IGNORECASE" => FLAG_I,
        "L" | "LOCALE" => FLAG_L,
        "M" | "MULTILINE" => FLAG_M,
        "S" | "DOTALL" => FLAG_S,
        "U" | "UNICODE" => FLAG_U,
        "X" | "VERBOSE" => FLAG_X,
        "A" | "ASCII" => FLAG_A,
        "NOFLAG" => 0,
        _ => return None,
    })
}

/// Byte spans of the groups of one match (`None`: the group did not take part).
pub(crate) type Spans = Vec<Option<(usize, usize)>>;

/// How a pattern is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Anywhere (`re.search`).
    Search,
    /// At the start (`re.match`).
    Match,
    /// The whole string (`re.fullmatch`).
    Full,
}

/// A compiled pattern (`re.compile`).
pub(crate) struct PatternObj {
    pub src: String,
    pub flags: i64,
    translated: String,
    verbose: bool,
    re: Regex,
    anchored: OnceLock<Result<Regex, String>>,
    full: OnceLock<Result<Regex, String>>,
    /// Group names by group index (index 0 is the whole match).
    pub names: Vec<Option<String>>,
}

impl fmt::Debug for PatternObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "re.compile({:?}, {})", self.src, self.flags)
    }
}

fn build(pat: &str, flags: i64) -> Result<Regex, String> {
    RegexBuilder::new(pat)
        .case_insensitive(flags & FLAG_I != 0)
        .multi_line(flags & FLAG_M != 0)
        .dot_matches_new_line(flags & FLAG_S != 0)
        .ignore_whitespace(flags & FLAG_X != 0)
        .size_limit(8 << 20)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let last = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(text.as_str());
            last.to_string()
        })
}

impl PatternObj {
    /// Compiles a Python pattern; the error is a message without a kind.
    pub(crate) fn new(src: &str, flags: i64) -> Result<PatternObj, String> {
        if flags & FLAG_L != 0 {
            return Err("re.LOCALE is not supported".into());
        }
        let verbose = flags & FLAG_X != 0 || has_inline_flag(src, 'x');
        let translated = translate(src, flags & FLAG_A != 0)?;
        let re = build(&translated, flags)?;
        let names = re.capture_names().map(|n| n.map(str::to_owned)).collect();
        Ok(PatternObj {
            src: src.to_owned(),
            flags,
            translated,
            verbose,
            re,
            anchored: OnceLock::new(),
            full: OnceLock::new(),
            names,
        })
    }

    pub(crate) fn group_count(&self) -> usize {
        self.names.len().saturating_sub(1)
    }

    fn regex(&self, mode: Mode) -> R<&Regex> {
        let nl = if self.verbose { "\n" } else { "" };
        let r = match mode {
            Mode::Search => return Ok(&self.re),
            Mode::Match => self
                .anchored
                .get_or_init(|| build(&format!("\\A(?:{}{nl})", self.translated), self.flags)),
            Mode::Full => self
                .full
                .get_or_init(|| build(&format!("\\A(?:{}{nl})\\z", self.translated), self.flags)),
        };
        r.as_ref().map_err(|e| err("re.error", e))
    }

    /// Group spans (byte offsets) of the first match, if any.
    pub(crate) fn exec(&self, mode: Mode, s: &str) -> R<Option<Spans>> {
        let re = self.regex(mode)?;
        Ok(re.captures(s).map(|c| spans(&c)))
    }

    /// Spans of all non-overlapping matches.
    /// An empty match right after a match counts (as in Python 3.7+); an
    /// empty match is not taken twice at one place.
    pub(crate) fn exec_all(&self, s: &str, limit: usize) -> R<Vec<Spans>> {
        let mut out = Vec::new();
        let (mut pos, mut after_empty) = (0usize, false);
        while pos <= s.len() && out.len() < limit {
            let Some(c) = self.re.captures_at(s, pos) else {
                break;
            };
            let (ms, me) = c.get(0).map_or((pos, pos), |m| (m.start(), m.end()));
            if after_empty && me == pos {
                match s[pos..].chars().next() {
                    Some(ch) => pos += ch.len_utf8(),
                    None => break,
                }
                after_empty = false;
                continue;
            }
            out.push(spans(&c));
            after_empty = ms == me;
            pos = me;
        }
        Ok(out)
    }

    /// The index of a group given by number or name.
    pub(crate) fn group_index(&self, g: &Val<'_>) -> R<usize> {
        let idx = match g {
            Val::Int(i) => usize::try_from(*i).ok().filter(|i| *i < self.names.len()),
            Val::Bool(b) => Some(*b as usize).filter(|i| *i < self.names.len()),
            Val::Str(s) => self
                .names
                .iter()
                .position(|n| n.as_deref() == Some(s.as_str())),
            _ => None,
        };
        idx.ok_or_else(|| err("IndexError", "no such group"))
    }
}

fn spans(c: &regex::Captures<'_>) -> Spans {
    (0..c.len())
        .map(|i| c.get(i).map(|m| (m.start(), m.end())))
        .collect()
}

/// A pattern borrowed from the program (constant patterns) or built at run time.
#[derive(Clone)]
pub(crate) enum PatRef<'a> {
    B(&'a PatternObj),
    O(Rc<PatternObj>),
}

impl Deref for PatRef<'_> {
    type Target = PatternObj;
    fn deref(&self) -> &PatternObj {
        match self {
            PatRef::B(p) => p,
            PatRef::O(p) => p,
        }
    }
}

/// A match object.
pub(crate) struct MatchObj<'a> {
    pub pat: PatRef<'a>,
    pub subject: Str<'a>,
    pub spans: Spans,
}

impl<'a> MatchObj<'a> {
    pub(crate) fn group_str(&self, i: usize) -> Option<&str> {
        let (s, e) = (*self.spans.get(i)?)?;
        Some(&self.subject.as_str()[s..e])
    }

    pub(crate) fn group_val(&self, i: usize) -> Val<'a> {
        match self.spans.get(i).copied().flatten() {
            Some((s, e)) => Val::Str(self.subject.sub(s, e)),
            None => Val::None,
        }
    }

    /// The span of group `i` in characters (as Python reports it).
    pub(crate) fn span_chars(&self, i: usize) -> Option<(usize, usize)> {
        let (s, e) = (*self.spans.get(i)?)?;
        let text = self.subject.as_str();
        let cs = text[..s].chars().count();
        Some((cs, cs + text[s..e].chars().count()))
    }
}

fn has_inline_flag(p: &str, flag: char) -> bool {
    let mut rest = p;
    while let Some(i) = rest.find("(?") {
        let after = &rest[i + 2..];
        let letters: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        if letters.contains(flag) {
            return true;
        }
        rest = after;
    }
    false
}

const ASCII_W: &str = "0-9A-Za-z_";
const ASCII_S: &str = "\\t\\n\\x0B\\x0C\\r\\x20";

fn push_hex(out: &mut String, c: char) {
    out.push_str(&format!("\\x{{{:x}}}", c as u32));
}

/// Translates one escape at `cs[i] == '\\'`; returns the next index.
fn escape(
    cs: &[char],
    i: usize,
    out: &mut String,
    in_class: bool,
    ascii: bool,
) -> Result<usize, String> {
    let Some(&c) = cs.get(i + 1) else {
        return Err("bad escape (end of pattern)".into());
    };
    let mut next = i + 2;
    match c {
        '0'..='7' if in_class || c == '0' => {
            let mut n = 0u32;
            let mut j = i + 1;
            while j < cs.len() && j < i + 4 && cs[j].is_digit(8) {
                n = n * 8 + cs[j].to_digit(8).unwrap_or(0);
                j += 1;
            }
            next = j;
            out.push_str(&format!("\\x{{{n:x}}}"));
        }
        '1'..='9' => {
            return Err(format!(
                "backreferences like \\{c} are not supported by rill's regex engine"
            ));
        }
        'Z' => out.push_str("\\z"),
        'b' if in_class => out.push_str("\\x08"),
        'd' | 'D' | 'w' | 'W' | 's' | 'S' if ascii => {
            let set = match c {
                'd' | 'D' => "0-9",
                'w' | 'W' => ASCII_W,
                _ => ASCII_S,
            };
            let neg = c.is_ascii_uppercase();
            if in_class && !neg {
                out.push_str(set);
            } else {
                out.push_str(if neg { "[^" } else { "[" });
                out.push_str(set);
                out.push(']');
            }
        }
        'b' | 'B' if ascii => {
            out.push_str(if c == 'b' { "(?-u:\\b)" } else { "(?-u:\\B)" });
        }
        // Python's classes, not the regex crate's: `\w` is what
        // `str.isalnum()` accepts and `_` (letters and numbers, `²` and `½`
        // included, combining marks not), `\s` is `str.isspace()`
        // (`\x1c`-`\x1f` included). A class nests inside a set.
        'w' | 'W' | 's' | 'S' => {
            let set = if matches!(c, 'w' | 'W') {
                "\\p{L}\\p{N}_"
            } else {
                "\\s\\x1C-\\x1F"
            };
            out.push_str(if c.is_ascii_uppercase() { "[^" } else { "[" });
            out.push_str(set);
            out.push(']');
        }
        'N' => return Err("\\N{...} escapes are not supported".into()),
        'A' | 'b' | 'B' | 'd' | 'D' | 'n' | 't' | 'r' | 'f' | 'v' | 'a' | 'x' | 'u' | 'U' => {
            out.push('\\');
            out.push(c);
        }
        c if c.is_ascii_alphanumeric() => return Err(format!("bad escape \\{c}")),
        c if c.is_whitespace() => push_hex(out, c),
        c => out.push_str(&regex::escape(c.encode_utf8(&mut [0u8; 4]))),
    }
    Ok(next)
}

/// Translates a character set at `cs[i] == '['`; returns the next index.
fn class(cs: &[char], i: usize, out: &mut String, ascii: bool) -> Result<usize, String> {
    out.push('[');
    let mut j = i + 1;
    if cs.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    if cs.get(j) == Some(&']') {
        out.push_str("\\]");
        j += 1;
    }
    loop {
        let Some(&c) = cs.get(j) else {
            return Err(format!("unterminated character set at position {i}"));
        };
        match c {
            ']' => {
                out.push(']');
                return Ok(j + 1);
            }
            '\\' => j = escape(cs, j, out, true, ascii)?,
            '[' | '&' | '~' | '#' => {
                out.push('\\');
                out.push(c);
                j += 1;
            }
            c if c.is_whitespace() => {
                push_hex(out, c);
                j += 1;
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
}

/// A `{m,n}` quantifier at `cs[i] == '{'`: its Rust form and the next index.
fn quantifier(cs: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i + 1;
    let digits = |j: &mut usize| {
        let s = *j;
        while *j < cs.len() && cs[*j].is_ascii_digit() {
            *j += 1;
        }
        cs[s..*j].iter().collect::<String>()
    };
    let lo = digits(&mut j);
    if cs.get(j) == Some(&'}') {
        return (!lo.is_empty()).then(|| (format!("{{{lo}}}"), j + 1));
    }
    if cs.get(j) != Some(&',') {
        return None;
    }
    j += 1;
    let hi = digits(&mut j);
    if cs.get(j) != Some(&'}') || (lo.is_empty() && hi.is_empty()) {
        return None;
    }
    let lo = if lo.is_empty() { "0".to_string() } else { lo };
    Some((format!("{{{lo},{hi}}}"), j + 1))
}

/// Python pattern syntax to `regex` crate syntax.
fn translate(p: &str, ascii: bool) -> Result<String, String> {
    let cs: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '\\' => i = escape(&cs, i, &mut out, false, ascii)?,
            '[' => i = class(&cs, i, &mut out, ascii)?,
            '(' if cs.get(i + 1) == Some(&'?') => {
                let unsupported =
                    |what: &str| Err(format!("{what} are not supported by rill's regex engine"));
                match cs.get(i + 2) {
                    Some('P') => match cs.get(i + 3) {
                        Some('<') => {
                            out.push_str("(?P<");
                            i += 4;
                        }
                        Some('=') => return unsupported("named backreferences (?P=name)"),
                        _ => return Err("unknown extension ?P".into()),
                    },
                    Some('=') | Some('!') => {
                        return unsupported("lookahead assertions (?=...) and (?!...)");
                    }
                    Some('<') => match cs.get(i + 3) {
                        Some('=') | Some('!') => {
                            return unsupported("lookbehind assertions (?<=...) and (?<!...)");
                        }
                        _ => {
                            out.push_str("(?<");
                            i += 3;
                        }
                    },
                    Some('#') => {
                        let end = cs[i..]
                            .iter()
                            .position(|c| *c == ')')
                            .ok_or("missing ), unterminated comment")?;
                        i += end + 1;
                    }
                    Some('>') => return unsupported("atomic groups (?>...)"),
                    Some('(') => return unsupported("conditional patterns (?(...)...)"),
                    Some(':') => {
                        out.push_str("(?:");
                        i += 3;
                    }
                    _ => {
                        let mut j = i + 2;
                        let mut kept = String::new();
                        while j < cs.len() && (cs[j].is_ascii_alphabetic() || cs[j] == '-') {
                            match cs[j] {
                                'a' => return Err(
                                    "the inline ASCII flag (?a) is not supported; pass re.ASCII"
                                        .into(),
                                ),
                                'L' => {
                                    return Err(
                                        "the inline LOCALE flag (?L) is not supported".into()
                                    );
                                }
                                'u' => {}
                                c => kept.push(c),
                            }
                            j += 1;
                        }
                        if kept.is_empty() && cs.get(j) == Some(&')') {
                            i = j + 1;
                        } else {
                            out.push_str("(?");
                            out.push_str(&kept);
                            i = j;
                        }
                    }
                }
            }
            '{' => match quantifier(&cs, i) {
                Some((q, next)) => {
                    out.push_str(&q);
                    i = next;
                }
                None => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str("\\}");
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One piece of a `re.sub` replacement template.
#[derive(Debug)]
pub(crate) enum TplPart {
    Lit(String),
    Group(usize),
}

/// Parses a Python replacement template (`\1`, `\g<name>`, `\n`, ...).
pub(crate) fn parse_template(repl: &str, pat: &PatternObj) -> R<Vec<TplPart>> {
    let bad = |m: String| err("re.error", m);
    let cs: Vec<char> = repl.chars().collect();
    let mut parts = Vec::new();
    let mut lit = String::new();
    let ngroups = pat.group_count();
    let push_group = |parts: &mut Vec<TplPart>, lit: &mut String, g: usize| -> R<()> {
        if g > ngroups {
            return Err(bad(format!("invalid group reference {g}")));
        }
        if !lit.is_empty() {
            parts.push(TplPart::Lit(std::mem::take(lit)));
        }
        parts.push(TplPart::Group(g));
        Ok(())
    };
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        i += 1;
        if c != '\\' {
            lit.push(c);
            continue;
        }
        let Some(&e) = cs.get(i) else {
            return Err(bad("bad escape (end of pattern)".into()));
        };
        i += 1;
        match e {
            'n' => lit.push('\n'),
            't' => lit.push('\t'),
            'r' => lit.push('\r'),
            'f' => lit.push('\x0c'),
            'v' => lit.push('\x0b'),
            'a' => lit.push('\x07'),
            'b' => lit.push('\x08'),
            '\\' => lit.push('\\'),
            'g' => {
                if cs.get(i) != Some(&'<') {
                    return Err(bad("missing <".into()));
                }
                let end = cs[i..]
                    .iter()
                    .position(|c| *c == '>')
                    .ok_or_else(|| bad("missing >".into()))?;
                let name: String = cs[i + 1..i + end].iter().collect();
                i += end + 1;
                let g = match name.parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => pat
                        .names
                        .iter()
                        .position(|n| n.as_deref() == Some(name.as_str()))
                        .ok_or_else(|| err("IndexError", format!("unknown group name '{name}'")))?,
                };
                push_group(&mut parts, &mut lit, g)?;
            }
            '0' => {
                let mut n = 0u32;
                let mut j = i;
                while j < cs.len() && j < i + 2 && cs[j].is_digit(8) {
                    n = n * 8 + cs[j].to_digit(8).unwrap_or(0);
                    j += 1;
                }
                i = j;
                lit.push(char::from_u32(n).unwrap_or('\0'));
            }
            '1'..='9' => {
                let mut g = e.to_digit(10).unwrap_or(0) as usize;
                if let Some(d) = cs.get(i).and_then(|c| c.to_digit(10)) {
                    g = g * 10 + d as usize;
                    i += 1;
                }
                push_group(&mut parts, &mut lit, g)?;
            }
            e if e.is_ascii_alphabetic() => return Err(bad(format!("bad escape \\{e}"))),
            e => {
                lit.push('\\');
                lit.push(e);
            }
        }
    }
    if !lit.is_empty() {
        parts.push(TplPart::Lit(lit));
    }
    Ok(parts)
}

/// `re.escape(s)`.
pub(crate) fn py_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // Python 3.7+: only the characters special in a pattern
    for c in s.chars() {
        if "()[]{}?*+-|^$\\.&~# \t\n\r\x0b\x0c".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_python_syntax() {
        assert_eq!(
            translate(r"a{,3}b{2}c{x}", false).unwrap(),
            r"a{0,3}b{2}c\{x\}"
        );
        assert_eq!(
            translate(r"(?P<n>\w+)\Z", false).unwrap(),
            r"(?P<n>[\p{L}\p{N}_]+)\z"
        );
        assert_eq!(translate(r"[\s,]", false).unwrap(), r"[[\s\x1C-\x1F],]");
        assert_eq!(translate(r"[[a]", false).unwrap(), r"[\[a]");
        assert!(
            translate(r"(\w)\1", false)
                .unwrap_err()
                .contains("backreferences")
        );
        assert!(
            translate(r"a(?=b)", false)
                .unwrap_err()
                .contains("lookahead")
        );
        assert_eq!(translate(r"(?#c)x", false).unwrap(), "x");
    }

    #[test]
    fn anchoring() {
        let p = PatternObj::new("a|ab", 0).unwrap();
        assert_eq!(p.exec(Mode::Full, "ab").unwrap().unwrap()[0], Some((0, 2)));
        assert!(p.exec(Mode::Match, "xab").unwrap().is_none());
        assert!(p.exec(Mode::Search, "xab").unwrap().is_some());
    }
}
