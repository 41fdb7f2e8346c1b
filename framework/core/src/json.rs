//! The JSON mapping of values, used by JSON Lines files, `LogForTesting`
//! and `rill tap`.
//!
//! | value  | JSON |
//! |--------|------|
//! | null, bool, string, list, map | the same |
//! | int    | an integer number |
//! | float  | a number with a fraction or exponent (`1.0`); NaN and ±inf become `null` |
//! | bytes  | `{"$bytes": "<base64>"}` |
//! | tensor | `{"dtype": "f32", "shape": [2, 3], "data": [...]}` (flat, row-major) |
//!
//! On reading, a JSON integer that fits `i64` is an int, a number with a
//! fraction or exponent a float, an object with exactly the keys `dtype`,
//! `shape`, `data` and a known dtype is a tensor, and `{"$bytes": "..."}` is
//! bytes. A record's line is read strictly: an integer past `i64` (up to
//! `u64::MAX`) and a key given twice in one object are errors, not a float
//! or the last value. (An integer past `u64::MAX` is read as a float: the
//! parser gives no other.)

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map as JsonMap, Number, Value as Json};

use crate::value::{DType, Fields, Record, Tensor, TensorData, Value};

/// Why a JSON document could not become a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("expected a JSON object per record, found {0}")]
    NotAnObject(&'static str),
    #[error("bad tensor: {0}")]
    Tensor(String),
    #[error("bad $bytes value: {0}")]
    Bytes(String),
}

/// A value as JSON.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.to_string()),
        Value::Bytes(b) => {
            let mut m = JsonMap::new();
            m.insert("$bytes".into(), Json::String(B64.encode(b)));
            Json::Object(m)
        }
        Value::List(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Map(fields) => Json::Object(fields_to_json(fields)),
        Value::Tensor(t) => tensor_to_json(t),
    }
}

fn fields_to_json(fields: &Fields) -> JsonMap<String, Json> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), value_to_json(v)))
        .collect()
}

fn tensor_to_json(t: &Tensor) -> Json {
    let data: Vec<Json> = match t.data() {
        TensorData::F32(v) => v
            .iter()
            .map(|x| Number::from_f64(f64::from(*x)).map_or(Json::Null, Json::Number))
            .collect(),
        TensorData::F64(v) => v
            .iter()
            .map(|x| Number::from_f64(*x).map_or(Json::Null, Json::Number))
            .collect(),
        TensorData::I64(v) => v.iter().map(|x| Json::Number((*x).into())).collect(),
        TensorData::U8(v) => v.iter().map(|x| Json::Number((*x).into())).collect(),
    };
    let mut m = JsonMap::new();
    m.insert("dtype".into(), Json::String(t.dtype().name().into()));
    m.insert(
        "shape".into(),
        Json::Array(
            t.shape()
                .iter()
                .map(|d| Json::Number((*d).into()))
                .collect(),
        ),
    );
    m.insert("data".into(), Json::Array(data));
    Json::Object(m)
}

/// A record's fields as one JSON object (key and event time are not part of
/// the object; sources take them from fields).
pub fn record_to_json(r: &Record) -> Json {
    Json::Object(fields_to_json(&r.fields))
}

/// A record's fields as one line of JSON (no trailing newline).
pub fn record_to_json_line(r: &Record) -> String {
    let mut out = Vec::with_capacity(128);
    write_record_json(&mut out, r);
    // serde_json writes UTF-8 only
    String::from_utf8(out).unwrap_or_default()
}

/// Appends a record's fields to `out` as one line of JSON (no trailing
/// newline): the same text as [`record_to_json_line`], written straight
/// from the values without building a `serde_json::Value` first (the JSON
/// sinks write every record through this).
pub fn write_record_json(out: &mut Vec<u8>, r: &Record) {
    // writing to a Vec cannot fail, and every value has a JSON form
    let _ = serde_json::to_writer(out, &AsJson::Fields(&r.fields));
}

/// A value seen through the JSON mapping, for serde_json's serializer.
enum AsJson<'a> {
    Value(&'a Value),
    Fields(&'a Fields),
}

impl serde::Serialize for AsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let v = match self {
            AsJson::Fields(f) => {
                let mut m = s.serialize_map(Some(f.len()))?;
                for (k, v) in f.iter() {
                    m.serialize_entry(k.as_str(), &AsJson::Value(v))?;
                }
                return m.end();
            }
            AsJson::Value(v) => v,
        };
        match v {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            // serde_json writes NaN and ±inf as null, like `Number::from_f64`
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(t) => s.serialize_str(t),
            Value::Bytes(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$bytes", &B64.encode(b))?;
                m.end()
            }
            Value::List(items) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    q.serialize_element(&AsJson::Value(i))?;
                }
                q.end()
            }
            Value::Map(f) => AsJson::Fields(f).serialize(s),
            Value::Tensor(t) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("dtype", t.dtype().name())?;
                m.serialize_entry("shape", t.shape())?;
                match t.data() {
                    TensorData::F32(d) => {
                        let wide = d.iter().map(|x| f64::from(*x));
                        m.serialize_entry("data", &Seq(std::cell::Cell::new(Some(wide))))?
                    }
                    TensorData::F64(d) => m.serialize_entry("data", d)?,
                    TensorData::I64(d) => m.serialize_entry("data", d)?,
                    TensorData::U8(d) => {
                        let wide = d.iter().map(|x| u64::from(*x));
                        m.serialize_entry("data", &Seq(std::cell::Cell::new(Some(wide))))?
                    }
                }
                m.end()
            }
        }
    }
}

/// An iterator serialized once as a sequence.
struct Seq<I>(std::cell::Cell<Option<I>>);

impl<I: Iterator<Item = T>, T: serde::Serialize> serde::Serialize for Seq<I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.take().into_iter().flatten())
    }
}

/// JSON to a value (see the module docs for the mapping).
pub fn json_to_value(j: &Json) -> Result<Value, JsonError> {
    Ok(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.as_str().into()),
        Json::Array(items) => {
            Value::List(items.iter().map(json_to_value).collect::<Result<_, _>>()?)
        }
        Json::Object(m) => {
            if let Some(t) = json_to_tensor(m)? {
                return Ok(Value::Tensor(Box::new(t)));
            }
            if m.len() == 1
                && let Some(Json::String(b)) = m.get("$bytes")
            {
                return B64
                    .decode(b)
                    .map(Value::Bytes)
                    .map_err(|e| JsonError::Bytes(e.to_string()));
            }
            let mut fields = Fields::with_capacity(m.len());
            for (k, v) in m {
                fields.insert(k.as_str().into(), json_to_value(v)?);
            }
            Value::Map(fields)
        }
    })
}

/// An object is a tensor when it has exactly `dtype`, `shape` and `data` and
/// `dtype` names a known element type; it is then an error for shape and data
/// to disagree.
fn json_to_tensor(m: &JsonMap<String, Json>) -> Result<Option<Tensor>, JsonError> {
    if m.len() != 3 {
        return Ok(None);
    }
    let (Some(Json::String(dt)), Some(shape), Some(data)) =
        (m.get("dtype"), m.get("shape"), m.get("data"))
    else {
        return Ok(None);
    };
    let Some(dtype) = DType::parse(dt) else {
        return Ok(None);
    };
    let bad = |what: String| JsonError::Tensor(what);
    let shape: Vec<usize> = shape
        .as_array()
        .ok_or_else(|| bad("shape must be a list of sizes".into()))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("shape must hold non-negative integers".into()))?;
    let data = data
        .as_array()
        .ok_or_else(|| bad("data must be a flat list of numbers".into()))?;
    let num = |i: usize, x: &Json| -> Result<f64, JsonError> {
        x.as_f64()
            .ok_or_else(|| bad(format!("data[{i}] is not a number")))
    };
    let int = |i: usize, x: &Json| -> Result<i64, JsonError> {
        x.as_i64()
            .ok_or_else(|| bad(format!("data[{i}] is not an integer")))
    };
    let td = match dtype {
        DType::F32 => TensorData::F32(
            data.iter()
                .enumerate()
                .map(|(i, x)| num(i, x).map(|f| f as f32))
                .collect::<Result<_, _>>()?,
        ),
        DType::F64 => TensorData::F64(
            data.iter()
                .enumerate()
                .map(|(i, x)| num(i, x))
                .collect::<Result<_, _>>()?,
        ),
        DType::I64 => TensorData::I64(
            data.iter()
                .enumerate()
                .map(|(i, x)| int(i, x))
                .collect::<Result<_, _>>()?,
        ),
        DType::U8 => TensorData::U8(
            data.iter()
                .enumerate()
                .map(|(i, x)| {
                    int(i, x).and_then(|v| {
                        u8::try_from(v).map_err(|_| bad(format!("data[{i}] = {v} is not a u8")))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Tensor::new(shape, td)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// One JSON object to record fields.
pub fn json_to_fields(j: &Json) -> Result<Fields, JsonError> {
    match j {
        Json::Object(_) => match json_to_value(j)? {
            Value::Map(f) => Ok(f),
            // a top-level object shaped like a tensor is still a row
            other => {
                let mut f = Fields::default();
                f.insert("element".into(), other);
                Ok(f)
            }
        },
        other => Err(JsonError::NotAnObject(json_type(other))),
    }
}

/// Parses one line of JSON Lines into record fields.
pub fn parse_json_line(line: &str) -> Result<Fields, JsonError> {
    parse_json_bytes(line.as_bytes())
}

/// As [`parse_json_line`], from bytes (a message received over Zenoh).
pub fn parse_json_bytes(bytes: &[u8]) -> Result<Fields, JsonError> {
    match parse_json_value(bytes)? {
        Value::Map(f) => Ok(f),
        // a top-level object shaped like a tensor is still a row
        t @ Value::Tensor(_) => {
            let mut f = Fields::default();
            f.insert("element".into(), t);
            Ok(f)
        }
        other => Err(JsonError::NotAnObject(value_type(&other))),
    }
}

/// One JSON document to a value, read straight into rill's values (no
/// `serde_json::Value` in between), with the mapping and the checks of
/// [`json_to_value`] and [`parse_json_line`]: a key given twice in one
/// object and an integer past `i64` are errors.
pub fn parse_json_value(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde::de::DeserializeSeed::deserialize(Direct, &mut de)
        .and_then(|v| de.end().map(|_| v))
        .map_err(|e| {
            // (an error raised while a map was made: a bad tensor, bytes)
            let text = e.to_string();
            match text.strip_prefix(DIRECT_TAG) {
                Some(rest) => {
                    let reason = rest.split(" at line ").next().unwrap_or(rest);
                    match reason.strip_prefix("B:") {
                        Some(b) => JsonError::Bytes(b.to_owned()),
                        None => JsonError::Tensor(reason.trim_start_matches("T:").to_owned()),
                    }
                }
                None => JsonError::Syntax(text),
            }
        })?;
    Ok(v)
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::String(_) | Value::Bytes(_) => "a string",
        Value::List(_) => "an array",
        Value::Map(_) | Value::Tensor(_) => "an object",
    }
}

/// Marks an error of [`Direct`] that is not a syntax error.
const DIRECT_TAG: &str = "\u{1}rill:";

/// Reads JSON into values as [`Strict`] then [`json_to_value`] would.
#[derive(Clone, Copy)]
struct Direct;

impl<'de> serde::de::DeserializeSeed<'de> for Direct {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Direct {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
        Strict.visit_u64::<E>(u).map(|_| Value::Int(u as i64))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(x) = seq.next_element_seed(Direct)? {
            v.push(x);
        }
        Ok(Value::List(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Fields::default();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{k}` is given twice in one object"
                )));
            }
            let v = map.next_value_seed(Direct)?;
            m.insert(k.as_ref().into(), v);
        }
        // tensors and bytes, as `json_to_value` reads them (rare: the
        // object is made again as JSON for it)
        let special = (m.len() == 3
            && matches!(m.get("dtype"), Some(Value::String(_)))
            && m.contains_key("shape")
            && m.contains_key("data"))
            || (m.len() == 1 && matches!(m.get("$bytes"), Some(Value::String(_))));
        if special {
            let j = value_to_json(&Value::Map(m.clone()));
            return json_to_value(&j).map_err(|e| {
                serde::de::Error::custom(format!("{DIRECT_TAG}{}", tensor_reason(&e)))
            });
        }
        Ok(Value::Map(m))
    }
}

/// What a tensor (`T:`) or bytes (`B:`) error says, without its prefix.
fn tensor_reason(e: &JsonError) -> String {
    match e {
        JsonError::Bytes(s) => format!("B:{s}"),
        JsonError::Tensor(s) => format!("T:{s}"),
        other => format!("T:{other}"),
    }
}

/// Reads JSON as `serde_json` does, but refuses a key given twice in one
/// object and an integer past `i64`.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Json;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Json, E> {
        Ok(Json::from(i))
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Json, E> {
        match i64::try_from(u) {
            Ok(i) => Ok(Json::from(i)),
            Err(_) => Err(E::custom(format!(
                "the integer {u} does not fit in 64 bits (the largest is {}); write it as a string, or as a float ({u}.0)",
                i64::MAX
            ))),
        }
    }
    fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element_seed(Strict)? {
            v.push(x);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut m = JsonMap::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{k}` is given twice in one object"
                )));
            }
            let v = map.next_value_seed(Strict)?;
            m.insert(k, v);
        }
        Ok(Json::Object(m))
    }
}

fn json_type(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_parsing_agrees_with_json_to_value() {
        for text in [
            r#"{"a": 1, "b": -2.5, "c": "x", "d": null, "e": [true, [1, {"f": []}]], "g": {}}"#,
            r#"{"t": {"dtype": "f32", "shape": [2], "data": [1, 2.5]}, "b": {"$bytes": "AAH/"}}"#,
            r#"{"dtype": "i64", "shape": [1], "data": [3]}"#,
            r#"{"not": {"dtype": "nope", "shape": [1], "data": [3]}, "big": 9223372036854775807}"#,
        ] {
            let j: Json = serde_json::from_str(text).unwrap();
            let want = json_to_fields(&j).unwrap();
            assert_eq!(parse_json_line(text).unwrap(), want, "{text}");
        }
        for (text, want) in [
            (
                r#"{"t": {"dtype": "f32", "shape": [3], "data": [1]}}"#,
                "bad tensor",
            ),
            (r#"{"b": {"$bytes": "!!"}}"#, "bad $bytes value"),
            (r#"[1]"#, "found an array"),
            (r#"{"a": 1"#, "invalid JSON"),
        ] {
            let e = parse_json_line(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\u{1}'), "{e}");
        }
    }

    #[test]
    fn big_integers_and_repeated_keys_are_errors() {
        let e = parse_json_line(r#"{"n": 18446744073709551615}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("the integer 18446744073709551615 does not fit in 64 bits"),
            "{e}"
        );
        let e = parse_json_line(r#"{"a": 1, "b": {"c": 1, "c": 2}}"#).unwrap_err();
        assert!(e.to_string().contains("the key `c` is given twice"), "{e}");
        let f =
            parse_json_line(r#"{"n": 9223372036854775807, "m": -9223372036854775808}"#).unwrap();
        assert_eq!(f["n"], Value::Int(i64::MAX));
        assert_eq!(f["m"], Value::Int(i64::MIN));
        assert!(parse_json_line(r#"{"a": 1} x"#).is_err(), "trailing text");
    }

    #[test]
    fn tensor_json_round_trip() {
        let f = parse_json_line(
            r#"{"x": {"dtype": "f32", "shape": [2, 3], "data": [1,2,3,4,5,6]}, "n": 3, "f": 1.5}"#,
        )
        .unwrap();
        let Value::Tensor(t) = &f["x"] else {
            panic!("not a tensor: {:?}", f["x"])
        };
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(f["n"], Value::Int(3));
        assert_eq!(f["f"], Value::Float(1.5));
        let back = record_to_json_line(&Record::new(f.clone()));
        assert_eq!(parse_json_line(&back).unwrap(), f);
    }

    #[test]
    fn bad_tensor_is_an_error() {
        let e = parse_json_line(r#"{"x": {"dtype": "f32", "shape": [2, 3], "data": [1,2]}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("needs 6 elements"), "{e}");
    }

    #[test]
    fn the_direct_writer_writes_what_the_json_value_prints() {
        let t = Tensor::new(vec![2], TensorData::F32(vec![0.1, f32::NAN])).unwrap();
        let u = Tensor::new(vec![3], TensorData::U8(vec![0, 7, 255])).unwrap();
        let r = crate::record! {
            "a" => 1.0, "i" => -3, "n" => Value::Null, "b" => true,
            "nan" => f64::NAN, "inf" => f64::INFINITY, "tiny" => 1e-300,
            "s" => "quote \" and \\ and \u{1} and é",
            "bytes" => Value::Bytes(vec![0, 255, 7]),
            "list" => Value::List(vec![Value::Int(1), Value::Float(2.5), Value::Null]),
            "t" => Value::Tensor(Box::new(t)), "u" => Value::Tensor(Box::new(u)),
            "m" => Value::Map(crate::record! {"z" => 1, "a" => Value::List(vec![])}.fields)
        };
        assert_eq!(record_to_json_line(&r), record_to_json(&r).to_string());
        let mut out = b"x".to_vec();
        write_record_json(&mut out, &r);
        assert_eq!(&out[1..], record_to_json(&r).to_string().as_bytes());
    }

    #[test]
    fn floats_stay_floats_and_bytes_round_trip() {
        let r = crate::record! {"a" => 1.0, "b" => Value::Bytes(vec![0, 255, 7])};
        let line = record_to_json_line(&r);
        assert!(line.contains("1.0"), "{line}");
        assert_eq!(parse_json_line(&line).unwrap(), r.fields);
    }

    #[test]
    fn non_object_line_is_refused() {
        assert!(matches!(
            parse_json_line("[1,2]"),
            Err(JsonError::NotAnObject("an array"))
        ));
        assert!(matches!(
            parse_json_line("{oops"),
            Err(JsonError::Syntax(_))
        ));
    }
}
