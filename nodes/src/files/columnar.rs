//! Columns for the columnar formats (Parquet, Avro): a schema declared in
//! the config or inferred from the first records a sink is given, the check
//! of each record against it, and the conversions between records and Arrow
//! record batches.
//!
//! | column type | a record's value | Arrow | Avro |
//! |---|---|---|---|
//! | `bool` | bool | Boolean | boolean |
//! | `int64` | int | Int64 | long |
//! | `float64` | float (an int is widened) | Float64 | double |
//! | `string` | str | Utf8 | string |
//! | `bytes` | bytes | Binary | bytes |
//! | `list<T>` | a list of T | List | array |
//! | `json` | anything (maps, mixed lists, tensors) | Utf8 holding JSON text, field metadata `rill.type: json` | string, field attribute `rill.type: json` |
//!
//! Every column is nullable, and a record without a column's field holds
//! null there. A field that is not a column, or a value of another type,
//! fails the record (a dead letter naming the field and both types).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder,
    ListBuilder, StringBuilder, make_builder,
};
use arrow::array::{ArrayBuilder, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rill_core::json::{json_to_value, value_to_json};
use rill_core::{Fields, Name, Record, Value};

/// The metadata key that marks a string column as JSON text.
pub const TYPE_KEY: &str = "rill.type";

/// A column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColType {
    Bool,
    Int,
    Float,
    String,
    Bytes,
    List(Box<ColType>),
    Json,
    /// A type rill does not write, of a column an existing table has
    /// (Iceberg's `decimal`, `struct`, ...): only null fits it.
    Other(String),
}

impl ColType {
    /// Parses a declared type: `int64`, `list<float64>`, ...
    pub fn parse(s: &str) -> Result<ColType, String> {
        let t = s.trim();
        if let Some(inner) = t.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            return Ok(ColType::List(Box::new(ColType::parse(inner)?)));
        }
        Ok(match t {
            "bool" | "boolean" => ColType::Bool,
            "int" | "int64" | "long" | "integer" => ColType::Int,
            "float" | "float64" | "double" | "number" => ColType::Float,
            "str" | "string" => ColType::String,
            "bytes" | "binary" => ColType::Bytes,
            "json" => ColType::Json,
            other => {
                return Err(format!(
                    "unknown column type `{other}` (bool, int64, float64, string, bytes, json, list<T>)"
                ));
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            ColType::Bool => "bool".into(),
            ColType::Int => "int64".into(),
            ColType::Float => "float64".into(),
            ColType::String => "string".into(),
            ColType::Bytes => "bytes".into(),
            ColType::List(t) => format!("list<{}>", t.name()),
            ColType::Json => "json".into(),
            ColType::Other(t) => format!("other<{t}>"),
        }
    }

    /// The type a value suggests (`None` for null, and for an empty list,
    /// which fits a list of any type).
    pub fn of(v: &Value) -> Option<ColType> {
        Some(match v {
            Value::Null => return None,
            Value::List(items) if items.iter().all(|i| matches!(i, Value::Null)) => return None,
            Value::Bool(_) => ColType::Bool,
            Value::Int(_) => ColType::Int,
            Value::Float(_) => ColType::Float,
            Value::String(_) => ColType::String,
            Value::Bytes(_) => ColType::Bytes,
            Value::List(items) => {
                let mut t: Option<ColType> = None;
                for i in items {
                    let Some(it) = ColType::of(i) else { continue };
                    t = Some(match (t, it) {
                        (None, it) => it,
                        (Some(a), b) if a == b => a,
                        (Some(ColType::Int), ColType::Float)
                        | (Some(ColType::Float), ColType::Int) => ColType::Float,
                        _ => ColType::Json,
                    });
                }
                ColType::List(Box::new(t.unwrap_or(ColType::Json)))
            }
            Value::Map(_) | Value::Tensor(_) => ColType::Json,
        })
    }

    /// Whether a value fits a column of this type.
    pub fn accepts(&self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) | (ColType::Json, _) => true,
            (ColType::Bool, Value::Bool(_))
            | (ColType::Int, Value::Int(_))
            | (ColType::Float, Value::Float(_) | Value::Int(_))
            | (ColType::String, Value::String(_))
            | (ColType::Bytes, Value::Bytes(_)) => true,
            (ColType::List(t), Value::List(items)) => items.iter().all(|i| t.accepts(i)),
            _ => false,
        }
    }

    pub fn arrow(&self) -> DataType {
        match self {
            ColType::Bool => DataType::Boolean,
            ColType::Int => DataType::Int64,
            ColType::Float => DataType::Float64,
            ColType::String | ColType::Json => DataType::Utf8,
            ColType::Bytes => DataType::Binary,
            ColType::List(t) => DataType::List(Arc::new(t.arrow_field("item"))),
            ColType::Other(_) => DataType::Null,
        }
    }

    pub fn arrow_field(&self, name: &str) -> Field {
        let f = Field::new(name, self.arrow(), true);
        if *self == ColType::Json {
            f.with_metadata([(TYPE_KEY.to_owned(), "json".to_owned())].into())
        } else {
            f
        }
    }
}

/// The type of a column that holds values of types `a` and `b` in its
/// first records: int and float make float (in lists too); otherwise the
/// first stays, and the records that do not fit it fail.
fn widen(a: ColType, b: ColType) -> ColType {
    match (a, b) {
        (ColType::Int, ColType::Float) | (ColType::Float, ColType::Int) => ColType::Float,
        (ColType::List(x), ColType::List(y)) => ColType::List(Box::new(widen(*x, *y))),
        (a, _) => a,
    }
}

/// A column: its name, and its type once known (a column null in every
/// record so far has none yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: Name,
    pub ty: Option<ColType>,
}

/// A sink's columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Columns {
    pub cols: Vec<Column>,
    /// Declared in the config (fixed) rather than inferred.
    pub declared: bool,
    /// An existing table's (fixed, but for new columns).
    pub from_table: bool,
}

impl Columns {
    /// From the config's `schema: {name: type, ...}`.
    pub fn declared(
        schema: &indexmap::IndexMap<String, String>,
    ) -> Result<Columns, (String, String)> {
        let mut cols = Vec::new();
        for (k, t) in schema {
            let ty = ColType::parse(t).map_err(|e| (k.clone(), e))?;
            cols.push(Column {
                name: k.as_str().into(),
                ty: Some(ty),
            });
        }
        Ok(Columns {
            cols,
            declared: true,
            from_table: false,
        })
    }

    /// Inferred from a first batch: every field of it, in order of first
    /// appearance, typed by its first value that is not null.
    pub fn infer(batch: &[Record]) -> Columns {
        let mut c = Columns::default();
        for r in batch {
            for (k, v) in r.fields.iter() {
                match c.cols.iter_mut().find(|c| c.name == *k) {
                    Some(col) => {
                        // ints and floats in one column of the first
                        // records make it a float column
                        col.ty = match (col.ty.take(), ColType::of(v)) {
                            (None, t) | (t, None) => t,
                            (Some(a), Some(b)) => Some(widen(a, b)),
                        };
                    }
                    None => c.cols.push(Column {
                        name: k.clone(),
                        ty: ColType::of(v),
                    }),
                }
            }
        }
        c
    }

    /// Checks a record against the columns, typing a column on its first
    /// value that is not null; with `evolve`, a field that is not a column
    /// becomes one. Returns whether the columns changed.
    pub fn check(&mut self, r: &Record, evolve: bool) -> Result<bool, String> {
        let mut typed = false;
        for (k, v) in r.fields.iter() {
            if evolve && !self.cols.iter().any(|c| c.name == *k) {
                self.cols.push(Column {
                    name: k.clone(),
                    ty: ColType::of(v),
                });
                typed = true;
                continue;
            }
            let Some(col) = self.cols.iter_mut().find(|c| c.name == *k) else {
                let names: Vec<&str> = self.cols.iter().map(|c| c.name.as_str()).collect();
                return Err(format!(
                    "field `{k}` is not a column of the file (columns: {}{})",
                    names.join(", "),
                    if self.from_table {
                        ", the table's"
                    } else if self.declared {
                        ", from `schema`"
                    } else {
                        ", from the first records written"
                    }
                ));
            };
            match &col.ty {
                Some(t) if !t.accepts(v) => {
                    return Err(format!(
                        "field `{k}` is {} {}, but the column is {}{}",
                        v.type_name(),
                        short(v),
                        t.name(),
                        if let ColType::Other(_) = t {
                            " (a type rill does not write: only null fits)"
                        } else if self.from_table {
                            " (the table's)"
                        } else if self.declared {
                            " (declared in `schema`)"
                        } else {
                            " (from the first records written; declare `schema` to choose)"
                        }
                    ));
                }
                Some(_) => {}
                None => {
                    if let Some(t) = ColType::of(v) {
                        col.ty = Some(t);
                        typed = true;
                    }
                }
            }
        }
        Ok(typed)
    }

    /// The Arrow schema (a column not typed yet is written as JSON text:
    /// it holds nulls only).
    pub fn arrow_schema(&self) -> Schema {
        Schema::new(
            self.cols
                .iter()
                .map(|c| c.ty.clone().unwrap_or(ColType::Json).arrow_field(&c.name))
                .collect::<Vec<_>>(),
        )
    }

    /// For the sink's state.
    pub fn to_value(&self) -> Value {
        let mut f = Fields::default();
        for c in &self.cols {
            f.insert(
                c.name.clone(),
                c.ty.as_ref()
                    .map_or(Value::Null, |t| Value::String(t.name().into())),
            );
        }
        let mut m = Fields::default();
        m.insert("columns".into(), Value::Map(f));
        m.insert("declared".into(), Value::Bool(self.declared));
        m.insert("from_table".into(), Value::Bool(self.from_table));
        Value::Map(m)
    }

    pub fn from_value(v: &Value) -> Result<Columns, String> {
        let bad = || format!("the stored schema is malformed: {v}");
        let Value::Map(m) = v else { return Err(bad()) };
        let Some(Value::Map(cols)) = m.get("columns") else {
            return Err(bad());
        };
        let mut out = Columns {
            cols: Vec::new(),
            declared: matches!(m.get("declared"), Some(Value::Bool(true))),
            from_table: matches!(m.get("from_table"), Some(Value::Bool(true))),
        };
        for (k, t) in cols.iter() {
            let ty = match t {
                Value::Null => None,
                Value::String(s) => Some(ColType::parse(s)?),
                _ => return Err(bad()),
            };
            out.cols.push(Column {
                name: k.clone(),
                ty,
            });
        }
        Ok(out)
    }
}

/// A value, shortened for a message.
fn short(v: &Value) -> String {
    let s = value_to_json(v).to_string();
    if s.len() > 40 {
        let cut = (0..=40).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

// ---------------------------------------------------------------------------

fn append(b: &mut dyn ArrayBuilder, ty: &ColType, v: &Value) {
    macro_rules! typed {
        ($t:ty) => {
            b.as_any_mut()
                .downcast_mut::<$t>()
                .expect("builder of the column's type")
        };
    }
    match ty {
        ColType::Bool => typed!(BooleanBuilder).append_option(match v {
            Value::Bool(x) => Some(*x),
            _ => None,
        }),
        ColType::Int => typed!(Int64Builder).append_option(match v {
            Value::Int(x) => Some(*x),
            _ => None,
        }),
        ColType::Float => typed!(Float64Builder).append_option(match v {
            Value::Float(x) => Some(*x),
            Value::Int(x) => Some(*x as f64),
            _ => None,
        }),
        ColType::String => typed!(StringBuilder).append_option(match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }),
        ColType::Json => typed!(StringBuilder).append_option(match v {
            Value::Null => None,
            other => Some(value_to_json(other).to_string()),
        }),
        ColType::Bytes => typed!(BinaryBuilder).append_option(match v {
            Value::Bytes(x) => Some(x.as_slice()),
            _ => None,
        }),
        ColType::Other(_) => typed!(arrow::array::NullBuilder).append_null(),
        ColType::List(t) => {
            let lb = typed!(ListBuilder<Box<dyn ArrayBuilder>>);
            match v {
                Value::List(items) => {
                    for i in items {
                        append(lb.values().as_mut(), t, i);
                    }
                    lb.append(true);
                }
                _ => lb.append(false),
            }
        }
    }
}

fn builder(ty: &ColType, cap: usize) -> Box<dyn ArrayBuilder> {
    match ty {
        ColType::List(t) => {
            Box::new(ListBuilder::new(builder(t, cap)).with_field(Arc::new(t.arrow_field("item"))))
        }
        other => make_builder(&other.arrow(), cap),
    }
}

/// Records (checked against `cols`) as an Arrow record batch.
pub fn to_batch(cols: &Columns, records: &[Record]) -> Result<RecordBatch, String> {
    let schema = Arc::new(cols.arrow_schema());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.cols.len());
    for c in &cols.cols {
        let ty = c.ty.clone().unwrap_or(ColType::Json);
        let mut b = builder(&ty, records.len());
        for r in records {
            append(
                b.as_mut(),
                &ty,
                r.fields.get(c.name.as_str()).unwrap_or(&Value::Null),
            );
        }
        arrays.push(b.finish());
    }
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

/// One cell of an Arrow array as a value. Types rill has no value for are
/// read as their nearest: unsigned and narrower ints as int, decimals and
/// 32-bit floats as float, timestamps as milliseconds since the epoch,
/// dates as days since the epoch, other types as their text.
pub fn cell(a: &dyn Array, i: usize, json: bool) -> Value {
    use arrow::datatypes as t;
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => Value::Int(a.as_primitive::<t::Int8Type>().value(i).into()),
        DataType::Int16 => Value::Int(a.as_primitive::<t::Int16Type>().value(i).into()),
        DataType::Int32 => Value::Int(a.as_primitive::<t::Int32Type>().value(i).into()),
        DataType::Int64 => Value::Int(a.as_primitive::<t::Int64Type>().value(i)),
        DataType::UInt8 => Value::Int(a.as_primitive::<t::UInt8Type>().value(i).into()),
        DataType::UInt16 => Value::Int(a.as_primitive::<t::UInt16Type>().value(i).into()),
        DataType::UInt32 => Value::Int(a.as_primitive::<t::UInt32Type>().value(i).into()),
        DataType::UInt64 => {
            let v = a.as_primitive::<t::UInt64Type>().value(i);
            i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
        }
        DataType::Float16 => Value::Float(a.as_primitive::<t::Float16Type>().value(i).to_f64()),
        DataType::Float32 => Value::Float(a.as_primitive::<t::Float32Type>().value(i).into()),
        DataType::Float64 => Value::Float(a.as_primitive::<t::Float64Type>().value(i)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(i),
                DataType::LargeUtf8 => a.as_string::<i64>().value(i),
                _ => a.as_string_view().value(i),
            };
            if json
                && let Ok(j) = serde_json::from_str::<serde_json::Value>(s)
                && let Ok(v) = json_to_value(&j)
            {
                return v;
            }
            Value::String(s.into())
        }
        DataType::Binary => Value::Bytes(a.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Value::Bytes(a.as_binary::<i64>().value(i).to_vec()),
        DataType::BinaryView => Value::Bytes(a.as_binary_view().value(i).to_vec()),
        DataType::FixedSizeBinary(_) => Value::Bytes(a.as_fixed_size_binary().value(i).to_vec()),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<t::TimestampSecondType>().value(i) * 1000,
                TimeUnit::Millisecond => a.as_primitive::<t::TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => a
                    .as_primitive::<t::TimestampMicrosecondType>()
                    .value(i)
                    .div_euclid(1000),
                TimeUnit::Nanosecond => a
                    .as_primitive::<t::TimestampNanosecondType>()
                    .value(i)
                    .div_euclid(1_000_000),
            };
            Value::Int(v)
        }
        DataType::Date32 => Value::Int(a.as_primitive::<t::Date32Type>().value(i).into()),
        DataType::Date64 => Value::Int(a.as_primitive::<t::Date64Type>().value(i)),
        DataType::List(f) => {
            let l = a.as_list::<i32>().value(i);
            let j = is_json(f);
            Value::List((0..l.len()).map(|k| cell(l.as_ref(), k, j)).collect())
        }
        DataType::LargeList(f) => {
            let l = a.as_list::<i64>().value(i);
            let j = is_json(f);
            Value::List((0..l.len()).map(|k| cell(l.as_ref(), k, j)).collect())
        }
        DataType::FixedSizeList(f, _) => {
            let l = a.as_fixed_size_list().value(i);
            let j = is_json(f);
            Value::List((0..l.len()).map(|k| cell(l.as_ref(), k, j)).collect())
        }
        DataType::Map(_, _) => {
            // entries of (key, value): a map with the keys as text
            let m = a.as_map();
            let entries = m.value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut f = Fields::default();
            for k in 0..entries.len() {
                let key = match cell(keys.as_ref(), k, false) {
                    Value::String(s) => s.to_string(),
                    other => value_to_json(&other).to_string(),
                };
                f.insert(key.as_str().into(), cell(values.as_ref(), k, false));
            }
            Value::Map(f)
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Fields::default();
            for (k, f) in fields.iter().enumerate() {
                m.insert(
                    f.name().as_str().into(),
                    cell(s.column(k).as_ref(), i, is_json(f)),
                );
            }
            Value::Map(m)
        }
        DataType::Dictionary(_, _) => match arrow::compute::cast(&a.slice(i, 1), &DataType::Utf8) {
            Ok(s) => cell(s.as_ref(), 0, json),
            Err(_) => Value::Null,
        },
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            match arrow::compute::cast(&a.slice(i, 1), &DataType::Float64) {
                Ok(f) => cell(f.as_ref(), 0, false),
                Err(_) => Value::Null,
            }
        }
        _ => match arrow::compute::cast(&a.slice(i, 1), &DataType::Utf8) {
            Ok(s) => cell(s.as_ref(), 0, false),
            Err(_) => Value::String(format!("{:?}", a.slice(i, 1)).into()),
        },
    }
}

fn is_json(f: &Field) -> bool {
    f.metadata().get(TYPE_KEY).is_some_and(|t| t == "json")
}

/// The rows of a record batch as fields.
pub fn rows(batch: &RecordBatch) -> Vec<Fields> {
    let schema = batch.schema();
    let json: Vec<bool> = schema.fields().iter().map(|f| is_json(f)).collect();
    (0..batch.num_rows())
        .map(|i| {
            let mut f = Fields::default();
            for (k, field) in schema.fields().iter().enumerate() {
                f.insert(
                    field.name().as_str().into(),
                    cell(batch.column(k).as_ref(), i, json[k]),
                );
            }
            f
        })
        .collect()
}
