//! `ReadFromZenoh` / `WriteToZenoh`: any Zenoh key in or out.
//!
//! Payload formats:
//! - `rill`: rill's binary messages (`docs/wire.md`), e.g. another
//!   pipeline's stage output `rill/<pipeline>/<stage>/out`;
//! - `json`: one JSON object per message;
//! - `raw` (read only): any bytes, as `{payload: bytes, key_expr: str}`;
//! - `auto` (read, the default): rill, else JSON, else raw.
//!
//! `ReadFromZenoh` is unbounded unless `max_records` is set. Messages that
//! arrive faster than the pipeline takes them wait in a buffer of
//! `buffer` records; when it is full the oldest are dropped, counted and
//! logged (sensor data: latest wins).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill_core::json::record_to_json_line;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Sink, Source,
    SourceStatus,
};
use rill_core::wire::{DataMsg, ProducerId, decode_data, encode_data};
use rill_core::{Fields, Record, Value};
use serde::Deserialize;
use tracing::warn;
use zenoh::Wait;

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Auto,
    Rill,
    Json,
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromZenoh {
    /// Key expression to subscribe to (wildcards allowed).
    pub key: String,
    #[serde(default)]
    pub format: Format,
    /// End after this many records (unbounded when absent).
    pub max_records: Option<u64>,
    /// Records buffered before the oldest are dropped.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_buffer() -> usize {
    10_000
}

fn session(ctx: &BuildContext<'_>) -> Result<zenoh::Session, NodeError> {
    ctx.extensions
        .get::<zenoh::Session>()
        .cloned()
        .ok_or_else(|| NodeError::failed("no Zenoh session: this node runs inside `rill run`"))
}

fn check_key(key: &str) -> Result<(), ConfigError> {
    zenoh::key_expr::KeyExpr::try_from(key.to_owned())
        .map(|_| ())
        .map_err(|e| {
            ConfigError::at(
                "key",
                format!("`key` {key:?} is not a valid Zenoh key expression: {e}"),
            )
        })
}

impl NodeConfig for ReadFromZenoh {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn unbounded(&self) -> bool {
        self.max_records.is_none()
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_key(&self.key)?;
        if self.buffer == 0 {
            return Err(ConfigError::at("buffer", "`buffer` must be at least 1"));
        }
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let session = session(ctx)?;
        let queue: Arc<Mutex<Buffer>> = Arc::default();
        let q = queue.clone();
        let format = self.format;
        let cap = self.buffer;
        let sub = session
            .declare_subscriber(self.key.clone())
            .callback(move |sample| {
                let recs = decode(
                    format,
                    sample.key_expr().as_str(),
                    &sample.payload().to_bytes(),
                );
                let mut b = q.lock().unwrap();
                for r in recs {
                    if b.records.len() >= cap {
                        b.records.pop_front();
                        b.dropped += 1;
                    }
                    b.records.push_back(r);
                }
            })
            .wait()
            .map_err(|e| NodeError::failed(format!("cannot subscribe to {}: {e}", self.key)))?;
        Ok(Node::Source(Box::new(ZenohSource {
            _sub: sub,
            queue,
            left: self.max_records,
            reported_drops: 0,
            key: self.key.clone(),
        })))
    }
}

#[derive(Default)]
struct Buffer {
    records: VecDeque<Result<Record, (Record, String)>>,
    dropped: u64,
}

/// Decodes one payload into records (or failures, with the raw payload).
fn decode(format: Format, key: &str, bytes: &[u8]) -> Vec<Result<Record, (Record, String)>> {
    let max = rill_core::limits::get().max_message_bytes;
    if bytes.len() > max {
        // not kept: a dead letter that says what came
        let mut f = Fields::default();
        f.insert("key_expr".into(), Value::String(key.into()));
        f.insert("bytes".into(), Value::Int(bytes.len() as i64));
        return vec![Err((
            Record::new(f),
            format!(
                "{key}: a payload of {} bytes, more than the limit of {max} (RILL_MAX_MESSAGE_BYTES sets another)",
                bytes.len()
            ),
        ))];
    }
    let raw = || {
        let mut f = Fields::default();
        f.insert("payload".into(), Value::Bytes(bytes.to_vec()));
        f.insert("key_expr".into(), Value::String(key.into()));
        Record::new(f)
    };
    let as_rill = || match decode_data(bytes) {
        Ok(DataMsg::Batch { records, .. }) => Some(records),
        Ok(DataMsg::End { .. } | DataMsg::Gone { .. } | DataMsg::Watermark { .. }) => {
            Some(Vec::new())
        }
        Err(_) => rill_core::codec::decode::<Vec<Record>>(bytes).ok(),
    };
    let as_json = || rill_core::json::parse_json_bytes(bytes).map_err(|e| e.to_string());
    match format {
        Format::Rill => match as_rill() {
            Some(v) => v.into_iter().map(Ok).collect(),
            None => vec![Err((raw(), format!("{key}: not a rill message")))],
        },
        Format::Json => match as_json() {
            Ok(f) => vec![Ok(Record::new(f))],
            Err(e) => vec![Err((raw(), format!("{key}: {e}")))],
        },
        Format::Raw => vec![Ok(raw())],
        Format::Auto => {
            if let Some(v) = as_rill() {
                v.into_iter().map(Ok).collect()
            } else if let Ok(f) = as_json() {
                vec![Ok(Record::new(f))]
            } else {
                vec![Ok(raw())]
            }
        }
    }
}

struct ZenohSource {
    _sub: zenoh::pubsub::Subscriber<()>,
    queue: Arc<Mutex<Buffer>>,
    left: Option<u64>,
    reported_drops: u64,
    key: String,
}

impl Source for ZenohSource {
    fn deterministic(&self) -> bool {
        false
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        if self.left == Some(0) {
            return Ok(SourceStatus::Done);
        }
        let mut b = self.queue.lock().unwrap();
        if b.dropped > self.reported_drops {
            warn!(key = %self.key, dropped = b.dropped - self.reported_drops, "ReadFromZenoh buffer full: dropped the oldest records");
            self.reported_drops = b.dropped;
        }
        let n = max.min(self.left.unwrap_or(u64::MAX).min(usize::MAX as u64) as usize);
        let mut taken = 0;
        while taken < n {
            let Some(item) = b.records.pop_front() else {
                break;
            };
            taken += 1;
            match item {
                Ok(r) => out.emit(r),
                Err((r, msg)) => out.fail(r, msg),
            }
        }
        if let Some(l) = &mut self.left {
            *l -= taken as u64;
            if *l == 0 {
                return Ok(SourceStatus::Done);
            }
        }
        Ok(if taken == 0 {
            SourceStatus::Wait(Duration::from_millis(2))
        } else {
            SourceStatus::More
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToZenoh {
    pub key: String,
    /// `json` (one message per record) or `rill` (one message per batch,
    /// with sequence numbers a consumer can deduplicate by).
    #[serde(default = "json_format")]
    pub format: Format,
    /// Wait at start (up to this long) until some subscriber matches the
    /// key, so a feed does not publish into the void before its reader is
    /// connected; it goes on after that with a warning.
    pub wait_for_subscriber: Option<rill_core::units::Dur>,
}

fn json_format() -> Format {
    Format::Json
}

impl NodeConfig for WriteToZenoh {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), ConfigError> {
        check_key(&self.key)?;
        if self.key.contains(['*', '$']) {
            return Err(ConfigError::at(
                "key",
                format!(
                    "`key` {:?} must be a concrete key, without wildcards",
                    self.key
                ),
            ));
        }
        match self.format {
            Format::Json | Format::Rill => Ok(()),
            other => Err(ConfigError::at(
                "format",
                format!("`format: {other:?}` cannot be written: use `json` or `rill`"),
            )),
        }
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let session = session(ctx)?;
        let publisher = session
            .declare_publisher(self.key.clone())
            .congestion_control(zenoh::qos::CongestionControl::Block)
            .wait()
            .map_err(|e| NodeError::failed(format!("cannot publish on {}: {e}", self.key)))?;
        if let Some(limit) = self.wait_for_subscriber {
            let until = std::time::Instant::now() + limit.0;
            loop {
                let matched = publisher
                    .matching_status()
                    .wait()
                    .is_ok_and(|m| m.matching());
                if matched {
                    break;
                }
                if std::time::Instant::now() >= until {
                    warn!(key = %self.key, "no subscriber after {:?}: publishing anyway", limit.0);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // the stream's identity and numbering are committed with the
        // stage: a restarted sink sends again what followed its last commit
        // under the same numbers, so a consumer can drop what it has seen
        let epoch = match ctx.state.get_value("epoch")? {
            Some(Value::Int(e)) => e as u64,
            _ => {
                let e = fastrand_epoch();
                ctx.state.put_value("epoch", &Value::Int(e as i64))?;
                e
            }
        };
        let seq = match ctx.state.get_value("seq")? {
            Some(Value::Int(n)) if n >= 0 => n as u64,
            _ => 0,
        };
        Ok(Node::Sink(Box::new(ZenohSink {
            publisher,
            format: self.format,
            producer: ProducerId {
                stage: ctx.stage.to_owned(),
                output: None,
                epoch,
            },
            seq,
            state: ctx.state.clone(),
        })))
    }
}

fn fastrand_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

struct ZenohSink {
    publisher: zenoh::pubsub::Publisher<'static>,
    format: Format,
    producer: ProducerId,
    seq: u64,
    state: rill_core::state::KeyedState,
}

impl Sink for ZenohSink {
    fn write(&mut self, batch: Vec<Record>, _out: &mut Emitter) -> Result<(), NodeError> {
        let err = |e: zenoh::Error| NodeError::failed(format!("publish failed: {e}"));
        match self.format {
            Format::Rill => {
                let n = batch.len() as u64;
                let msg = DataMsg::Batch {
                    producer: self.producer.clone(),
                    first_seq: self.seq,
                    records: batch,
                };
                let bytes = encode_data(&msg).map_err(|e| NodeError::failed(e.to_string()))?;
                self.publisher.put(bytes).wait().map_err(err)?;
                self.seq += n;
            }
            _ => {
                for r in &batch {
                    self.publisher
                        .put(record_to_json_line(r))
                        .wait()
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        self.state.put_value("seq", &Value::Int(self.seq as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that start like an empty rill batch, then go on: before, the
    /// prefix decoded and the payload vanished (no record, no dead letter).
    fn lookalike() -> Vec<u8> {
        let mut b = encode_data(&DataMsg::Batch {
            producer: ProducerId {
                stage: "x".into(),
                output: None,
                epoch: 1,
            },
            first_seq: 0,
            records: vec![],
        })
        .unwrap();
        b.extend_from_slice(b"\x00\x01garbage");
        b
    }

    #[test]
    fn a_payload_that_only_starts_like_rill_is_not_lost() {
        let rill = decode(Format::Rill, "k", &lookalike());
        assert_eq!(rill.len(), 1);
        let (record, msg) = rill[0].as_ref().unwrap_err();
        assert!(msg.contains("not a rill message"), "{msg}");
        assert_eq!(
            record.get("payload"),
            Some(&Value::Bytes(lookalike())),
            "the dead letter keeps the bytes"
        );
        let auto = decode(Format::Auto, "k", &lookalike());
        assert_eq!(auto.len(), 1, "auto: a raw record");
        assert!(auto[0].is_ok());
        // a real empty batch is still nothing
        let real = &lookalike()[..lookalike().len() - 9];
        assert!(decode(Format::Rill, "k", real).is_empty());
    }

    #[test]
    fn a_payload_past_the_limit_is_a_dead_letter_not_kept() {
        let big = vec![b'x'; rill_core::limits::get().max_message_bytes + 1];
        let out = decode(Format::Raw, "k", &big);
        let (record, msg) = out[0].as_ref().unwrap_err();
        assert!(msg.contains("more than the limit"), "{msg}");
        assert_eq!(record.get("bytes"), Some(&Value::Int(big.len() as i64)));
        assert_eq!(record.get("payload"), None, "the bytes are not kept");
    }
}
