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
}

impl DataMsg {
    pub fn producer(&self) -> &ProducerId {
        match self {
            DataMsg::Batch { producer, .. } | DataMsg::End { producer, .. } => producer,
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
    codec::encode(msg)
}

pub fn decode_data(bytes: &[u8]) -> Result<DataMsg, CodecError> {
    codec::decode(bytes)
}

pub fn encode_ctl(msg: &CtlMsg) -> Result<Vec<u8>, CodecError> {
    codec::encode(msg)
}

pub fn decode_ctl(bytes: &[u8]) -> Result<CtlMsg, CodecError> {
    codec::decode(bytes)
}
