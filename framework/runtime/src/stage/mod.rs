//! The stage actor: one per pipeline stage, under the [`crate::supervisor`].
//!
//! The actor owns the running node and its Zenoh subscriptions. What must
//! outlive a crash of the node (the output logs, the input positions, the
//! publishers and the metrics) lives in [`StageShared`], which the supervisor
//! hands to every incarnation of the stage.

mod actor;
mod build;
mod calls;
mod clock;
mod commit;
mod drive;
mod gather;
mod outputs;
mod shared;
mod source;
mod subscribe;

pub use actor::{Encoded, StageActor, StageArgs, StageMsg, StageState};
pub(crate) use build::{BuildError, build_node};
pub use outputs::dead_letter;
pub(crate) use shared::SetupError;
pub use shared::StageShared;
pub(crate) use shared::UNREACHABLE_WARN;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::atomic::Ordering::Relaxed;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rill_core::codec::CodecError;
use rill_core::node::{
    BuildContext, Emitter, Extensions, Failure, Node, NodeError, SourceStatus, Transform,
};
use rill_core::spec::{CheckpointInterval, Delivery, Stage};
use rill_core::state::{KeyedState, StateStore, WriteBatch};
use rill_core::{Fields, Record, Value};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use zenoh::Session;
use zenoh::bytes::ZBytes;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;

use crate::durable::{
    self, CLOCK_KEY, Committed, FINISHED_KEY, InputPos, OutputLog, SOURCE_KEY, SourcePos, input_key,
};
use crate::log::{Arrival, InCursor};
use crate::metrics::StageMetrics;
use crate::protocol::{
    CtlMsg, DataHead, DataMsg, ProducerId, alive_key, alive_keys, ctl_key, data_key, decode_ctl,
    decode_data_head, decode_records, encode_ctl, encode_data, ended_key, token_of_alive_key,
};
use crate::resume::Replay;
use clock::Clock;
use gather::{Admission, Gathered, InputState, Queued};

// the parts, for one another (each module `use super::*`)
use actor::Pending;
use calls::{Offload, call_node, check_threshold, retry_failures};
use drive::{advance_watermark, after_work, call_hook, drive, node_pending, queue_commit};
use source::poll_source;
use subscribe::subscribe;

/// How often a stage checks its timers.
const TICK: Duration = Duration::from_millis(25);
/// First resend timeout; doubles while no acknowledgement comes, up to the max.
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(2);
/// Least time between two resend requests of one input.
const RESEND_GAP: Duration = Duration::from_millis(50);

/// The epoch a consumer names before it has seen its producer's.
const NO_EPOCH: u64 = 0;

/// The error of a consumer whose producer dropped what it asks for.
fn gone_text(consumer: &str, producer: &str, input: &str, from: u64, low: u64) -> String {
    format!(
        "{BAD_INPUT}stage `{consumer}` asks for the records of `{input}` from {from} on, but `{producer}` holds only those from {low} on: it dropped the rest after `{consumer}` had acknowledged them, so `{consumer}`'s state was reset or lost while `{producer}`'s was kept. Run both again with --reset-state (in every process that runs one of them), or restore `{consumer}`'s state directory"
    )
}

/// The start of a stage error that no restart can mend (its input is not
/// what it was, a peer's state does not fit its own): the supervisor fails
/// the run at once, and the CLI exits 2.
pub const BAD_INPUT: &str = "bad input: ";

/// The start of the error of a stage whose share of failed records passed
/// its `error_handling.threshold`: the supervisor fails the run at once.
pub const THRESHOLD_EXCEEDED: &str = "error threshold exceeded";

/// The stop reason of a stage that finished its work.
pub const DONE: &str = "done";
/// The stop reason of a stage that committed and stopped on request.
pub const DRAINED: &str = "drained";
