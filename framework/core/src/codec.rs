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

/// Decodes a batch of records (a postcard `Vec<Record>` filling `bytes`)
/// without serde's visitors: the same bytes give the same records, about
/// twice as fast. It takes the common case only: no tensors, lists and maps
/// nested at most [`FAST_DEPTH`] deep (within the limit). Anything else,
/// a malformed payload included, gives `None`, and the caller decodes with
/// [`whole`], which reads every case and says what is wrong.
pub fn records_fast(bytes: &[u8]) -> Option<Vec<crate::value::Record>> {
    let depth = FAST_DEPTH.min(crate::limits::get().max_depth.saturating_sub(1));
    let mut r = Reader { b: bytes, at: 0 };
    let n = r.len()?;
    // a hostile length prefix must not reserve gigabytes
    let mut out = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        let key = if r.option()? {
            Some(crate::value::Text::from(r.str()?))
        } else {
            None
        };
        let event_time = r.i64()?;
        let fields = r.fields(depth)?;
        let window = if r.option()? {
            Some(crate::window::Window {
                start: r.i64()?,
                end: r.i64()?,
            })
        } else {
            None
        };
        out.push(crate::value::Record {
            key,
            event_time,
            fields,
            window,
        });
    }
    (r.at == bytes.len()).then_some(out)
}

/// Appends `records` to `out` as postcard lays out a `Vec<Record>`,
/// without serde: the same bytes, faster. False, with `out` as it was,
/// when a record holds a tensor (the caller then encodes with serde).
pub fn write_records_fast(out: &mut Vec<u8>, records: &[crate::value::Record]) -> bool {
    let start = out.len();
    let mut w = Writer(out);
    w.u64(records.len() as u64);
    for r in records {
        match &r.key {
            Some(k) => {
                w.0.push(1);
                w.str(k);
            }
            None => w.0.push(0),
        }
        w.i64(r.event_time);
        if !w.fields(&r.fields) {
            out.truncate(start);
            return false;
        }
        match &r.window {
            Some(win) => {
                w.0.push(1);
                w.i64(win.start);
                w.i64(win.end);
            }
            None => w.0.push(0),
        }
    }
    true
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn fields(&mut self, f: &crate::value::Fields) -> bool {
        self.u64(f.len() as u64);
        for (k, v) in f.iter() {
            self.str(k);
            if !self.value(v) {
                return false;
            }
        }
        true
    }
    fn value(&mut self, v: &crate::value::Value) -> bool {
        use crate::value::Value;
        match v {
            Value::Null => self.0.push(0),
            Value::Bool(b) => self.0.extend_from_slice(&[1, u8::from(*b)]),
            Value::Int(i) => {
                self.0.push(2);
                self.i64(*i);
            }
            Value::Float(x) => {
                self.0.push(3);
                self.0.extend_from_slice(&x.to_le_bytes());
            }
            Value::String(t) => {
                self.0.push(4);
                self.str(t);
            }
            Value::Bytes(b) => {
                self.0.push(5);
                self.u64(b.len() as u64);
                self.0.extend_from_slice(b);
            }
            Value::List(items) => {
                self.0.push(6);
                self.u64(items.len() as u64);
                for item in items {
                    if !self.value(item) {
                        return false;
                    }
                }
            }
            Value::Map(f) => {
                self.0.push(7);
                return self.fields(f);
            }
            Value::Tensor(_) => return false,
        }
        true
    }
}

/// How deep [`records_fast`] reads nested lists and maps (a record's own
/// fields count as one level).
pub const FAST_DEPTH: usize = 16;

/// Postcard's primitives, as serde's derive lays out rill's types.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    /// A varint of at most `max` bytes whose last byte holds at most
    /// `top` (postcard refuses longer or wider ones).
    fn varint(&mut self, max: usize, top: u8) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..max {
            let byte = self.byte()?;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (i + 1 < max || byte <= top).then_some(v);
            }
        }
        None
    }
    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }
    fn u32(&mut self) -> Option<u32> {
        self.varint(5, 0x0f).map(|v| v as u32)
    }
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
    fn i64(&mut self) -> Option<i64> {
        let u = self.u64()?;
        Some(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn option(&mut self) -> Option<bool> {
        self.bool()
    }
    fn fields(&mut self, depth: usize) -> Option<crate::value::Fields> {
        let depth = depth.checked_sub(1)?;
        let n = self.len()?;
        let mut f = crate::value::Fields::with_capacity(n.min(4096));
        for _ in 0..n {
            let name = crate::value::Name::from(self.str()?);
            let v = self.value(depth)?;
            f.insert(name, v);
        }
        Some(f)
    }
    fn value(&mut self, depth: usize) -> Option<crate::value::Value> {
        use crate::value::Value;
        Some(match self.u32()? {
            0 => Value::Null,
            1 => Value::Bool(self.bool()?),
            2 => Value::Int(self.i64()?),
            3 => Value::Float(f64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            4 => Value::String(crate::value::Text::from(self.str()?)),
            5 => {
                let n = self.len()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            6 => {
                let depth = depth.checked_sub(1)?;
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(self.b.len() - self.at));
                for _ in 0..n {
                    v.push(self.value(depth)?);
                }
                Value::List(v)
            }
            7 => Value::Map(self.fields(depth)?),
            // a tensor (or no value at all): the serde path
            _ => return None,
        })
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
        /// The fast reader gives what serde gives, or leaves it to serde.
        #[test]
        fn the_fast_reader_agrees_with_serde(batch in proptest::collection::vec(record(), 0..8)) {
            let bytes = encode(&batch).unwrap();
            let body = body(&bytes).unwrap();
            let tensors = format!("{:?}", batch).contains("Tensor");
            match records_fast(body) {
                Some(fast) => prop_assert_eq!(fast, batch),
                // only tensors (at any depth) are left to serde here
                None => prop_assert!(tensors, "the fast reader refused a batch without tensors"),
            }
        }

        /// On any bytes, what the fast reader accepts serde decodes the same.
        #[test]
        fn the_fast_reader_accepts_nothing_serde_refuses(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Some(fast) = records_fast(&bytes) {
                let slow: Vec<Record> = whole(&bytes).unwrap();
                // (compared encoded: a NaN is not equal to itself)
                prop_assert_eq!(encode(&fast).unwrap(), encode(&slow).unwrap());
            }
        }

        /// The fast writer writes what serde writes, or leaves it to serde.
        #[test]
        fn the_fast_writer_writes_what_serde_writes(batch in proptest::collection::vec(record(), 0..8)) {
            let slow = postcard::to_allocvec(&batch).unwrap();
            let mut fast = vec![9u8];
            if write_records_fast(&mut fast, &batch) {
                prop_assert_eq!(&fast[1..], &slow[..]);
            } else {
                prop_assert_eq!(fast, vec![9u8]);
                let tensors = format!("{:?}", batch).contains("Tensor");
                prop_assert!(tensors, "the fast writer refused a batch without tensors");
            }
        }

        /// The same on valid batches with a byte changed or cut short.
        #[test]
        fn the_fast_reader_agrees_on_damaged_batches(
            batch in proptest::collection::vec(record(), 1..4),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let bytes = encode(&batch).unwrap();
            let mut body = body(&bytes).unwrap().to_vec();
            let i = at.index(body.len());
            if cut {
                body.truncate(i);
            } else {
                body[i] = byte;
            }
            if let Some(fast) = records_fast(&body) {
                let slow: Result<Vec<Record>, _> = whole(&body);
                prop_assert!(slow.is_ok(), "the fast reader took what serde refuses: {:?}", slow);
                prop_assert_eq!(encode(&fast).unwrap(), encode(&slow.unwrap()).unwrap());
            }
        }

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
