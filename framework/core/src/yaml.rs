//! YAML with positions.
//!
//! Pipeline files are parsed into a tree of [`YNode`]s that remember their
//! line and column, and node configs are deserialized from that tree with
//! serde, so every error (a bad value deep inside a node's `config`, an
//! unknown key, a missing field) can say exactly where it is.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};

/// A position in a source file (both 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum YValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<YNode>),
    Map(Vec<(YNode, YNode)>),
}

/// A YAML value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct YNode {
    pub value: YValue,
    pub mark: Mark,
    /// The scalar as written (for plain scalars resolved to numbers or
    /// booleans), so a string field accepts `version: 2`.
    pub text: Option<String>,
}

impl YNode {
    pub fn new(value: YValue, mark: Mark) -> YNode {
        YNode {
            value,
            mark,
            text: None,
        }
    }

    /// Looks up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&YNode> {
        match &self.value {
            YValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, YValue::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entry (key node and value node) for `key`.
    pub fn entry(&self, key: &str) -> Option<(&YNode, &YNode)> {
        match &self.value {
            YValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, YValue::Str(s) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            YValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, YValue::Null)
    }

    /// A short description of the node's type for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            YValue::Null => "null",
            YValue::Bool(_) => "a boolean",
            YValue::Int(_) => "an integer",
            YValue::Float(_) => "a number",
            YValue::Str(_) => "a string",
            YValue::Seq(_) => "a list",
            YValue::Map(_) => "a mapping",
        }
    }

    /// The node as JSON (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            YValue::Null => J::Null,
            YValue::Bool(b) => J::Bool(*b),
            YValue::Int(i) => J::Number((*i).into()),
            YValue::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            YValue::Str(s) => J::String(s.clone()),
            YValue::Seq(items) => J::Array(items.iter().map(YNode::to_json).collect()),
            YValue::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A mapping key as text.
    pub fn key_text(&self) -> String {
        match (&self.value, &self.text) {
            (YValue::Str(s), _) => s.clone(),
            (_, Some(t)) => t.clone(),
            (YValue::Null, None) => "null".into(),
            _ => self.to_json().to_string(),
        }
    }

    /// Deserializes the node into `T`; errors carry positions.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, YamlError> {
        T::deserialize(self)
    }
}

/// An error found while reading YAML, with its position when known.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub msg: String,
    pub mark: Option<Mark>,
}

impl YamlError {
    pub fn at(mark: Mark, msg: impl Into<String>) -> YamlError {
        YamlError {
            msg: msg.into(),
            mark: Some(mark),
        }
    }

    /// Sets the position if none is set yet (the innermost position wins).
    pub fn or_at(mut self, mark: Mark) -> YamlError {
        self.mark.get_or_insert(mark);
        self
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mark {
            Some(m) => write!(f, "{m}: {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for YamlError {}

impl de::Error for YamlError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        YamlError {
            msg: msg.to_string(),
            mark: None,
        }
    }
}

fn mark_of(span: &Span) -> Mark {
    Mark {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(s: &str) -> YValue {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return YValue::Null,
        "true" | "True" | "TRUE" => return YValue::Bool(true),
        "false" | "False" | "FALSE" => return YValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return YValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return YValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return YValue::Float(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return YValue::Int(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return YValue::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return YValue::Int(i);
    }
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = s.parse::<f64>() {
        return YValue::Float(f);
    }
    YValue::Str(s.to_owned())
}

enum Frame {
    Seq(Vec<YNode>, Mark, usize),
    Map(Vec<(YNode, YNode)>, Option<YNode>, Mark, usize),
}

/// How many nodes `node` holds (itself included), counting no further
/// than `cap`.
fn nodes_within(node: &YNode, cap: usize) -> usize {
    let mut n = 0;
    let mut todo = vec![node];
    while let Some(x) = todo.pop() {
        n += 1;
        if n >= cap {
            return n;
        }
        match &x.value {
            YValue::Seq(items) => todo.extend(items),
            YValue::Map(entries) => {
                for (k, v) in entries {
                    todo.push(k);
                    todo.push(v);
                }
            }
            _ => {}
        }
    }
    n
}

/// Parses the first document of `text`. An empty document is `null`.
/// Nesting deeper than [`crate::limits::Limits::max_depth`], and aliases
/// that expand to more than [`crate::limits::Limits::yaml_max_alias_nodes`]
/// nodes, are errors.
pub fn parse(text: &str) -> Result<YNode, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, YNode> = HashMap::new();
    let mut root: Option<YNode> = None;
    let limits = crate::limits::get();
    // nodes added by aliases so far
    let mut expanded = 0usize;

    // Adds a finished node to its parent (or makes it the root).
    fn push(
        stack: &mut [Frame],
        root: &mut Option<YNode>,
        anchors: &mut HashMap<usize, YNode>,
        node: YNode,
        anchor: usize,
    ) -> Result<(), YamlError> {
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => *root = Some(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _, _)) => match pending.take() {
                None => {
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.value == node.value) {
                        return Err(YamlError::at(
                            node.mark,
                            format!(
                                "duplicate key `{}` (first given at {})",
                                node.key_text(),
                                first.mark
                            ),
                        ));
                    }
                    *pending = Some(node)
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }

    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| {
            let m = e.marker();
            YamlError::at(
                Mark {
                    line: m.line(),
                    col: m.col() + 1,
                },
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let mark = mark_of(&span);
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let node = if style == ScalarStyle::Plain && !tagged_str {
                    let v = resolve_plain(&value);
                    let text = (!matches!(v, YValue::Str(_))).then(|| value.to_string());
                    YNode {
                        value: v,
                        mark,
                        text,
                    }
                } else {
                    YNode::new(YValue::Str(value.into_owned()), mark)
                };
                push(&mut stack, &mut root, &mut anchors, node, anchor)?;
            }
            Event::Alias(id) => {
                let target = anchors
                    .get(&id)
                    .ok_or_else(|| YamlError::at(mark, "alias to an unknown anchor"))?;
                // every alias copies its anchor's nodes: a few nested
                // aliases ("billion laughs") would expand to billions
                expanded += nodes_within(target, limits.yaml_max_alias_nodes - expanded + 1);
                if expanded > limits.yaml_max_alias_nodes {
                    return Err(YamlError::at(
                        mark,
                        format!(
                            "aliases expand to more than {} nodes (the limit; RILL_YAML_MAX_ALIAS_NODES sets another)",
                            limits.yaml_max_alias_nodes
                        ),
                    ));
                }
                let mut node = target.clone();
                node.mark = mark;
                push(&mut stack, &mut root, &mut anchors, node, 0)?;
            }
            Event::SequenceStart(..) | Event::MappingStart(..)
                if stack.len() >= limits.max_depth =>
            {
                return Err(YamlError::at(
                    mark,
                    format!(
                        "nested deeper than {} levels (the limit; RILL_MAX_DEPTH sets another)",
                        limits.max_depth
                    ),
                ));
            }
            Event::SequenceStart(anchor, _) => stack.push(Frame::Seq(Vec::new(), mark, anchor)),
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(Vec::new(), None, mark, anchor))
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq(items, m, anchor)) = stack.pop() else {
                    return Err(YamlError::at(mark, "internal: unbalanced sequence"));
                };
                push(
                    &mut stack,
                    &mut root,
                    &mut anchors,
                    YNode::new(YValue::Seq(items), m),
                    anchor,
                )?;
            }
            Event::MappingEnd => {
                let Some(Frame::Map(entries, _, m, anchor)) = stack.pop() else {
                    return Err(YamlError::at(mark, "internal: unbalanced mapping"));
                };
                push(
                    &mut stack,
                    &mut root,
                    &mut anchors,
                    YNode::new(YValue::Map(entries), m),
                    anchor,
                )?;
            }
            Event::DocumentEnd => {
                if root.is_some() {
                    break;
                }
            }
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {}
        }
    }
    Ok(root.unwrap_or(YNode::new(YValue::Null, Mark { line: 1, col: 1 })))
}

// ---------------------------------------------------------------------------
// serde Deserializer over a YNode tree

impl<'de> IntoDeserializer<'de, YamlError> for &'de YNode {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

struct SeqAccess<'de> {
    items: std::slice::Iter<'de, YNode>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = YamlError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, YamlError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e| e.or_at(node.mark)),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de> {
    entries: std::slice::Iter<'de, (YNode, YNode)>,
    value: Option<&'de YNode>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = YamlError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, YamlError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k).map(Some).map_err(|e| e.or_at(k.mark))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, YamlError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value without key"))?;
        seed.deserialize(v).map_err(|e| e.or_at(v.mark))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'de> {
    tag: &'de YNode,
    content: Option<&'de YNode>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = YamlError;
    type Variant = Self;
    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), YamlError> {
        let v = seed
            .deserialize(self.tag)
            .map_err(|e| e.or_at(self.tag.mark))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumAccess<'de> {
    type Error = YamlError;
    fn unit_variant(self) -> Result<(), YamlError> {
        match self.content {
            None => Ok(()),
            Some(c) if c.is_null() => Ok(()),
            Some(c) => Err(YamlError::at(c.mark, "this variant takes no value")),
        }
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, YamlError> {
        match self.content {
            Some(c) => seed.deserialize(c).map_err(|e| e.or_at(c.mark)),
            None => Err(YamlError::at(self.tag.mark, "this variant needs a value")),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        match self.content {
            Some(c) => c.deserialize_seq(visitor),
            None => Err(YamlError::at(self.tag.mark, "this variant needs a list")),
        }
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        match self.content {
            Some(c) => c.deserialize_map(visitor),
            None => Err(YamlError::at(self.tag.mark, "this variant needs a mapping")),
        }
    }
}

impl<'de> Deserializer<'de> for &'de YNode {
    type Error = YamlError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        let r = match &self.value {
            YValue::Null => visitor.visit_unit(),
            YValue::Bool(b) => visitor.visit_bool(*b),
            YValue::Int(i) => visitor.visit_i64(*i),
            YValue::Float(f) => visitor.visit_f64(*f),
            YValue::Str(s) => visitor.visit_borrowed_str(s),
            YValue::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            YValue::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.or_at(self.mark))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.value {
            YValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        // numbers and booleans written plainly still read as text
        match (&self.value, &self.text) {
            (YValue::Str(s), _) => visitor.visit_borrowed_str(s),
            (_, Some(t)) => visitor.visit_str(t),
            _ => self.deserialize_any(visitor),
        }
        .map_err(|e| e.or_at(self.mark))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.or_at(self.mark))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        let r = match &self.value {
            YValue::Str(_) => visitor.visit_enum(EnumAccess {
                tag: self,
                content: None,
            }),
            YValue::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumAccess {
                tag: &entries[0].0,
                content: Some(&entries[0].1),
            }),
            _ => Err(YamlError::at(
                self.mark,
                format!(
                    "expected a name or a one-key mapping, found {}",
                    self.kind()
                ),
            )),
        };
        r.map_err(|e| e.or_at(self.mark))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// Deserializes `node` into `T` (a convenience for `T::deserialize(node)`).
pub fn from_node<T: DeserializeOwned>(node: &YNode) -> Result<T, YamlError> {
    T::deserialize(node).map_err(|e| e.or_at(node.mark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        path: String,
        #[serde(default)]
        size: Option<u32>,
        tags: Vec<String>,
    }

    #[test]
    fn positions_of_nested_errors() {
        let doc = parse("a:\n  path: x\n  sise: 3\n  tags: []\n").unwrap();
        let err = from_node::<Cfg>(doc.get("a").unwrap()).unwrap_err();
        assert_eq!(err.mark, Some(Mark { line: 3, col: 3 }), "{err}");
        assert!(err.msg.contains("unknown field `sise`"), "{err}");

        let doc = parse("path: x\nsize: big\ntags: []\n").unwrap();
        let err = from_node::<Cfg>(&doc).unwrap_err();
        assert_eq!(err.mark, Some(Mark { line: 2, col: 7 }), "{err}");

        let doc = parse("path: x\n").unwrap();
        let err = from_node::<Cfg>(&doc).unwrap_err();
        assert!(err.msg.contains("missing field `tags`"), "{err}");
    }

    #[test]
    fn scalars_resolve_by_core_schema() {
        let doc = parse("[1, -2, 1.5, true, null, '3', x, 1e3, 0x10, 2s]").unwrap();
        let YValue::Seq(items) = doc.value else {
            panic!()
        };
        let vals: Vec<_> = items.into_iter().map(|n| n.value).collect();
        assert_eq!(
            vals,
            vec![
                YValue::Int(1),
                YValue::Int(-2),
                YValue::Float(1.5),
                YValue::Bool(true),
                YValue::Null,
                YValue::Str("3".into()),
                YValue::Str("x".into()),
                YValue::Float(1000.0),
                YValue::Int(16),
                YValue::Str("2s".into()),
            ]
        );
        // a plain number still reads as a string where a string is wanted
        let n = parse("42").unwrap();
        assert_eq!(from_node::<String>(&n).unwrap(), "42");
    }

    #[test]
    fn syntax_errors_and_duplicates_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(
            err.mark.is_some() && err.msg.contains("invalid YAML"),
            "{err}"
        );
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.mark, Some(Mark { line: 3, col: 1 }));
        assert!(err.msg.contains("duplicate key `a`"), "{err}");
    }

    #[test]
    fn anchors_and_aliases() {
        let doc = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(
            doc.get("other").unwrap().get("x").unwrap().value,
            YValue::Int(1)
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // block style: each level one more indentation
        let mut text = String::new();
        for i in 0..4000 {
            text.push_str(&" ".repeat(i));
            text.push_str("-\n");
        }
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 128 levels"), "{e}");
        assert!(
            e.starts_with("129:"),
            "points at the level past the limit: {e}"
        );
        // within the limit: fine
        let ok: String = (0..100).map(|i| format!("{}-\n", " ".repeat(i))).collect();
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn billion_laughs_is_refused_at_once() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let t = std::time::Instant::now();
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("aliases expand to more than 100000 nodes"),
            "{e}"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // a few aliases are fine
        let doc = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(
            doc.get("other").unwrap().get("x").unwrap().value,
            YValue::Int(1)
        );
    }
}
