//! The compact binary encoding used between stages and processes.
//!
//! Payloads are [postcard](https://docs.rs/postcard) (varint integers, no
//! field names) behind a two-byte header: the magic byte `0xB7` and the format
//! version. A reader refuses any other header instead of misreading it. The
//! exact layout of every message is documented in `docs/wire.md`.

use serde::{Serialize, de::DeserializeOwned};

/// First byte of every rill payload.
pub const MAGIC: u8 = 0xB7;
/// Version of the payload layout; bumped on any incompatible change.
pub const VERSION: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("not a rill payload (first bytes {0:02x?})")]
    BadHeader(Vec<u8>),
    #[error("rill payload version {found}, this build reads version {VERSION}")]
    Version { found: u8 },
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("corrupt payload: {0}")]
    Decode(String),
}

/// Encodes `value` with the rill header.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let out = vec![MAGIC, VERSION];
    postcard::to_extend(value, out).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a payload made by [`encode`]: all of it (bytes after the value
/// make the payload something else, not a rill message with a tail).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    whole(body(bytes)?)
}

/// Decodes a postcard value that fills `bytes` exactly.
pub fn whole<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    crate::limits::take_hit();
    let (v, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| CodecError::Decode(crate::limits::take_hit().unwrap_or(e.to_string())))?;
    if !rest.is_empty() {
        return Err(CodecError::Decode(format!(
            "{} bytes follow the end of the message",
            rest.len()
        )));
    }
    Ok(v)
}

/// The postcard body of a payload made by [`encode`], after its header.
pub fn body(bytes: &[u8]) -> Result<&[u8], CodecError> {
    match bytes {
        [MAGIC, VERSION, rest @ ..] => Ok(rest),
        [MAGIC, v, ..] => Err(CodecError::Version { found: *v }),
        _ => Err(CodecError::BadHeader(
            bytes.iter().take(4).copied().collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Record, Tensor, TensorData, Value};
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            // NaN != NaN: compare finite floats; NaN is covered below
            (-1e300f64..1e300).prop_map(Value::Float),
            ".{0,40}".prop_map(|s: String| Value::String(s.into())),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
            tensor().prop_map(|t| Value::Tensor(Box::new(t))),
        ]
    }

    fn tensor() -> impl Strategy<Value = Tensor> {
        proptest::collection::vec(0usize..4, 0..3).prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            prop_oneof![
                proptest::collection::vec(-1e6f32..1e6, n).prop_map(TensorData::F32),
                proptest::collection::vec(-1e6f64..1e6, n).prop_map(TensorData::F64),
                proptest::collection::vec(any::<i64>(), n).prop_map(TensorData::I64),
                proptest::collection::vec(any::<u8>(), n).prop_map(TensorData::U8),
            ]
            .prop_map(move |d| Tensor::new(shape.clone(), d).expect("shape matches"))
        })
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                proptest::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|kv| Value::Map(
                    kv.into_iter().map(|(k, v)| (k.into(), v)).collect()
                )),
            ]
        })
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of("[a-z0-9]{0,40}"),
            any::<i64>(),
            proptest::collection::vec(("[a-z_]{1,30}", value()), 0..6),
            proptest::option::of((any::<i64>(), any::<i64>())),
        )
            .prop_map(|(key, event_time, kv, window)| Record {
                key: key.map(Into::into),
                event_time,
                fields: kv.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                window: window.map(|(start, end)| crate::window::Window { start, end }),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(batch in proptest::collection::vec(record(), 0..8)) {
            let bytes = encode(&batch).unwrap();
            let back: Vec<Record> = decode(&bytes).unwrap();
            prop_assert_eq!(back, batch);
        }

        #[test]
        fn json_round_trip(r in record()) {
            let line = crate::json::record_to_json_line(&r);
            let fields = crate::json::parse_json_line(&line).unwrap();
            prop_assert_eq!(fields, r.fields);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Vec<Record>>(&bytes);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // a list in a list ... 100,000 deep (200 KB), as a hostile peer
        // would send it: variant 6 (list) of length 1, then null
        let mut bytes = vec![MAGIC, VERSION];
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[6, 1]);
        }
        bytes.push(0);
        let e = decode::<Value>(&bytes).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 128 levels"), "{e}");
        // maps too: variant 7, one entry named "a"
        let mut bytes = vec![MAGIC, VERSION];
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[7, 1, 1, b'a']);
        }
        bytes.push(0);
        assert!(decode::<Value>(&bytes).is_err());
        // 100 deep is fine
        let mut v = Value::Null;
        for _ in 0..100 {
            v = Value::List(vec![v]);
        }
        assert_eq!(decode::<Value>(&encode(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn a_payload_with_a_tail_is_not_a_message() {
        let mut bytes = encode(&Vec::<Record>::new()).unwrap();
        assert_eq!(decode::<Vec<Record>>(&bytes).unwrap(), vec![]);
        bytes.extend_from_slice(b"and more");
        let e = decode::<Vec<Record>>(&bytes).unwrap_err().to_string();
        assert!(e.contains("8 bytes follow the end"), "{e}");
    }

    #[test]
    fn nan_survives_binary() {
        let bytes = encode(&Value::Float(f64::NAN)).unwrap();
        let Value::Float(f) = decode(&bytes).unwrap() else {
            panic!()
        };
        assert!(f.is_nan());
    }

    #[test]
    fn header_is_checked() {
        let mut bytes = encode(&Value::Int(3)).unwrap();
        bytes[1] = 99;
        assert_eq!(
            decode::<Value>(&bytes),
            Err(CodecError::Version { found: 99 })
        );
        assert!(matches!(
            decode::<Value>(&[1, 2, 3]),
            Err(CodecError::BadHeader(_))
        ));
    }

    #[test]
    fn decoded_tensor_is_validated() {
        // shape [3] with 2 elements, hand-built to bypass Tensor::new
        #[derive(serde::Serialize)]
        struct Raw {
            shape: Vec<usize>,
            data: TensorData,
        }
        #[derive(serde::Serialize)]
        enum V {
            _N,
            _B(bool),
            _I(i64),
            _F(f64),
            _S(String),
            _Y(Vec<u8>),
            _L(Vec<u8>),
            _M(Vec<u8>),
            T(Raw),
        }
        let bytes = encode(&V::T(Raw {
            shape: vec![3],
            data: TensorData::F32(vec![1.0, 2.0]),
        }))
        .unwrap();
        assert!(decode::<Value>(&bytes).is_err());
    }
}
