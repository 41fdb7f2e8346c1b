//! The request and response shapes rill serves, to and from rows:
//!
//! - the Open Inference Protocol (KServe v2, what Triton speaks): named
//!   input tensors, JSON `data` or binary data after the JSON header (as
//!   `tritonclient` sends by default), output tensors;
//! - Vertex AI's prediction shape: `{"instances": [...]}` →
//!   `{"predictions": [...], "deployedModelId", "model", "modelVersionId"}`.
//!
//! A tensor of shape `[N, ...]` gives N rows: row `i` gets the field named
//! by the tensor, holding a scalar (shape `[N]`) or a (nested) list. The
//! rows' inference becomes output tensors again: one per key of a map
//! inference (`label`, `score`, `probabilities`), or one named by the
//! stage's `inference_field`.

use std::time::Duration;

use rill_core::serve::{RowResult, ServedModel};
use rill_core::{Record, Value};
use serde_json::{Map, Value as Json, json};

/// Which protocol a request spoke.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// KServe v2: the request's `id` (echoed) and the outputs it asked for.
    KServe {
        id: Option<Json>,
        outputs: Option<Vec<String>>,
    },
    /// Vertex AI `:predict`.
    Vertex,
}

/// A parsed request.
#[derive(Debug)]
pub struct Parsed {
    pub rows: Vec<Record>,
    pub shape: Shape,
    /// The deadline it asked for (`parameters.timeout_ms`, or Triton's
    /// `parameters.timeout` in microseconds).
    pub timeout: Option<Duration>,
}

/// A bad request: what is wrong, for the client (HTTP 400).
pub type BadRequest = String;

fn parse_json(body: &[u8]) -> Result<Json, BadRequest> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// The deadline a request's `parameters` ask for.
fn timeout_of(params: Option<&Json>) -> Result<Option<Duration>, BadRequest> {
    let Some(p) = params else {
        return Ok(None);
    };
    if let Some(ms) = p.get("timeout_ms") {
        return match ms.as_f64() {
            Some(ms) if ms > 0.0 && ms.is_finite() => Ok(Some(Duration::from_secs_f64(ms / 1e3))),
            _ => Err(format!(
                "`parameters.timeout_ms` must be a positive number of milliseconds, got {ms}"
            )),
        };
    }
    if let Some(us) = p.get("timeout") {
        return match us.as_f64() {
            Some(us) if us > 0.0 && us.is_finite() => Ok(Some(Duration::from_secs_f64(us / 1e6))),
            _ => Err(format!(
                "`parameters.timeout` must be a positive number of microseconds, got {us}"
            )),
        };
    }
    Ok(None)
}

/// A request body whose protocol is told by its keys (for the Zenoh
/// queryable): `inputs` is KServe, `instances` Vertex.
pub fn parse_any(body: &[u8], model: &ServedModel) -> Result<Parsed, BadRequest> {
    let v = parse_value(body)?;
    let has = |k: &str| matches!(&v, Value::Map(m) if m.contains_key(k));
    if has("inputs") {
        kserve_from_json(rill_core::json::value_to_json(&v), &[], model)
    } else if has("instances") {
        vertex_from_value(v, model)
    } else {
        Err("the body has neither `inputs` (KServe v2) nor `instances` (Vertex AI)".into())
    }
}

fn parse_value(body: &[u8]) -> Result<Value, BadRequest> {
    rill_core::json::parse_json_value(body).map_err(|e| match e {
        rill_core::json::JsonError::Syntax(s) => format!("the body is not valid JSON: {s}"),
        other => format!("the body: {other}"),
    })
}

/// A Vertex AI `:predict` body (read straight into rill's values: the
/// instances become the rows' fields without an intermediate JSON tree).
pub fn parse_vertex(body: &[u8], model: &ServedModel) -> Result<Parsed, BadRequest> {
    vertex_from_value(parse_value(body)?, model)
}

fn vertex_from_value(v: Value, model: &ServedModel) -> Result<Parsed, BadRequest> {
    let Value::Map(mut top) = v else {
        return Err("the body must be a JSON object: {\"instances\": [...]}".into());
    };
    for k in top.keys() {
        if k != "instances" && k != "parameters" {
            return Err(format!(
                "unknown key `{k}`: a prediction request has `instances` and `parameters`"
            ));
        }
    }
    let params = top.get("parameters").map(rill_core::json::value_to_json);
    let timeout = timeout_of(params.as_ref())?;
    let Some(Value::List(instances)) = top.shift_remove("instances") else {
        return Err("`instances` must be a list".into());
    };
    if instances.is_empty() {
        return Err("`instances` is empty".into());
    }
    let now = now_ms();
    let mut rows = Vec::with_capacity(instances.len());
    for (i, inst) in instances.into_iter().enumerate() {
        let fields = match inst {
            Value::Map(f) => f,
            other => {
                // a bare value is the model's one input
                let [input] = model.inputs.as_slice() else {
                    return Err(format!(
                        "instance {i} is not an object, and the model takes {} inputs ({}): send objects with those fields",
                        model.inputs.len(),
                        model.inputs.join(", ")
                    ));
                };
                let mut f = rill_core::Fields::with_capacity(1);
                f.insert(input.as_str().into(), other);
                f
            }
        };
        rows.push(Record {
            key: None,
            event_time: now,
            fields,
            window: None,
        });
    }
    Ok(Parsed {
        rows,
        shape: Shape::Vertex,
        timeout,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A KServe v2 infer body: the JSON header, then (when the request said
/// `Inference-Header-Content-Length`) the inputs' binary data.
pub fn parse_kserve(
    body: &[u8],
    header_len: Option<usize>,
    model: &ServedModel,
) -> Result<Parsed, BadRequest> {
    let (head, binary) = match header_len {
        None => (body, &[][..]),
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(format!(
                "Inference-Header-Content-Length is {n}, but the body has {} bytes",
                body.len()
            ));
        }
    };
    kserve_from_json(parse_json(head)?, binary, model)
}

/// A tensor element type of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    Bool,
    Int(usize, bool),
    Float(usize),
    Bytes,
}

fn dtype(s: &str) -> Option<Dtype> {
    Some(match s {
        "BOOL" => Dtype::Bool,
        "INT8" => Dtype::Int(1, true),
        "INT16" => Dtype::Int(2, true),
        "INT32" => Dtype::Int(4, true),
        "INT64" => Dtype::Int(8, true),
        "UINT8" => Dtype::Int(1, false),
        "UINT16" => Dtype::Int(2, false),
        "UINT32" => Dtype::Int(4, false),
        "UINT64" => Dtype::Int(8, false),
        "FP16" => Dtype::Float(2),
        "FP32" => Dtype::Float(4),
        "FP64" => Dtype::Float(8),
        "BYTES" => Dtype::Bytes,
        _ => return None,
    })
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let e = i32::from((bits >> 10) & 0x1f);
    let m = f64::from(bits & 0x3ff);
    sign * match e {
        0 => m * 2f64.powi(-24),
        31 if m == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + m / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Decodes `n` elements of `t` from little-endian `b`.
fn decode_binary(name: &str, t: Dtype, b: &[u8], n: usize) -> Result<Vec<Value>, BadRequest> {
    let width = match t {
        Dtype::Bool => 1,
        Dtype::Int(w, _) | Dtype::Float(w) => w,
        Dtype::Bytes => {
            let mut out = Vec::with_capacity(n);
            let mut at = 0;
            while at < b.len() {
                let len = b
                    .get(at..at + 4)
                    .map(|l| u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize)
                    .ok_or_else(|| format!("input `{name}`: BYTES data ends inside a length"))?;
                let s = b
                    .get(at + 4..at + 4 + len)
                    .ok_or_else(|| format!("input `{name}`: BYTES data ends inside an element"))?;
                out.push(match std::str::from_utf8(s) {
                    Ok(s) => Value::String(s.into()),
                    Err(_) => Value::Bytes(s.to_vec()),
                });
                at += 4 + len;
            }
            if out.len() != n {
                return Err(format!(
                    "input `{name}`: the shape holds {n} elements, the binary data {}",
                    out.len()
                ));
            }
            return Ok(out);
        }
    };
    if b.len() != n * width {
        return Err(format!(
            "input `{name}`: {n} elements of {width} bytes need {} bytes of binary data, got {}",
            n * width,
            b.len()
        ));
    }
    Ok(b.chunks_exact(width)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..width].copy_from_slice(c);
            let u = u64::from_le_bytes(w);
            match t {
                Dtype::Bool => Value::Bool(c[0] != 0),
                Dtype::Int(_, false) => Value::Int(u as i64),
                Dtype::Int(w, true) => {
                    // sign-extend from `w` bytes
                    let shift = 64 - 8 * w as u32;
                    Value::Int(((u << shift) as i64) >> shift)
                }
                Dtype::Float(2) => Value::Float(f16_to_f64(u as u16)),
                Dtype::Float(4) => Value::Float(f64::from(f32::from_bits(u as u32))),
                Dtype::Float(_) => Value::Float(f64::from_bits(u)),
                Dtype::Bytes => unreachable!("handled above"),
            }
        })
        .collect())
}

/// Flattens `data` (flat or nested lists, row-major) into elements of `t`.
fn decode_json(name: &str, t: Dtype, data: &Json, out: &mut Vec<Value>) -> Result<(), BadRequest> {
    match data {
        Json::Array(items) => {
            for d in items {
                decode_json(name, t, d, out)?;
            }
            Ok(())
        }
        Json::Bool(b) if t == Dtype::Bool => {
            out.push(Value::Bool(*b));
            Ok(())
        }
        Json::Number(n) => {
            let v = match t {
                Dtype::Int(..) => match n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)) {
                    Some(i) => Value::Int(i),
                    None => {
                        return Err(format!(
                            "input `{name}` is an integer tensor, but holds {n}"
                        ));
                    }
                },
                Dtype::Float(_) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                Dtype::Bool => Value::Bool(n.as_f64() != Some(0.0)),
                Dtype::Bytes => Value::String(n.to_string().into()),
            };
            out.push(v);
            Ok(())
        }
        Json::String(s) if t == Dtype::Bytes => {
            out.push(Value::String(s.as_str().into()));
            Ok(())
        }
        other => Err(format!(
            "input `{name}`: {} is not an element of its datatype",
            crate::serve::protocol::short(other)
        )),
    }
}

pub(crate) fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}

/// Builds a row value of shape `dims` from `flat`.
fn nest(flat: &[Value], dims: &[usize]) -> Value {
    match dims {
        [] => flat.first().cloned().unwrap_or(Value::Null),
        [_] => Value::List(flat.to_vec()),
        [n, rest @ ..] => {
            let step: usize = rest.iter().product();
            Value::List(
                (0..*n)
                    .map(|i| nest(&flat[i * step..(i + 1) * step], rest))
                    .collect(),
            )
        }
    }
}

fn kserve_from_json(j: Json, binary: &[u8], model: &ServedModel) -> Result<Parsed, BadRequest> {
    let Json::Object(top) = j else {
        return Err("the body must be a JSON object: {\"inputs\": [...]}".into());
    };
    let timeout = timeout_of(top.get("parameters"))?;
    let id = top.get("id").cloned();
    let outputs = match top.get("outputs") {
        None | Some(Json::Null) => None,
        Some(Json::Array(o)) => Some(
            o.iter()
                .map(|x| {
                    x.get("name")
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| format!("output {} has no `name`", short(x)))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => return Err(format!("`outputs` must be a list, got {}", short(other))),
    };
    let Some(Json::Array(inputs)) = top.get("inputs") else {
        return Err("`inputs` must be a list of tensors".into());
    };
    if inputs.is_empty() {
        return Err("`inputs` is empty".into());
    }
    let mut rows_n: Option<(usize, String)> = None;
    let mut tensors: Vec<(String, Vec<usize>, Vec<Value>)> = Vec::new();
    let mut at = 0usize;
    for (k, inp) in inputs.iter().enumerate() {
        let name = inp
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("input {k} has no `name`"))?
            .to_owned();
        if !model.inputs.is_empty() && !model.inputs.contains(&name) {
            return Err(format!(
                "input `{name}` is not one of the model's inputs: {}",
                model.inputs.join(", ")
            ));
        }
        let shape: Vec<usize> = match inp.get("shape") {
            Some(Json::Array(s)) => s
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    format!("input `{name}`: `shape` must be a list of non-negative integers")
                })?,
            _ => return Err(format!("input `{name}` has no `shape`")),
        };
        let t_name = inp
            .get("datatype")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("input `{name}` has no `datatype`"))?;
        let t = dtype(t_name).ok_or_else(|| {
            format!("input `{name}`: unknown datatype `{t_name}` (BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BYTES)")
        })?;
        let count: usize = shape.iter().product();
        let bin = inp
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(Json::as_u64);
        let values = match (bin, inp.get("data")) {
            (Some(size), _) => {
                let size = size as usize;
                let b = binary.get(at..at + size).ok_or_else(|| {
                    format!(
                        "input `{name}` says {size} bytes of binary data, but the body has {} after the JSON",
                        binary.len().saturating_sub(at)
                    )
                })?;
                at += size;
                decode_binary(&name, t, b, count)?
            }
            (None, Some(d)) => {
                let mut v = Vec::with_capacity(count);
                decode_json(&name, t, d, &mut v)?;
                if v.len() != count {
                    return Err(format!(
                        "input `{name}`: shape {shape:?} holds {count} elements, `data` has {}",
                        v.len()
                    ));
                }
                v
            }
            (None, None) => return Err(format!("input `{name}` has no `data`")),
        };
        let n = shape.first().copied().unwrap_or(1);
        match &rows_n {
            Some((m, first)) if *m != n => {
                return Err(format!(
                    "input `{name}` has {n} rows (its first dimension), input `{first}` has {m}"
                ));
            }
            Some(_) => {}
            None => rows_n = Some((n, name.clone())),
        }
        tensors.push((name, shape, values));
    }
    if at != binary.len() {
        return Err(format!(
            "the body has {} bytes of binary data that no input claims",
            binary.len() - at
        ));
    }
    let n = rows_n.map_or(0, |(n, _)| n);
    if n == 0 {
        return Err("the inputs have no rows (their first dimension is 0)".into());
    }
    let now = now_ms();
    let mut rows: Vec<Record> = (0..n)
        .map(|_| Record {
            key: None,
            event_time: now,
            fields: rill_core::Fields::default(),
            window: None,
        })
        .collect();
    for (name, shape, values) in tensors {
        let dims = if shape.len() > 1 {
            &shape[1..]
        } else {
            &[][..]
        };
        let step: usize = dims.iter().product();
        for (i, row) in rows.iter_mut().enumerate() {
            let v = nest(&values[i * step..(i + 1) * step], dims);
            row.fields.insert(name.as_str().into(), v);
        }
    }
    Ok(Parsed {
        rows,
        shape: Shape::KServe { id, outputs },
        timeout,
    })
}

/// A row's failure, for the client: which row and why (HTTP 400).
pub fn failed_row(results: &[RowResult], what: &str) -> Option<String> {
    results.iter().enumerate().find_map(|(i, r)| match r {
        Err(e) => Some(format!("{what} {i}: {e}")),
        Ok(_) => None,
    })
}

/// The id and version the rows were answered with.
fn ids(rows: &[&Record], model: &ServedModel) -> (String, String) {
    let get = |f: &str, dflt: &str| {
        rows.first()
            .and_then(|r| r.get(f))
            .and_then(Value::as_str)
            .unwrap_or(dflt)
            .to_owned()
    };
    (
        get("model_id", &model.name),
        get("model_version", &model.version),
    )
}

/// The Vertex AI response to answered rows.
pub fn vertex_response(rows: &[&Record], model: &ServedModel, stage: &str) -> Json {
    let (id, version) = ids(rows, model);
    let predictions: Vec<Json> = rows
        .iter()
        .map(|r| {
            r.get(&model.output)
                .map(rill_core::json::value_to_json)
                .unwrap_or(Json::Null)
        })
        .collect();
    json!({
        "predictions": predictions,
        "deployedModelId": stage,
        "model": id,
        "modelDisplayName": model.name,
        "modelVersionId": version,
    })
}

/// An output tensor from one value per row: its datatype, shape and flat
/// data; `None` when the values are not one rectangular tensor.
fn tensor(name: &str, vals: &[Json]) -> Json {
    fn dims(v: &Json) -> Vec<usize> {
        match v {
            Json::Array(a) => {
                let mut d = vec![a.len()];
                if let Some(f) = a.first() {
                    d.extend(dims(f));
                }
                d
            }
            _ => Vec::new(),
        }
    }
    fn flat<'a>(v: &'a Json, want: &[usize], out: &mut Vec<&'a Json>) -> bool {
        match (v, want) {
            (Json::Array(a), [n, rest @ ..]) => {
                a.len() == *n && a.iter().all(|x| flat(x, rest, out))
            }
            (Json::Array(_), []) => false,
            (_, []) => {
                out.push(v);
                true
            }
            _ => false,
        }
    }
    let inner = vals.first().map(dims).unwrap_or_default();
    let mut leaves = Vec::new();
    let rect = vals.iter().all(|v| flat(v, &inner, &mut leaves));
    let kind = if !rect {
        None
    } else if leaves.iter().all(|l| l.is_i64() || l.is_u64()) {
        Some("INT64")
    } else if leaves.iter().all(|l| l.is_number()) {
        Some("FP64")
    } else if leaves.iter().all(|l| l.is_boolean()) {
        Some("BOOL")
    } else if leaves.iter().all(|l| l.is_string()) {
        Some("BYTES")
    } else {
        None
    };
    let n = vals.len();
    match kind {
        Some(k) => {
            let mut shape = vec![n];
            shape.extend(inner);
            json!({"name": name, "datatype": k, "shape": shape, "data": leaves})
        }
        // ragged or mixed: each row's value as JSON text
        None => json!({
            "name": name,
            "datatype": "BYTES",
            "shape": [n],
            "data": vals.iter().map(|v| Json::String(v.to_string())).collect::<Vec<_>>(),
            "parameters": {"content_type": "application/json"},
        }),
    }
}

/// The KServe v2 response to answered rows.
pub fn kserve_response(
    rows: &[&Record],
    model: &ServedModel,
    id: Option<&Json>,
    wanted: Option<&[String]>,
) -> Result<Json, BadRequest> {
    let (_, version) = ids(rows, model);
    let infs: Vec<Json> = rows
        .iter()
        .map(|r| {
            r.get(&model.output)
                .map(rill_core::json::value_to_json)
                .unwrap_or(Json::Null)
        })
        .collect();
    let mut outputs: Vec<Json> = Vec::new();
    if !infs.is_empty() && infs.iter().all(Json::is_object) {
        let keys: Vec<String> = infs[0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            let vals: Vec<Json> = infs.iter().map(|o| o[&k].clone()).collect();
            outputs.push(tensor(&k, &vals));
        }
    } else {
        outputs.push(tensor(&model.output, &infs));
    }
    if let Some(w) = wanted {
        let names: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
        if let Some(bad) = w.iter().find(|x| !names.contains(&x.as_str())) {
            return Err(format!(
                "the model has no output `{bad}`; its outputs: {}",
                names.join(", ")
            ));
        }
        outputs.retain(|o| o["name"].as_str().is_some_and(|n| w.iter().any(|x| x == n)));
    }
    let mut r = Map::new();
    r.insert("model_name".into(), Json::String(model.name.clone()));
    r.insert("model_version".into(), Json::String(version));
    if let Some(id) = id {
        r.insert("id".into(), id.clone());
    }
    r.insert("outputs".into(), Json::Array(outputs));
    Ok(Json::Object(r))
}

/// KServe model metadata.
pub fn kserve_metadata(model: &ServedModel) -> Json {
    json!({
        "name": model.name,
        "versions": [model.version],
        "platform": "rill_burn",
        "inputs": model.inputs.iter().map(|i| json!({"name": i, "datatype": "FP32", "shape": [-1]})).collect::<Vec<_>>(),
        "outputs": [{"name": model.output, "datatype": "BYTES", "shape": [-1]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ServedModel {
        ServedModel {
            name: "classify".into(),
            version: "1".into(),
            inputs: vec!["temp".into(), "vib".into()],
            output: "inference".into(),
        }
    }

    #[test]
    fn kserve_json_and_binary_inputs_give_the_same_rows() {
        let j = br#"{"id":"7","inputs":[
            {"name":"temp","shape":[2],"datatype":"FP32","data":[1.5,2.5]},
            {"name":"vib","shape":[2,2],"datatype":"INT64","data":[[1,2],[3,4]]}]}"#;
        let p = parse_kserve(j, None, &model()).unwrap();
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[1].get("temp"), Some(&Value::Float(2.5)));
        assert_eq!(
            p.rows[1].get("vib"),
            Some(&Value::List(vec![Value::Int(3), Value::Int(4)]))
        );
        assert_eq!(
            p.shape,
            Shape::KServe {
                id: Some(json!("7")),
                outputs: None
            }
        );
        // the same as tritonclient sends it: binary after the JSON header
        let head = br#"{"inputs":[
            {"name":"temp","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"vib","shape":[2,2],"datatype":"INT64","parameters":{"binary_data_size":32}}]}"#;
        let mut body = head.to_vec();
        for f in [1.5f32, 2.5] {
            body.extend(f.to_le_bytes());
        }
        for i in [1i64, 2, 3, 4] {
            body.extend(i.to_le_bytes());
        }
        let b = parse_kserve(&body, Some(head.len()), &model()).unwrap();
        assert_eq!(
            b.rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>(),
            p.rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn kserve_errors_name_the_input() {
        let m = model();
        let e = |b: &str| parse_kserve(b.as_bytes(), None, &m).unwrap_err();
        assert!(e("{").contains("not valid JSON"), "{}", e("{"));
        assert!(
            e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#)
                .contains("input `x` is not one of the model's inputs: temp, vib")
        );
        assert!(
            e(r#"{"inputs":[{"name":"temp","shape":[3],"datatype":"FP32","data":[1]}]}"#)
                .contains("holds 3 elements, `data` has 1")
        );
        assert!(
            e(r#"{"inputs":[{"name":"temp","shape":[1],"datatype":"FP8","data":[1]}]}"#)
                .contains("unknown datatype `FP8`")
        );
        assert!(
            e(
                r#"{"inputs":[{"name":"temp","shape":[1],"datatype":"FP32","data":[1]},
            {"name":"vib","shape":[2],"datatype":"FP32","data":[1,2]}]}"#
            )
            .contains("input `vib` has 2 rows")
        );
        assert!(
            e(r#"{"inputs":[{"name":"temp","shape":[1],"datatype":"INT32","data":[1.5]}]}"#)
                .contains("integer tensor")
        );
    }

    #[test]
    fn binary_decoding_sign_extends_and_reads_halves() {
        let v = decode_binary("x", Dtype::Int(2, true), &(-3i16).to_le_bytes(), 1).unwrap();
        assert_eq!(v, [Value::Int(-3)]);
        let v = decode_binary("x", Dtype::Float(2), &0x3c00u16.to_le_bytes(), 1).unwrap();
        assert_eq!(v, [Value::Float(1.0)]);
        let mut b = 2u32.to_le_bytes().to_vec();
        b.extend(b"hi");
        assert_eq!(
            decode_binary("x", Dtype::Bytes, &b, 1).unwrap(),
            [Value::String("hi".into())]
        );
    }

    #[test]
    fn vertex_instances_and_outputs() {
        let m = ServedModel {
            inputs: vec!["features".into()],
            ..model()
        };
        let p = parse_vertex(
            br#"{"instances":[[1,2],{"features":[3,4]}],"parameters":{"timeout_ms":250}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(p.timeout, Some(Duration::from_millis(250)));
        let list = |a, b| Some(Value::List(vec![Value::Int(a), Value::Int(b)]));
        assert_eq!(p.rows[0].get("features").cloned(), list(1, 2));
        assert_eq!(p.rows[1].get("features").cloned(), list(3, 4));
        let err = parse_vertex(br#"{"instances":[1]}"#, &model()).unwrap_err();
        assert!(err.contains("takes 2 inputs (temp, vib)"), "{err}");
        // a map inference becomes one tensor per key
        let r = Record::default().with(
            "inference",
            Value::Map(
                [
                    ("label".into(), Value::String("a".into())),
                    ("score".into(), Value::Float(0.5)),
                    (
                        "probabilities".into(),
                        Value::List(vec![Value::Float(0.5), Value::Float(0.5)]),
                    ),
                ]
                .into_iter()
                .collect(),
            ),
        );
        let k = kserve_response(&[&r, &r], &m, None, None).unwrap();
        let outs = k["outputs"].as_array().unwrap();
        assert_eq!(outs[0]["datatype"], "BYTES");
        assert_eq!(outs[1]["shape"], json!([2]));
        assert_eq!(outs[2]["shape"], json!([2, 2]));
        assert_eq!(outs[2]["data"], json!([0.5, 0.5, 0.5, 0.5]));
        let only = kserve_response(&[&r], &m, None, Some(&["score".into()])).unwrap();
        assert_eq!(only["outputs"].as_array().unwrap().len(), 1);
        assert!(kserve_response(&[&r], &m, None, Some(&["nope".into()])).is_err());
        let v = vertex_response(&[&r], &m, "stage");
        assert_eq!(v["predictions"][0]["label"], "a");
        assert_eq!(v["deployedModelId"], "stage");
    }
}
