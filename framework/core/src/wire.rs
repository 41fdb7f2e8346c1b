//! The messages stages exchange over Zenoh (transport-independent: the
//! keys they travel on are the runtime's business). Layout: `docs/wire.md`.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::value::Record;

/// Who produced a stream: stage, output, and the producer's epoch (a random
/// number drawn each time the producing process starts, so a consumer can
/// tell a restarted producer from a late message of the old one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerId {
    pub stage: String,
    pub output: Option<String>,
    pub epoch: u64,
}

impl ProducerId {
    /// The main output of `stage`, in `epoch`.
    pub fn main(stage: &str, epoch: u64) -> ProducerId {
        ProducerId {
            stage: stage.to_owned(),
            output: None,
            epoch,
        }
    }
}

/// A message on a data key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataMsg {
    /// Records numbered `first_seq`, `first_seq + 1`, ...
    Batch {
        producer: ProducerId,
        first_seq: u64,
        records: Vec<Record>,
    },
    /// End of the stream: no record is numbered `seq` or higher. The end
    /// itself takes the number `seq`, so a consumer acknowledges it with
    /// `next = seq + 1`.
    End { producer: ProducerId, seq: u64 },
    /// The producer's answer to a `Resend` it cannot serve: `consumer`
    /// asked for records from `from`, but the producer holds only those
    /// from `low` (it dropped the rest once every consumer, `consumer`
    /// included, had acknowledged them). The consumer's state was reset or
    /// lost while the producer's was kept; neither can go on.
    Gone {
        producer: ProducerId,
        consumer: String,
        from: u64,
        low: u64,
    },
    /// The producer's watermark: no record it sends after this one has an
    /// event time at or below `time`, except late ones (ms since the epoch;
    /// see `docs/runtime-semantics.md`). It takes the number `seq`, like a
    /// record, so it is logged, resent and acknowledged in order with them.
    Watermark {
        producer: ProducerId,
        seq: u64,
        time: i64,
    },
}

impl DataMsg {
    pub fn producer(&self) -> &ProducerId {
        match self {
            DataMsg::Batch { producer, .. }
            | DataMsg::End { producer, .. }
            | DataMsg::Gone { producer, .. }
            | DataMsg::Watermark { producer, .. } => producer,
        }
    }
}

/// A message on a control key, from a consumer to a producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlMsg {
    /// The consumer has processed every number below `next` (and its
    /// outputs are in its own log).
    Ack {
        consumer: String,
        epoch: u64,
        next: u64,
    },
    /// The consumer wants everything from `from` again (it started, saw a
    /// gap, or restarted).
    Resend {
        consumer: String,
        epoch: u64,
        from: u64,
    },
}

pub fn encode_data(msg: &DataMsg) -> Result<Vec<u8>, CodecError> {
    if let DataMsg::Batch {
        producer,
        first_seq,
        records,
    } = msg
    {
        // the head with no records, whose last byte (the empty list's
        // length) the records then replace
        let mut out = codec::encode(&DataMsg::Batch {
            producer: producer.clone(),
            first_seq: *first_seq,
            records: Vec::new(),
        })?;
        out.pop();
        if codec::write_records_fast(&mut out, records) {
            return Ok(out);
        }
    }
    codec::encode(msg)
}

pub fn decode_data(bytes: &[u8]) -> Result<DataMsg, CodecError> {
    codec::decode(bytes)
}

/// A [`DataMsg`] read up to its records, which stay encoded: a subscriber
/// reads this much to number what arrived, and the stage that processes the
/// records decodes them with [`decode_records`] (on its own thread, where
/// they are also dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataHead {
    /// `count` records numbered from `first_seq`; they start at byte
    /// `records_at` of the payload.
    Batch {
        producer: ProducerId,
        first_seq: u64,
        count: u64,
        records_at: usize,
    },
    End {
        producer: ProducerId,
        seq: u64,
    },
    Gone {
        producer: ProducerId,
        consumer: String,
        from: u64,
        low: u64,
    },
    Watermark {
        producer: ProducerId,
        seq: u64,
        time: i64,
    },
}

/// The fields of [`DataMsg`] before the records, in the same layout.
#[derive(Deserialize)]
enum HeadWire {
    Batch {
        producer: ProducerId,
        first_seq: u64,
    },
    End {
        producer: ProducerId,
        seq: u64,
    },
    Gone {
        producer: ProducerId,
        consumer: String,
        from: u64,
        low: u64,
    },
    Watermark {
        producer: ProducerId,
        seq: u64,
        time: i64,
    },
}

/// Reads a data message's head without decoding its records.
pub fn decode_data_head(bytes: &[u8]) -> Result<DataHead, CodecError> {
    let corrupt = |e: postcard::Error| CodecError::Decode(e.to_string());
    let body = codec::body(bytes)?;
    let (head, rest) = postcard::take_from_bytes::<HeadWire>(body).map_err(corrupt)?;
    if !matches!(head, HeadWire::Batch { .. }) && !rest.is_empty() {
        return Err(CodecError::Decode(format!(
            "{} bytes follow the end of the message",
            rest.len()
        )));
    }
    Ok(match head {
        HeadWire::Batch {
            producer,
            first_seq,
        } => {
            // the records' sequence starts with its length
            let (count, _) = postcard::take_from_bytes::<u64>(rest).map_err(corrupt)?;
            DataHead::Batch {
                producer,
                first_seq,
                count,
                records_at: bytes.len() - rest.len(),
            }
        }
        HeadWire::End { producer, seq } => DataHead::End { producer, seq },
        HeadWire::Gone {
            producer,
            consumer,
            from,
            low,
        } => DataHead::Gone {
            producer,
            consumer,
            from,
            low,
        },
        HeadWire::Watermark {
            producer,
            seq,
            time,
        } => DataHead::Watermark {
            producer,
            seq,
            time,
        },
    })
}

/// Decodes the records of a data message whose head says they start at
/// `records_at`.
pub fn decode_records(bytes: &[u8], records_at: usize) -> Result<Vec<Record>, CodecError> {
    let rest = bytes.get(records_at..).ok_or_else(|| {
        CodecError::Decode(format!(
            "records at byte {records_at} of a {}-byte payload",
            bytes.len()
        ))
    })?;
    match codec::records_fast(rest) {
        Some(records) => Ok(records),
        None => codec::whole(rest),
    }
}

pub fn encode_ctl(msg: &CtlMsg) -> Result<Vec<u8>, CodecError> {
    codec::encode(msg)
}

pub fn decode_ctl(bytes: &[u8]) -> Result<CtlMsg, CodecError> {
    codec::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn producer() -> ProducerId {
        ProducerId {
            stage: "parse".into(),
            output: Some("errors".into()),
            epoch: 7,
        }
    }

    #[test]
    fn a_head_numbers_a_batch_and_its_records_decode_later() {
        let records: Vec<Record> = (0..300)
            .map(|i| {
                Record::default()
                    .with_key(format!("k{i}"))
                    .with("i", Value::Int(i))
            })
            .collect();
        let msg = DataMsg::Batch {
            producer: producer(),
            first_seq: 1 << 40,
            records: records.clone(),
        };
        let bytes = encode_data(&msg).unwrap();
        let DataHead::Batch {
            producer: p,
            first_seq,
            count,
            records_at,
        } = decode_data_head(&bytes).unwrap()
        else {
            panic!("a batch reads as a batch")
        };
        assert_eq!((p, first_seq, count), (producer(), 1 << 40, 300));
        assert_eq!(decode_records(&bytes, records_at).unwrap(), records);
        // an offset past the end is an error, not a panic
        assert!(decode_records(&bytes, bytes.len() + 5).is_err());
    }

    /// A batch written by the fast writer is byte for byte what serde
    /// writes, tensors (left to serde) or not.
    #[test]
    fn a_batch_encodes_as_serde_encodes_it() {
        let plain: Vec<Record> = (0..50)
            .map(|i| {
                Record::default()
                    .with_key(format!("k{i}"))
                    .with("i", Value::Int(i - 25))
                    .with("x", Value::List(vec![Value::Float(0.5), Value::Null]))
            })
            .collect();
        let tensor =
            crate::value::Tensor::new(vec![2], crate::value::TensorData::F32(vec![1.0, 2.0]))
                .unwrap();
        let mut with_tensor = plain.clone();
        with_tensor[7] = with_tensor[7]
            .clone()
            .with("t", Value::Tensor(Box::new(tensor)));
        for records in [plain, with_tensor, Vec::new()] {
            let msg = DataMsg::Batch {
                producer: producer(),
                first_seq: 300,
                records,
            };
            assert_eq!(encode_data(&msg).unwrap(), codec::encode(&msg).unwrap());
        }
    }

    #[test]
    fn a_head_reads_an_end_and_refuses_garbage() {
        let bytes = encode_data(&DataMsg::End {
            producer: producer(),
            seq: 42,
        })
        .unwrap();
        assert_eq!(
            decode_data_head(&bytes).unwrap(),
            DataHead::End {
                producer: producer(),
                seq: 42
            }
        );
        assert!(matches!(
            decode_data_head(&bytes[..bytes.len() - 1]),
            Err(CodecError::Decode(_))
        ));
        let gone = DataMsg::Gone {
            producer: producer(),
            consumer: "sink".into(),
            from: 0,
            low: 512,
        };
        assert_eq!(
            decode_data_head(&encode_data(&gone).unwrap()).unwrap(),
            DataHead::Gone {
                producer: producer(),
                consumer: "sink".into(),
                from: 0,
                low: 512
            }
        );
        let wm = DataMsg::Watermark {
            producer: producer(),
            seq: 9,
            time: -5,
        };
        assert_eq!(
            decode_data_head(&encode_data(&wm).unwrap()).unwrap(),
            DataHead::Watermark {
                producer: producer(),
                seq: 9,
                time: -5
            }
        );
        assert!(matches!(
            decode_data_head(b"not rill"),
            Err(CodecError::BadHeader(_))
        ));
    }
}
