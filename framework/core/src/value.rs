//! The record model: [`Value`], [`Tensor`] and [`Record`].
//!
//! A record is a row: an optional `key`, an `event_time` in milliseconds since
//! the epoch, and an ordered map of named [`Value`]s. Values are JSON-like with
//! two additions: raw bytes and dense tensors.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::fields::Fields;

/// A field name: a string kept inline up to 24 bytes, so naming a field
/// rarely allocates.
pub type Name = compact_str::CompactString;

/// A string value: kept inline up to 24 bytes, like [`Name`] (labels, ids,
/// categories rarely allocate).
pub type Text = compact_str::CompactString;

/// One value in a record, 32 bytes: tensors are boxed, and a map is its
/// [`Fields`] (a vector of entries, as small as a list), so a list of
/// numbers or a record's fields take 32 bytes a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum Value {
    /// Absent / none.
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(Text),
    Bytes(Vec<u8>),
    #[serde(deserialize_with = "nested_list")]
    List(Vec<Value>),
    Map(Fields),
    Tensor(Box<Tensor>),
}

/// A list, within the nesting limit ([`crate::limits`]): a hostile
/// payload nested 100,000 deep is an error, not a stack overflow.
fn nested_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    let _level = crate::limits::DepthGuard::enter().map_err(serde::de::Error::custom)?;
    Vec::<Value>::deserialize(d)
}

impl Value {
    /// A short name of the value's type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Tensor(_) => "tensor",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Ints and floats as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<Fields> for Value {
    fn from(v: Fields) -> Self {
        Value::Map(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v.into())
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}
impl From<Tensor> for Value {
    fn from(v: Tensor) -> Self {
        Value::Tensor(Box::new(v))
    }
}

impl fmt::Display for Value {
    /// Values display as their JSON form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::json::value_to_json(self))
    }
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F64,
    I64,
    U8,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "f32" | "float32" => DType::F32,
            "f64" | "float64" => DType::F64,
            "i64" | "int64" => DType::I64,
            "u8" | "uint8" => DType::U8,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The flat, row-major element buffer of a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
        }
    }
}

/// A dense tensor: a shape and a row-major buffer whose length is the
/// product of the shape. The invariant is checked on construction and on
/// decoding, so a `Tensor` value is always well formed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTensor", into = "RawTensor")]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

#[derive(Serialize, Deserialize)]
struct RawTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl TryFrom<RawTensor> for Tensor {
    type Error = TensorError;
    fn try_from(raw: RawTensor) -> Result<Self, Self::Error> {
        Tensor::new(raw.shape, raw.data)
    }
}

impl From<Tensor> for RawTensor {
    fn from(t: Tensor) -> Self {
        RawTensor {
            shape: t.shape,
            data: t.data,
        }
    }
}

/// A tensor whose shape and data disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor shape {shape:?} needs {expected} elements but data has {actual}")]
pub struct TensorError {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub actual: usize,
}

impl Tensor {
    /// A tensor of `shape` over `data`; fails unless `data` has exactly
    /// `shape.iter().product()` elements.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected = shape
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(*d))
            .unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(TensorError {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
}

/// One row of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Record {
    /// Partitioning / grouping key, if the source set one.
    pub key: Option<Text>,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time: i64,
    /// Named values, in order.
    pub fields: Fields,
    /// The window an aggregation computed this record over (`None`: the
    /// windows its stream's strategy assigns to its event time, or the
    /// global window). See [`crate::window`].
    pub window: Option<crate::window::Window>,
}

impl Record {
    pub fn new(fields: Fields) -> Record {
        Record {
            key: None,
            event_time: 0,
            fields,
            window: None,
        }
    }

    /// Builder-style: set the key.
    pub fn with_key(mut self, key: impl Into<Text>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Builder-style: set the event time (ms since epoch).
    pub fn with_time(mut self, event_time: i64) -> Record {
        self.event_time = event_time;
        self
    }

    /// Builder-style: append a field.
    pub fn with(mut self, name: impl Into<Name>, value: impl Into<Value>) -> Record {
        self.fields.insert(name.into(), value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }
}

/// Builds a [`Record`] from `name => value` pairs.
///
/// ```
/// let r = rill_core::record! { "id" => 1, "name" => "a" };
/// assert_eq!(r.fields.len(), 2);
/// ```
#[macro_export]
macro_rules! record {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut r = $crate::Record::default();
        $( r.fields.insert($crate::value::Name::from($k), $crate::Value::from($v)); )*
        r
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_small() {
        // tensors boxed, maps a vector, strings inline: a list of numbers
        // or a record's fields cost 32 bytes a value, not 72
        assert!(size_of::<Value>() <= 32, "{}", size_of::<Value>());
        let short = Value::from("k-0123456789");
        assert!(matches!(&short, Value::String(s) if !s.is_heap_allocated()));
    }

    #[test]
    fn tensor_checks_shape() {
        assert!(Tensor::new(vec![2, 3], TensorData::F32(vec![0.0; 6])).is_ok());
        let err = Tensor::new(vec![2, 3], TensorData::F32(vec![0.0; 5])).unwrap_err();
        assert_eq!(err.expected, 6);
        assert_eq!(err.actual, 5);
        // an overflowing shape is refused rather than wrapping
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::U8(vec![])).is_err());
    }
}
