//! The stage actor: one per pipeline stage, under the [`crate::supervisor`].
//!
//! The actor owns the running node and its Zenoh subscriptions. What must
//! outlive a crash of the node (the output logs, the input positions, the
//! publishers and the metrics) lives in [`StageShared`], which the supervisor
//! hands to every incarnation of the stage.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::atomic::Ordering::Relaxed;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rill_core::codec::CodecError;
use rill_core::node::{BuildContext, Emitter, Extensions, Failure, Node, NodeError, SourceStatus};
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
    self, EPOCH_KEY, FINISHED_KEY, InputPos, OutputLog, SOURCE_KEY, SourcePos, input_key,
};
use crate::log::{Arrival, InCursor};
use crate::metrics::StageMetrics;
use crate::protocol::{
    CtlMsg, DataHead, DataMsg, ProducerId, alive_key, alive_keys, ctl_key, data_key, decode_ctl,
    decode_data_head, decode_records, encode_ctl, encode_data, token_of_alive_key,
};
use crate::resume::Replay;

/// How often a stage checks its timers.
const TICK: Duration = Duration::from_millis(25);
/// First resend timeout; doubles while no acknowledgement comes, up to the max.
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(2);
/// Least time between two resend requests of one input.
const RESEND_GAP: Duration = Duration::from_millis(50);

/// One output of a stage.
pub(crate) struct OutPort {
    pub name: Option<String>,
    pub producer: ProducerId,
    pub publisher: Publisher<'static>,
    pub log: OutputLog<ZBytes>,
    pub window: u64,
    last_progress: Instant,
    rto: Duration,
}

/// One input of a stage.
pub(crate) struct InPort {
    pub label: String,
    pub data_key: String,
    pub producer_key: String,
    pub ctl: Publisher<'static>,
    /// What the subscriber has let through (shared with its callback).
    pub received: Arc<std::sync::Mutex<InCursor>>,
    /// Next number not yet processed, and the producer epoch it counts in.
    pub processed: u64,
    pub epoch: Option<u64>,
    pub ended: bool,
    /// The position of the last commit.
    pub committed: InputPos,
    /// A `best_effort` input: gaps are skipped, nothing is asked again.
    pub lossy: bool,
    /// The producer's tokens, (epoch, session) → still live (shared with
    /// the subscribers' callbacks): data of an epoch no live token
    /// announces is dropped.
    #[allow(clippy::type_complexity)]
    pub announced: Arc<std::sync::Mutex<std::collections::HashMap<(u64, String), bool>>>,
    last_resend: Option<Instant>,
}

/// The part of a stage that survives restarts of its actor: its store and
/// what it committed, its publishers and metrics. A new incarnation starts
/// from the last commit ([`StageShared::rollback`]).
pub struct StageShared {
    pub(crate) pipeline: String,
    pub(crate) stage: Stage,
    pub(crate) consumer_id: String,
    pub(crate) outputs: Vec<OutPort>,
    pub(crate) inputs: Vec<InPort>,
    pub(crate) metrics: Arc<StageMetrics>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) state: KeyedState,
    pub(crate) delivery: Delivery,
    ckpt: CheckpointInterval,
    /// The node built before the run started (taken by the first incarnation).
    pub(crate) prebuilt: std::sync::Mutex<Option<Node>>,
    /// What a source has emitted (and failed) so far, and what of it is
    /// committed: a restarted deterministic source seeks or skips past it.
    pub(crate) source: SourcePos,
    source_committed: SourcePos,
    pub(crate) finished_node: bool,
    finished_committed: bool,
    pub(crate) batch_size: usize,
    /// The node's dynamic batching, if it asks for it.
    batching: Option<rill_core::node::Batching>,
    /// The stage's compute pool (`resources.cpu_threads`).
    pub(crate) pool: Option<Arc<rayon::ThreadPool>>,
    /// Records consumed or produced since the last commit, and since when.
    dirty_records: u64,
    dirty_since: Option<Instant>,
    commit_queued: bool,
    /// The stage's dead-letter queue file (stages with `error_handling`).
    dlq: Option<crate::dlq::DlqFile>,
    /// The node is a source that cannot make its records again.
    unrepeatable_source: bool,
    _alive: Option<LivelinessToken>,
}

/// Loads the stage's epoch, or draws one for a new store.
fn load_epoch(store: &dyn StateStore) -> Result<u64, String> {
    match store.get(EPOCH_KEY).map_err(|e| e.to_string())? {
        Some(b) => Ok(u64::from_be_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| "the stage epoch is malformed".to_owned())?,
        )),
        None => {
            let epoch = fastrand::u64(..);
            let mut batch = WriteBatch::default();
            batch.put(EPOCH_KEY.to_vec(), epoch.to_be_bytes().to_vec());
            store.commit(batch).map_err(|e| e.to_string())?;
            store.flush().map_err(|e| e.to_string())?;
            Ok(epoch)
        }
    }
}

/// Why the shared part of a stage could not be set up.
#[derive(Debug)]
pub(crate) enum SetupError {
    /// The stored state is unusable (bad input: exit 2).
    Store(String),
    /// The stage's compute pool (`resources.cpu_threads`) did not start
    /// (the machine's trouble, not the state's: exit 1).
    Threads(String),
    Zenoh(zenoh::Error),
}

impl From<zenoh::Error> for SetupError {
    fn from(e: zenoh::Error) -> Self {
        SetupError::Zenoh(e)
    }
}

impl StageShared {
    /// Loads the stage's committed state from `store` and declares its
    /// publishers and liveliness token.
    pub(crate) async fn new(
        session: &Session,
        pipeline: &rill_core::spec::Pipeline,
        stage: &Stage,
        store: Arc<dyn StateStore>,
        metrics: Arc<StageMetrics>,
        state_root: &std::path::Path,
    ) -> Result<StageShared, SetupError> {
        let key = stage.key_name();
        let epoch = load_epoch(store.as_ref()).map_err(SetupError::Store)?;
        let mut outputs = Vec::new();
        let mut names: Vec<Option<String>> = Vec::new();
        if stage.kind != rill_core::NodeKind::Sink {
            names.push(None);
        }
        names.extend(stage.outputs.iter().cloned().map(Some));
        for name in names {
            let consumers: Vec<(String, u64)> = pipeline
                .consumers(&stage.name, name.as_deref())
                .into_iter()
                .map(|(c, i)| (c.key_name(), c.inputs[i].queue.size as u64))
                .collect();
            let window = consumers.iter().map(|(_, w)| *w).min().unwrap_or(u64::MAX);
            let log = OutputLog::load(store.as_ref(), name.as_deref(), consumers, |b| {
                ZBytes::from(b.to_vec())
            })
            .map_err(SetupError::Store)?;
            let publisher = session
                .declare_publisher(data_key(&pipeline.name, &key, name.as_deref()))
                .congestion_control(CongestionControl::Block)
                .await?;
            outputs.push(OutPort {
                producer: ProducerId {
                    stage: stage.name.clone(),
                    output: name.clone(),
                    epoch,
                },
                name,
                publisher,
                log,
                window,
                last_progress: Instant::now(),
                rto: RTO_MIN,
            });
        }
        let mut inputs = Vec::new();
        for inp in &stage.inputs {
            let producer = pipeline
                .stage(&inp.stage)
                .map(|s| s.key_name())
                .unwrap_or_default();
            let ctl = session
                .declare_publisher(ctl_key(&pipeline.name, &producer, inp.output.as_deref()))
                .congestion_control(CongestionControl::Block)
                .await?;
            let label = inp.to_string();
            let committed: InputPos = match store
                .get(&input_key(&label))
                .map_err(|e| SetupError::Store(e.to_string()))?
            {
                Some(b) => durable::decode(&format!("the position of input `{label}`"), &b)
                    .map_err(SetupError::Store)?,
                None => InputPos::default(),
            };
            inputs.push(InPort {
                label,
                data_key: data_key(&pipeline.name, &producer, inp.output.as_deref()),
                producer_key: producer,
                ctl,
                received: Arc::default(),
                processed: committed.next,
                epoch: committed.epoch,
                ended: committed.ended,
                committed,
                lossy: inp.delivery == Some(Delivery::BestEffort)
                    || pipeline.options.delivery == Delivery::BestEffort,
                announced: Arc::default(),
                last_resend: None,
            });
        }
        let source: SourcePos = match store
            .get(SOURCE_KEY)
            .map_err(|e| SetupError::Store(e.to_string()))?
        {
            Some(b) => durable::decode("the source position", &b).map_err(SetupError::Store)?,
            None => SourcePos::default(),
        };
        let finished = store
            .get(FINISHED_KEY)
            .map_err(|e| SetupError::Store(e.to_string()))?
            .is_some();
        let dlq = match &stage.error_output {
            None => None,
            Some(_) => {
                let committed = store
                    .get(crate::dlq::DLQ_LEN_KEY)
                    .map_err(|e| SetupError::Store(e.to_string()))?
                    .map(|b| {
                        b.as_slice()
                            .try_into()
                            .map(u64::from_be_bytes)
                            .map_err(|_| "the dead-letter queue length is malformed".to_owned())
                    })
                    .transpose()
                    .map_err(SetupError::Store)?;
                let path = crate::dlq::dlq_path(state_root, &pipeline.name, &key);
                let d = crate::dlq::DlqFile::open(path, committed).map_err(SetupError::Store)?;
                if committed.is_none() {
                    // a new run adopts the queue as it is, durably, before
                    // it appends: letters it writes and does not commit are
                    // then cut off after a crash, not adopted too
                    let mut batch = WriteBatch::default();
                    batch.put(
                        crate::dlq::DLQ_LEN_KEY.to_vec(),
                        d.committed_len().to_be_bytes().to_vec(),
                    );
                    store
                        .commit(batch)
                        .and_then(|_| store.flush())
                        .map_err(|e| SetupError::Store(e.to_string()))?;
                }
                Some(d)
            }
        };
        let alive = session
            .liveliness()
            .declare_token(alive_key(
                &pipeline.name,
                &key,
                epoch,
                &session.zid().to_string(),
            ))
            .await
            .ok();
        Ok(StageShared {
            pipeline: pipeline.name.clone(),
            consumer_id: key,
            stage: stage.clone(),
            outputs,
            inputs,
            metrics,
            state: KeyedState::new(store.clone()),
            store,
            delivery: pipeline.options.delivery,
            ckpt: pipeline.options.checkpoint_interval,
            prebuilt: std::sync::Mutex::new(None),
            source,
            source_committed: source,
            finished_node: finished,
            finished_committed: finished,
            batch_size: pipeline.options.batch_size,
            // with N instances the stage gathers N batches per call, and the
            // node runs them side by side
            batching: stage.node.batching().map(|b| rill_core::node::Batching {
                max_batch_size: b.max_batch_size * stage.resources.instances.unwrap_or(1).max(1),
                ..b
            }),
            pool: match stage.resources.cpu_threads {
                None => None,
                Some(n) => Some(Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(n)
                        .thread_name({
                            let name = stage.name.clone();
                            move |i| format!("{name}-{i}")
                        })
                        .build()
                        .map_err(|e| {
                            SetupError::Threads(format!(
                                "cannot start the stage's {n} compute threads: {e}"
                            ))
                        })?,
                )),
            },
            dirty_records: 0,
            dirty_since: None,
            commit_queued: false,
            dlq,
            unrepeatable_source: false,
            _alive: alive,
        })
    }

    /// Forgets everything since the last commit: a new incarnation of the
    /// stage starts from there.
    fn rollback(&mut self) {
        for port in &mut self.outputs {
            port.log.rollback();
        }
        for port in &mut self.inputs {
            port.processed = port.committed.next;
            port.epoch = port.committed.epoch;
            port.ended = port.committed.ended;
        }
        self.source = self.source_committed;
        self.finished_node = self.finished_committed;
        self.state.discard();
        self.dirty_records = 0;
        self.dirty_since = None;
        self.commit_queued = false;
        if let Some(d) = &mut self.dlq
            && let Err(e) = d.rollback()
        {
            warn!(stage = %self.stage.name, "cannot cut the dead-letter queue back: {e}");
        }
    }

    /// Records are published as soon as they are produced (else at commit).
    /// Not by a source that cannot make its records again (`ReadFromZenoh`):
    /// after a restart it would number new records with the numbers of
    /// ones published but not committed, and consumers that had them would
    /// drop the new ones as seen.
    fn publish_early(&self) -> bool {
        self.delivery != Delivery::ExactlyOnce && !self.unrepeatable_source
    }

    fn outputs_blocked(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| o.log.log.has_consumers() && o.log.log.room() == 0)
    }

    /// An output is half full of records not yet committed: commit now so
    /// consumers get them while the stage fills the other half.
    fn commit_due(&self) -> bool {
        self.dirty_records >= self.ckpt.records
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.ckpt.time)
            || self.outputs.iter().any(|o| {
                o.log.log.has_consumers()
                    && o.log.log.next_seq() - o.log.committed_seq() >= o.window.div_ceil(2)
            })
    }

    fn dirty(&self) -> bool {
        self.dirty_since.is_some()
    }

    fn mark_dirty(&mut self, records: u64) {
        self.dirty_records += records;
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    fn inputs_ended(&self) -> bool {
        self.inputs.iter().all(|i| i.ended)
    }

    fn done(&self) -> bool {
        let node_done = match self.stage.kind {
            rill_core::NodeKind::Source => self.source_committed.done,
            _ => self.finished_committed,
        };
        // the consumers' last acks must be durable too (the trim of what
        // they acknowledged committed): a producer restarted from a store
        // that still holds its end waits for acks from consumers that have
        // finished and left
        node_done
            && !self.dirty()
            && self
                .outputs
                .iter()
                .all(|o| o.log.log.finished() && !o.log.log.has_trimmed())
    }

    /// Appends records to output `idx`, in messages of `batch_size`, and
    /// publishes them now or at the next commit.
    async fn publish(
        &mut self,
        idx: usize,
        records: Vec<Record>,
    ) -> Result<(), ActorProcessingErr> {
        if records.is_empty() {
            return Ok(());
        }
        let batch_size = self.batch_size;
        let early = self.publish_early();
        let port = &mut self.outputs[idx];
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let chunk: Vec<Record> = records.by_ref().take(batch_size).collect();
            let count = chunk.len() as u64;
            let msg = DataMsg::Batch {
                producer: port.producer.clone(),
                first_seq: port.log.log.next_seq(),
                records: chunk,
            };
            let payload = ZBytes::from(encode_data(&msg)?);
            if port.log.log.unacked() == 0 {
                port.last_progress = Instant::now();
            }
            port.log.log.append(count, payload.clone());
            self.metrics
                .log_high_water
                .fetch_max(port.log.log.unacked(), Relaxed);
            if early {
                port.publisher.put(payload).await?;
            }
        }
        Ok(())
    }

    async fn publish_end(&mut self) -> Result<(), ActorProcessingErr> {
        let early = self.publish_early();
        for port in &mut self.outputs {
            if port.log.log.ended() {
                continue;
            }
            let msg = DataMsg::End {
                producer: port.producer.clone(),
                seq: port.log.log.next_seq(),
            };
            let payload = ZBytes::from(encode_data(&msg)?);
            if port.log.log.unacked() == 0 {
                port.last_progress = Instant::now();
            }
            port.log.log.append_end(payload.clone());
            if early {
                port.publisher.put(payload).await?;
            }
        }
        self.mark_dirty(0);
        Ok(())
    }

    /// Sends what a node emitted: main output, named outputs, dead letters.
    /// A failed record without an error output fails the stage.
    async fn route(&mut self, out: &mut Emitter) -> Result<(), ActorProcessingErr> {
        let (main, named, failures) = out.take();
        if !failures.is_empty() {
            self.metrics
                .errors
                .fetch_add(failures.len() as u64, Relaxed);
            let Some(err_out) = self.stage.error_output.clone() else {
                let f = &failures[0];
                let msg = format!("record {} failed: {}", describe_record(&f.record), f.msg);
                *self.metrics.last_error.lock().unwrap() = Some(msg.clone());
                return Err(msg.into());
            };
            let letters: Vec<Record> = failures
                .into_iter()
                .map(|f| {
                    let attempts = f.attempts;
                    dead_letter(&self.stage.name, f, attempts)
                })
                .collect();
            if let Some(d) = &mut self.dlq {
                for l in &letters {
                    d.push(l);
                }
            }
            let idx = self.output_index(Some(&err_out))?;
            self.publish(idx, letters).await?;
        }
        let n_main = main.len() as u64;
        if !main.is_empty() {
            let idx = self.output_index(None)?;
            self.publish(idx, main).await?;
        }
        let mut n_named = 0;
        for (name, recs) in named {
            n_named += recs.len() as u64;
            let idx = self.output_index(Some(&name))?;
            self.publish(idx, recs).await?;
        }
        self.metrics
            .records_out
            .fetch_add(n_main + n_named, Relaxed);
        Ok(())
    }

    fn output_index(&self, name: Option<&str>) -> Result<usize, ActorProcessingErr> {
        self.outputs
            .iter()
            .position(|o| o.name.as_deref() == name)
            .ok_or_else(|| {
                format!(
                    "stage `{}` emitted to output {:?}, which it does not declare",
                    self.stage.name,
                    name.unwrap_or("(main)")
                )
                .into()
            })
    }

    /// Makes everything since the last commit durable in one atomic write:
    /// the node's checkpoint and state changes, input positions, the source
    /// position, new output messages. Then publishes what waited for it and
    /// acknowledges the inputs. Nothing is acknowledged before it is durable.
    async fn commit(&mut self, node: &mut Node) -> Result<(), ActorProcessingErr> {
        let trims = self.outputs.iter().any(|o| o.log.log.has_trimmed());
        if !self.dirty() && !trims {
            return Ok(());
        }
        let started = Instant::now();
        if self.dirty() {
            // a sink's checkpoint does I/O (flush, fsync): off the worker;
            // a source's or transform's puts a little state
            let r = match node {
                Node::Source(s) => s.checkpoint(),
                Node::Transform(t) => t.checkpoint(),
                Node::Sink(s) => tokio::task::block_in_place(|| s.checkpoint()),
            };
            if let Err(e) = r {
                *self.metrics.last_error.lock().unwrap() = Some(e.to_string());
                return Err(format!("checkpoint failed: {e}").into());
            }
        }
        let mut batch = WriteBatch {
            ops: self.state.take_changes(),
        };
        for port in &self.inputs {
            let pos = InputPos {
                epoch: port.epoch,
                next: port.processed,
                ended: port.ended,
            };
            if pos != port.committed {
                batch.put(input_key(&port.label), durable::encode(&pos));
            }
        }
        if self.source != self.source_committed {
            batch.put(SOURCE_KEY.to_vec(), durable::encode(&self.source));
        }
        if self.finished_node && !self.finished_committed {
            batch.put(FINISHED_KEY.to_vec(), vec![1]);
        }
        let mut dlq_len = None;
        if let Some(d) = &mut self.dlq
            && d.has_pending()
        {
            let len = tokio::task::block_in_place(|| d.write())
                .map_err(|e| format!("cannot write the dead-letter queue: {e}"))?;
            batch.put(crate::dlq::DLQ_LEN_KEY.to_vec(), len.to_be_bytes().to_vec());
            dlq_len = Some(len);
        }
        let durable = self.store.durable();
        for port in &mut self.outputs {
            if durable {
                port.log
                    .stage_commit(&mut batch, |p| p.to_bytes().into_owned());
            } else {
                // a store in memory holds no copy of the logs
                port.log.log.take_trimmed();
            }
        }
        if batch.is_empty() {
            self.dirty_records = 0;
            self.dirty_since = None;
            return Ok(());
        }
        let store = self.store.clone();
        let write = || {
            store.commit(batch)?;
            if durable {
                store.flush()?;
            }
            Ok::<(), rill_core::state::StoreError>(())
        };
        // a store in memory is written on the worker; sled's fsync is not
        let written = if durable {
            tokio::task::block_in_place(write)
        } else {
            write()
        };
        written.map_err(|e| {
            let msg = format!(
                "cannot commit to the state store (nothing acknowledged since the last commit): {e}"
            );
            *self.metrics.last_error.lock().unwrap() = Some(msg.clone());
            msg
        })?;
        if let (Some(d), Some(len)) = (&mut self.dlq, dlq_len) {
            d.committed(len);
        }
        self.metrics.commits.fetch_add(1, Relaxed);
        self.metrics
            .commit_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        // the store holds the commit now: so does every in-memory mark of
        // it, before anything below can fail (a rollback returns to them)
        let early = self.publish_early();
        let mut waiting: Vec<(usize, Vec<ZBytes>)> = Vec::new();
        for (o, port) in self.outputs.iter_mut().enumerate() {
            if !early {
                waiting.push((o, port.log.uncommitted().cloned().collect()));
            }
            port.log.committed();
        }
        self.source_committed = self.source;
        self.finished_committed = self.finished_node;
        self.dirty_records = 0;
        self.dirty_since = None;
        let mut acks = Vec::new();
        for (i, port) in self.inputs.iter_mut().enumerate() {
            let pos = InputPos {
                epoch: port.epoch,
                next: port.processed,
                ended: port.ended,
            };
            if pos != port.committed {
                port.committed = pos;
                acks.push(i);
            }
        }
        // what waited for the commit goes out now
        for (o, payloads) in waiting {
            for p in payloads {
                self.outputs[o].publisher.put(p).await?;
            }
        }
        for i in acks {
            self.ack(i).await?;
        }
        Ok(())
    }

    async fn ack(&mut self, input: usize) -> Result<(), ActorProcessingErr> {
        let port = &self.inputs[input];
        let Some(epoch) = port.committed.epoch else {
            return Ok(());
        };
        let msg = CtlMsg::Ack {
            consumer: self.consumer_id.clone(),
            epoch,
            next: port.committed.next,
        };
        port.ctl.put(encode_ctl(&msg)?).await?;
        Ok(())
    }

    async fn request_resend(
        &mut self,
        input: usize,
        from: u64,
        force: bool,
    ) -> Result<(), ActorProcessingErr> {
        let port = &mut self.inputs[input];
        if port.ended || port.lossy {
            return Ok(());
        }
        if !force && port.last_resend.is_some_and(|t| t.elapsed() < RESEND_GAP) {
            return Ok(());
        }
        port.last_resend = Some(Instant::now());
        let msg = CtlMsg::Resend {
            consumer: self.consumer_id.clone(),
            epoch: port.epoch.unwrap_or(NO_EPOCH),
            from,
        };
        port.ctl.put(encode_ctl(&msg)?).await?;
        Ok(())
    }

    /// Resends what output `idx` holds from `from` on (only what is
    /// committed, under `exactly_once`), up to a window.
    async fn resend(&mut self, idx: usize, from: u64) -> Result<(), ActorProcessingErr> {
        let early = self.publish_early();
        let port = &mut self.outputs[idx];
        let from = from.max(port.log.log.min_acked());
        let upto = if early {
            u64::MAX
        } else {
            port.log.committed_seq()
        };
        for payload in port.log.log.resend_between(from, upto, port.window) {
            port.publisher.put(payload).await?;
        }
        Ok(())
    }
}

/// A dead letter: Beam's `element` and `msg`, plus `stage`, `attempts` and
/// `time` (ms since the epoch). Key and event time are the input's.
pub fn dead_letter(stage: &str, f: Failure, attempts: u32) -> Record {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut fields = Fields::default();
    fields.insert("element".into(), Value::Map(f.record.fields));
    fields.insert("msg".into(), Value::String(f.msg.into()));
    fields.insert("stage".into(), Value::String(stage.into()));
    fields.insert("attempts".into(), Value::Int(attempts.into()));
    fields.insert("time".into(), Value::Int(now));
    Record {
        key: f.record.key,
        event_time: f.record.event_time,
        fields,
    }
}

fn describe_record(r: &Record) -> String {
    let mut s = rill_core::json::record_to_json_line(r);
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    match &r.key {
        Some(k) => format!("(key {k:?}) {s}"),
        None => s,
    }
}

/// Messages of a stage actor.
pub enum StageMsg {
    /// Fresh records of input `input` (already deduplicated).
    Data {
        input: usize,
        epoch: u64,
        first_seq: u64,
        batch: Encoded,
    },
    /// The end of input `input`, numbered `seq`.
    End { input: usize, epoch: u64, seq: u64 },
    /// A duplicate arrived on `input`: the producer missed our ack.
    Duplicate { input: usize },
    /// Input `input` skipped numbers: ask again from `from`.
    Gap { input: usize, from: u64 },
    /// The producer of input `input` no longer holds what this stage asked
    /// for (from `from`; it holds from `low`).
    Gone { input: usize, from: u64, low: u64 },
    /// Input `input` sent a message past the size limit.
    TooLarge { input: usize, size: usize },
    /// A consumer's message about output `output`.
    Ctl { output: usize, msg: CtlMsg },
    /// The producer of input `input` came up (its liveliness token).
    ProducerUp { input: usize },
    /// A consumer of output `output` came up.
    ConsumerUp { output: usize },
    /// Commit what is pending (queued behind the input that arrived before
    /// it, so one commit covers all of it).
    Commit,
    /// Timers.
    Tick,
    /// A gathering batch reached its `max_batch_delay`.
    Flush,
    /// Sources: emit more now.
    Poll,
    /// Graceful stop: commit what was processed and stop.
    Drain,
}

/// Fresh records still in the payload they arrived in.
pub struct Encoded {
    payload: ZBytes,
    /// Where the records start in the payload.
    records_at: usize,
    /// How many of them were seen already (dropped after decoding).
    skip: usize,
    /// How many are fresh.
    count: usize,
}

impl Encoded {
    /// The fresh records.
    fn decode(&self) -> Result<Vec<Record>, CodecError> {
        let mut records = decode_records(&self.payload.to_bytes(), self.records_at)?;
        records.drain(..self.skip.min(records.len()));
        Ok(records)
    }
}

enum Pending {
    Data {
        input: usize,
        epoch: u64,
        first_seq: u64,
        records: Vec<Record>,
        arrived: Instant,
    },
    End {
        input: usize,
        epoch: u64,
        seq: u64,
    },
}

/// What a stage actor starts from.
pub struct StageArgs {
    pub shared: Arc<Mutex<StageShared>>,
    pub session: Session,
    pub attempt: u32,
    pub base_dir: std::path::PathBuf,
    pub extensions: Extensions,
}

/// The actor's mutable state: the node, its subscriptions, the queue of
/// received records.
pub struct StageState {
    shared: Arc<Mutex<StageShared>>,
    node: Node,
    pending: VecDeque<Pending>,
    /// What a restarted source still has to drop (it replays from its
    /// start what earlier incarnations emitted).
    replay: Replay,
    poll_at: Option<Instant>,
    offload: Offload,
    /// When a `Flush` is scheduled for a batch that is still gathering.
    flush_at: Option<Instant>,
    draining: bool,
    _subs: Vec<Subscriber<()>>,
}

/// Decides where a node's work runs. Short calls run on the async worker
/// (cheaper than a thread hand-off, and harmless at tens of microseconds);
/// once a call has taken longer than [`Offload::HEAVY`], the stage's calls
/// run under `block_in_place`, so a CPU-heavy node cannot stall the other
/// stages and Zenoh's tasks on that worker. The choice follows a moving
/// average of the call time, so a stage that turns heavy moves off at once.
#[derive(Debug, Default)]
struct Offload {
    /// Moving average of the call time in µs.
    avg_us: f64,
    /// The stage's own compute pool (`resources.cpu_threads`): every call
    /// runs there, so what the node parallelises stays within its budget.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Offload {
    const HEAVY: f64 = 200.0;

    fn run<T: Send>(&mut self, f: impl FnOnce() -> T + Send) -> T {
        let start = Instant::now();
        let out = if let Some(pool) = &self.pool {
            tokio::task::block_in_place(|| pool.install(f))
        } else if self.avg_us > Self::HEAVY {
            tokio::task::block_in_place(f)
        } else {
            f()
        };
        let us = start.elapsed().as_secs_f64() * 1e6;
        // a slow call moves the stage off the worker immediately
        self.avg_us = if us > Self::HEAVY {
            us
        } else {
            self.avg_us * 0.8 + us * 0.2
        };
        out
    }
}

/// Builds the stage's node for an incarnation after the first, on a thread
/// of its own, within the stage's startup timeout.
async fn build_node(sh: &StageShared, args: &StageArgs) -> Result<Node, ActorProcessingErr> {
    let (pipeline, stage) = (sh.pipeline.clone(), sh.stage.name.clone());
    let (config, state, delivery) = (sh.stage.node.clone(), sh.state.clone(), sh.delivery);
    let (attempt, base_dir, extensions) =
        (args.attempt, args.base_dir.clone(), args.extensions.clone());
    let (resources, metrics) = (sh.stage.resources, sh.metrics.node.clone());
    let limit = sh.stage.timeout.startup;
    let build = tokio::task::spawn_blocking(move || {
        let ctx = BuildContext {
            pipeline: &pipeline,
            stage: &stage,
            attempt,
            base_dir: &base_dir,
            extensions: &extensions,
            state: &state,
            delivery,
            resources,
            metrics: &metrics,
        };
        config.build(&ctx)
    });
    match tokio::time::timeout(limit, build).await {
        Ok(Ok(node)) => Ok(node?),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => Err(format!("building the node failed: {e}").into()),
        Err(_) => {
            sh.metrics.timeouts.fetch_add(1, Relaxed);
            let msg = format!("start-up timed out: building the node took longer than {limit:?}");
            warn!(stage = %sh.stage.name, "{msg}");
            Err(msg.into())
        }
    }
}

/// The stage actor.
pub struct StageActor;

impl Actor for StageActor {
    type Msg = StageMsg;
    type State = StageState;
    type Arguments = StageArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StageMsg>,
        args: StageArgs,
    ) -> Result<StageState, ActorProcessingErr> {
        let mut sh = args.shared.lock().await;
        // a new incarnation starts from the last commit
        sh.rollback();
        let prebuilt = sh.prebuilt.get_mut().unwrap().take();
        let mut node = match prebuilt {
            Some(n) => n,
            None => {
                // the new node gets state of its own: an earlier one that
                // was abandoned mid-call may still write to the old
                sh.state = sh.state.detached();
                build_node(&sh, &args).await?
            }
        };
        sh.metrics
            .started
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let mut subs = Vec::new();
        let pipeline_name = sh.pipeline.clone();
        let consumer_id = sh.consumer_id.clone();
        let stage_metrics = sh.metrics.clone();
        // inputs: a fresh incarnation expects what was processed last
        for (i, port) in sh.inputs.iter_mut().enumerate() {
            {
                let mut r = port.received.lock().unwrap();
                r.epoch = port.epoch;
                r.next = port.processed;
            }
            let received = port.received.clone();
            let me = myself.clone();
            let me_id = consumer_id.clone();
            let label = port.label.clone();
            let lossy = port.lossy;
            let announced = port.announced.clone();
            let metrics = stage_metrics.clone();
            let max_message = rill_core::limits::get().max_message_bytes;
            let sub = args
                .session
                .declare_subscriber(port.data_key.clone())
                .callback(move |sample| {
                    // only the head is read here: the records are decoded by
                    // the stage, on its own thread, where they are dropped too
                    let head = match decode_data_head(&sample.payload().to_bytes()) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(input = %label, "ignoring an undecodable message: {e}");
                            return;
                        }
                    };
                    // only an epoch a live producer announces is taken:
                    // a message with any other (forged, or from a stale
                    // process) could reset this input's position
                    let (from_epoch, gone) = match &head {
                        DataHead::Batch { producer, .. } | DataHead::End { producer, .. } => {
                            (producer.epoch, false)
                        }
                        DataHead::Gone { producer, .. } => (producer.epoch, true),
                    };
                    // (a producer that answers `Gone` stops at once: its
                    // token may be gone before its answer is read)
                    let known = announced
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|((e, _), live)| *e == from_epoch && (*live || gone));
                    if !known {
                        if metrics.foreign.fetch_add(1, Relaxed) % 1000 == 0 {
                            warn!(input = %label, epoch = format!("{from_epoch:016x}"),
                                "dropping a message from a producer epoch no live producer announces (forged, or late from a stopped process)");
                        }
                        return;
                    }
                    let size = sample.payload().len();
                    if size > max_message {
                        let _ = me.cast(StageMsg::TooLarge { input: i, size });
                        return;
                    }
                    let (epoch, first, count) = match &head {
                        DataHead::Batch {
                            producer,
                            first_seq,
                            count,
                            ..
                        } => (producer.epoch, *first_seq, *count),
                        DataHead::End { producer, seq } => (producer.epoch, *seq, 1),
                        DataHead::Gone {
                            consumer,
                            from,
                            low,
                            ..
                        } => {
                            if *consumer == me_id {
                                let _ = me.cast(StageMsg::Gone {
                                    input: i,
                                    from: *from,
                                    low: *low,
                                });
                            }
                            return;
                        }
                    };
                    if count == 0 {
                        return;
                    }
                    let arrival = {
                        let mut r = received.lock().unwrap();
                        if lossy {
                            r.arrive_lossy(epoch, first, count)
                        } else {
                            r.arrive(epoch, first, count)
                        }
                    };
                    let out = match (arrival, head) {
                        (Arrival::Fresh { skip }, DataHead::Batch { records_at, .. }) => {
                            StageMsg::Data {
                                input: i,
                                epoch,
                                first_seq: first + skip as u64,
                                batch: Encoded {
                                    payload: sample.payload().clone(),
                                    records_at,
                                    skip,
                                    count: count as usize - skip,
                                },
                            }
                        }
                        (Arrival::Fresh { .. }, DataHead::End { seq, .. }) => StageMsg::End {
                            input: i,
                            epoch,
                            seq,
                        },
                        (Arrival::Duplicate, _) => StageMsg::Duplicate { input: i },
                        (Arrival::Gap { from }, _) => StageMsg::Gap { input: i, from },
                        (_, DataHead::Gone { .. }) => unreachable!("answered above"),
                    };
                    let _ = me.cast(out);
                })
                .await?;
            subs.push(sub);
            // the producer coming up (again) is the moment to ask it; its
            // token announces the epoch its data will carry
            let me = myself.clone();
            let announced = port.announced.clone();
            let sub = args
                .session
                .liveliness()
                .declare_subscriber(alive_keys(&pipeline_name, &port.producer_key))
                .history(true)
                .callback(move |sample| {
                    let Some(token) = token_of_alive_key(sample.key_expr().as_str()) else {
                        return;
                    };
                    let live = sample.kind() == zenoh::sample::SampleKind::Put;
                    announced.lock().unwrap().insert(token, live);
                    if live {
                        let _ = me.cast(StageMsg::ProducerUp { input: i });
                    }
                })
                .await?;
            subs.push(sub);
        }
        let key = sh.stage.key_name();
        let consumers_of: Vec<Vec<String>> = sh
            .outputs
            .iter()
            .map(|o| o.log.log.acks().map(|(c, _)| c.to_owned()).collect())
            .collect();
        for (o, port) in sh.outputs.iter().enumerate() {
            if !port.log.log.has_consumers() {
                continue;
            }
            let me = myself.clone();
            let sub = args
                .session
                .declare_subscriber(ctl_key(&sh.pipeline, &key, port.name.as_deref()))
                .callback(move |sample| {
                    if let Ok(msg) = decode_ctl(&sample.payload().to_bytes()) {
                        let _ = me.cast(StageMsg::Ctl { output: o, msg });
                    }
                })
                .await?;
            subs.push(sub);
            for c in &consumers_of[o] {
                let me = myself.clone();
                let sub = args
                    .session
                    .liveliness()
                    .declare_subscriber(alive_keys(&sh.pipeline, c))
                    .history(true)
                    .callback(move |sample| {
                        if sample.kind() == zenoh::sample::SampleKind::Put {
                            let _ = me.cast(StageMsg::ConsumerUp { output: o });
                        }
                    })
                    .await?;
                subs.push(sub);
            }
        }
        // ask every input for what we have not processed yet
        for i in 0..sh.inputs.len() {
            let from = sh.inputs[i].processed;
            sh.request_resend(i, from, true).await?;
        }
        // a source resumes after what it had emitted at the last commit:
        // it is there already (it restored its position, or seeks), or it
        // replays from its start and the runtime drops what it made before
        let mut replay = Replay::default();
        sh.unrepeatable_source = matches!(&node, Node::Source(src) if !src.deterministic());
        if let Node::Source(src) = &mut node
            && src.deterministic()
        {
            let c = sh.source;
            let made = c.emitted + c.failed;
            if made == 0 {
                info!(stage = %sh.stage.name, "source starts from its beginning");
            }
            if made > 0 && !c.done {
                let positioned = src.seek(made);
                replay = Replay::start(c, positioned);
                info!(
                    stage = %sh.stage.name,
                    "source resumes after {} records and {} failures ({})",
                    c.emitted,
                    c.failed,
                    if positioned { "positioned" } else { "replaying from its start" }
                );
            }
        }
        // what was committed but not yet acknowledged goes out again
        for o in 0..sh.outputs.len() {
            let from = sh.outputs[o].log.log.min_acked();
            sh.resend(o, from).await?;
        }
        let pool = sh.pool.clone();
        drop(sh);
        myself.send_interval(TICK, || StageMsg::Tick);
        if matches!(node, Node::Source(_)) {
            myself.cast(StageMsg::Poll)?;
        }
        Ok(StageState {
            shared: args.shared,
            node,
            pending: VecDeque::new(),
            replay,
            poll_at: None,
            offload: Offload { avg_us: 0.0, pool },
            flush_at: None,
            draining: false,
            _subs: subs,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StageMsg>,
        msg: StageMsg,
        st: &mut StageState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = st.shared.clone();
        let mut sh = shared.lock().await;
        match msg {
            StageMsg::Data {
                input,
                epoch,
                first_seq,
                batch,
            } => {
                let records = batch.decode().map_err(|e| {
                    format!(
                        "stage `{}`: the records of input `{}` from {first_seq} cannot be decoded: {e}",
                        sh.stage.name, sh.inputs[input].label
                    )
                })?;
                if records.len() != batch.count {
                    return Err(format!(
                        "stage `{}`: input `{}` from {first_seq} promised {} records, holds {}",
                        sh.stage.name,
                        sh.inputs[input].label,
                        batch.count,
                        records.len()
                    )
                    .into());
                }
                let depth = sh
                    .metrics
                    .queue_depth
                    .fetch_add(records.len() as i64, Relaxed)
                    + records.len() as i64;
                sh.metrics.queue_high_water.fetch_max(depth, Relaxed);
                st.pending.push_back(Pending::Data {
                    input,
                    epoch,
                    first_seq,
                    records,
                    arrived: Instant::now(),
                });
                drive(&mut sh, st, &myself).await?;
            }
            StageMsg::End { input, epoch, seq } => {
                st.pending.push_back(Pending::End { input, epoch, seq });
                drive(&mut sh, st, &myself).await?;
            }
            StageMsg::Duplicate { input } => sh.ack(input).await?,
            StageMsg::Gap { input, from } => sh.request_resend(input, from, false).await?,
            StageMsg::TooLarge { input, size } => {
                let max = rill_core::limits::get().max_message_bytes;
                let msg = format!(
                    "{BAD_INPUT}input `{}` sent a message of {size} bytes, more than the limit of {max} (RILL_MAX_MESSAGE_BYTES sets another): lower the producer's `options.batch_size`, or raise the limit in every process",
                    sh.inputs[input].label
                );
                *sh.metrics.last_error.lock().unwrap() = Some(msg.clone());
                return Err(msg.into());
            }
            StageMsg::Gone { input, from, low } => {
                let port = &sh.inputs[input];
                let msg = gone_text(&sh.consumer_id, &port.producer_key, &port.label, from, low);
                *sh.metrics.last_error.lock().unwrap() = Some(msg.clone());
                return Err(msg.into());
            }
            StageMsg::ProducerUp { input } => {
                let from = sh.inputs[input].received.lock().unwrap().next;
                sh.request_resend(input, from, true).await?;
                sh.ack(input).await?;
            }
            StageMsg::ConsumerUp { output } => {
                let from = sh.outputs[output].log.log.min_acked();
                sh.resend(output, from).await?;
            }
            StageMsg::Ctl { output, msg } => match msg {
                CtlMsg::Ack {
                    consumer,
                    epoch,
                    next,
                } => {
                    let port = &mut sh.outputs[output];
                    // an ack counts in the epoch it names: one for an
                    // earlier incarnation of this producer's state (before
                    // a reset) says nothing about this one's records
                    if epoch == port.producer.epoch && port.log.log.ack(&consumer, next) {
                        port.last_progress = Instant::now();
                        port.rto = RTO_MIN;
                        if port.log.log.finished() {
                            // the last ack: made durable at once (the
                            // consumer may finish and leave now)
                            sh.commit(&mut st.node).await?;
                        } else if port.log.log.has_trimmed() {
                            queue_commit(&mut sh, &myself)?;
                        }
                        drive(&mut sh, st, &myself).await?;
                        if matches!(st.node, Node::Source(_)) && st.poll_at.is_none() {
                            poll_source(&mut sh, st, &myself).await?;
                        }
                    }
                }
                CtlMsg::Resend {
                    consumer,
                    epoch,
                    from,
                } => {
                    let port = &sh.outputs[output];
                    let low = port.log.log.low();
                    let known = port.log.log.acks().any(|(c, _)| c == consumer);
                    // a consumer that counts in this epoch (or knows none
                    // yet) and wants what every consumer had acknowledged:
                    // its state was reset or lost, and no resend can mend it
                    let ours = epoch == port.producer.epoch || epoch == NO_EPOCH;
                    if known && ours && from < low {
                        let gone = DataMsg::Gone {
                            producer: port.producer.clone(),
                            consumer: consumer.clone(),
                            from,
                            low,
                        };
                        port.publisher.put(encode_data(&gone)?).await?;
                        // a moment for the consumer to see this process's
                        // token before it stops (it takes `Gone` only from
                        // a producer it has seen)
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let label = match &port.name {
                            Some(n) => format!("{}.{n}", sh.stage.name),
                            None => sh.stage.name.clone(),
                        };
                        let msg = gone_text(&consumer, &sh.consumer_id, &label, from, low);
                        *sh.metrics.last_error.lock().unwrap() = Some(msg.clone());
                        return Err(msg.into());
                    }
                    // a consumer of an earlier epoch reads this one from
                    // its start
                    let from = if ours { from } else { 0 };
                    sh.resend(output, from).await?
                }
            },
            StageMsg::Commit => {
                sh.commit_queued = false;
                sh.commit(&mut st.node).await?;
            }
            StageMsg::Tick => {
                if sh.commit_due() {
                    sh.commit(&mut st.node).await?;
                }
                for o in 0..sh.outputs.len() {
                    let port = &mut sh.outputs[o];
                    if port.log.log.unacked() > 0 && port.last_progress.elapsed() >= port.rto {
                        port.rto = (port.rto * 2).min(RTO_MAX);
                        port.last_progress = Instant::now();
                        let from = port.log.log.min_acked();
                        debug!(stage = %sh.stage.name, output = o, from, "resending unacknowledged records");
                        sh.resend(o, from).await?;
                    }
                }
                if st.poll_at.is_some_and(|t| Instant::now() >= t) {
                    st.poll_at = None;
                    poll_source(&mut sh, st, &myself).await?;
                }
            }
            StageMsg::Flush => {
                st.flush_at = None;
                drive(&mut sh, st, &myself).await?;
            }
            StageMsg::Poll => {
                // a timed poll may find its wait already over (or another
                // poll earlier): poll when nothing is scheduled in the future
                if st.poll_at.is_none_or(|t| Instant::now() >= t) {
                    st.poll_at = None;
                    poll_source(&mut sh, st, &myself).await?;
                }
            }
            StageMsg::Drain => {
                st.draining = true;
                sh.commit(&mut st.node).await?;
                myself.stop(Some(DRAINED.into()));
                return Ok(());
            }
        }
        if sh.done() {
            *sh.metrics.finished.lock().unwrap() = Some(Instant::now());
            myself.stop(Some(DONE.into()));
        }
        Ok(())
    }
}

/// The stop reason of a stage that finished its work.
pub const DONE: &str = "done";
/// The stop reason of a stage that committed and stopped on request.
pub const DRAINED: &str = "drained";

/// Commits now when a threshold is reached, else queues a commit behind the
/// input already waiting (group commit).
async fn after_work(
    sh: &mut StageShared,
    st: &mut StageState,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    if !sh.dirty() {
        return Ok(());
    }
    if sh.commit_due() {
        sh.commit(&mut st.node).await
    } else {
        queue_commit(sh, myself)
    }
}

fn queue_commit(
    sh: &mut StageShared,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    if !sh.commit_queued {
        sh.commit_queued = true;
        myself.cast(StageMsg::Commit)?;
    }
    Ok(())
}

/// Whether a message numbered from `first_seq` on `input` is the next one
/// to process (else it is stale or from an ended input, and skipped).
fn accept(sh: &mut StageShared, input: usize, epoch: u64, first_seq: u64) -> bool {
    let stage = &sh.stage.name;
    let port = &mut sh.inputs[input];
    if port.ended {
        return false; // an ended input takes nothing more
    }
    if port.epoch != Some(epoch) {
        if port.epoch.is_some() {
            warn!(stage = %stage, input = %port.label,
                "the producer started over (its state was reset): reading it from its start");
        }
        port.epoch = Some(epoch);
        port.processed = 0;
    }
    if first_seq != port.processed {
        if port.lossy && first_seq > port.processed {
            port.processed = first_seq; // best effort: skip the gap
        } else {
            // stale (queued before a restart of the producer); the cursor
            // asks again where needed
            return false;
        }
    }
    true
}

/// Processes queued input while the outputs have room.
async fn drive(
    sh: &mut StageShared,
    st: &mut StageState,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    loop {
        if sh.outputs_blocked() {
            // under exactly_once the consumers see nothing before a commit
            if sh.dirty() {
                sh.commit(&mut st.node).await?;
            }
            break;
        }
        let Some(front) = st.pending.front() else {
            break;
        };
        if let Pending::Data { arrived, .. } = front {
            // dynamic batching: wait for more until the batch is full, the
            // oldest record has waited long enough, or an input ends
            let (limit, delay) = match sh.batching {
                Some(b) => (b.max_batch_size, Some(b.max_batch_delay)),
                None => (0, None),
            };
            if let Some(delay) = delay
                && !st.draining
            {
                let due_at = *arrived + delay;
                let mut queued = 0;
                let mut end_queued = false;
                for p in &st.pending {
                    match p {
                        Pending::Data { records, .. } => queued += records.len(),
                        Pending::End { .. } => {
                            end_queued = true;
                            break;
                        }
                    }
                }
                if queued < limit && !end_queued && Instant::now() < due_at {
                    if st.flush_at.is_none_or(|t| t > due_at) {
                        st.flush_at = Some(due_at);
                        let wait = due_at.saturating_duration_since(Instant::now());
                        myself.send_after(wait, || StageMsg::Flush);
                    }
                    break;
                }
            }
            let mut records: Vec<Record> = Vec::new();
            let mut taken = 0usize;
            while let Some(Pending::Data { .. }) = st.pending.front() {
                if taken > 0 && records.len() >= limit {
                    break;
                }
                let Some(Pending::Data {
                    input,
                    epoch,
                    first_seq,
                    records: mut recs,
                    arrived,
                }) = st.pending.pop_front()
                else {
                    unreachable!("the front is data")
                };
                taken += 1;
                if !accept(sh, input, epoch, first_seq) {
                    sh.metrics.queue_depth.fetch_sub(recs.len() as i64, Relaxed);
                    continue;
                }
                // a batch never exceeds its size: the rest of a message
                // waits at the front for the next one
                if limit > 0 && sh.batching.is_some() && records.len() + recs.len() > limit {
                    let k = limit - records.len();
                    let rest = recs.split_off(k);
                    st.pending.push_front(Pending::Data {
                        input,
                        epoch,
                        first_seq: first_seq + k as u64,
                        records: rest,
                        arrived,
                    });
                }
                let n = recs.len() as u64;
                sh.metrics.queue_depth.fetch_sub(n as i64, Relaxed);
                sh.inputs[input].processed = first_seq + n;
                records.extend(recs);
            }
            if records.is_empty() {
                continue;
            }
            let n = records.len() as u64;
            sh.metrics.records_in.fetch_add(n, Relaxed);
            let started = Instant::now();
            let (result, mut out) = call_node(sh, st, move |node| {
                let mut out = Emitter::new();
                let r = match node {
                    Node::Transform(t) => t.process(records, &mut out),
                    Node::Sink(s) => s.write(records, &mut out),
                    Node::Source(_) => Ok(()),
                };
                (r, out)
            })
            .await?;
            sh.metrics.observe_latency(started.elapsed());
            if let Err(e) = result {
                *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
                return Err(e.into());
            }
            if sh.stage.error_output.is_some()
                && sh.stage.retries.max > 0
                && !out.failures().is_empty()
            {
                retry_failures(sh, st, &mut out).await?;
            }
            sh.route(&mut out).await?;
            check_threshold(sh, 100)?;
            sh.mark_dirty(n);
            continue;
        }
        let Some(item) = st.pending.pop_front() else {
            break;
        };
        match item {
            Pending::Data { .. } => unreachable!("data is handled above"),
            Pending::End { input, epoch, seq } => {
                let port = &mut sh.inputs[input];
                if port.ended {
                    continue;
                }
                if port.epoch != Some(epoch) {
                    port.epoch = Some(epoch);
                    port.processed = 0;
                }
                if port.processed != seq {
                    if port.lossy && seq > port.processed {
                        port.processed = seq;
                    } else {
                        continue;
                    }
                }
                port.ended = true;
                port.processed = seq + 1;
                sh.mark_dirty(0);
                if sh.inputs_ended() && !sh.finished_node {
                    let mut out = Emitter::new();
                    let result = match &mut st.node {
                        Node::Transform(t) => tokio::task::block_in_place(|| t.finish(&mut out)),
                        Node::Sink(s) => tokio::task::block_in_place(|| s.finish()),
                        Node::Source(_) => Ok(()),
                    };
                    if let Err(e) = result {
                        *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
                        return Err(e.into());
                    }
                    sh.route(&mut out).await?;
                    check_threshold(sh, 1)?;
                    sh.publish_end().await?;
                    sh.finished_node = true;
                    // the end goes out at once
                    sh.commit(&mut st.node).await?;
                }
            }
        }
    }
    after_work(sh, st, myself).await
}

/// Stands in for a node lost to a call that timed out (it is still stuck on
/// the thread that called it); the stage restarts with a new one.
struct Lost;

impl rill_core::node::Transform for Lost {
    fn process(&mut self, _: Vec<Record>, _: &mut Emitter) -> Result<(), NodeError> {
        Err(NodeError::failed(
            "the node was lost to a call that timed out",
        ))
    }
}

/// Calls the node: on the worker (or under `block_in_place` once calls are
/// heavy) without a call timeout; with one, on a thread of the blocking
/// pool, given up after the timeout. A node that overran is left to finish
/// on that thread, and the stage fails (its supervisor restarts it with a
/// new node). A panic in the node fails the stage as before.
async fn call_node<T: Send + 'static>(
    sh: &StageShared,
    st: &mut StageState,
    f: impl FnOnce(&mut Node) -> T + Send + 'static,
) -> Result<T, ActorProcessingErr> {
    let Some(limit) = sh.stage.timeout.call else {
        let node = &mut st.node;
        return Ok(st.offload.run(|| f(node)));
    };
    let mut node = std::mem::replace(&mut st.node, Node::Transform(Box::new(Lost)));
    let pool = st.offload.pool.clone();
    let call = tokio::task::spawn_blocking(move || {
        let r = match pool {
            Some(pool) => pool.install(|| f(&mut node)),
            None => f(&mut node),
        };
        (node, r)
    });
    match tokio::time::timeout(limit, call).await {
        Ok(Ok((node, r))) => {
            st.node = node;
            Ok(r)
        }
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => Err(format!("the node's call failed: {e}").into()),
        Err(_) => {
            sh.metrics.timeouts.fetch_add(1, Relaxed);
            let msg = format!(
                "timed out: a call of the node took longer than its timeout of {limit:?} (hung?)"
            );
            warn!(stage = %sh.stage.name, "{msg}");
            *sh.metrics.last_error.lock().unwrap() = Some(msg.clone());
            Err(msg.into())
        }
    }
}

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

/// Fails the stage (for good) when more than its threshold of records
/// failed, once `min_in` records have come in.
fn check_threshold(sh: &StageShared, min_in: u64) -> Result<(), ActorProcessingErr> {
    let Some(t) = sh.stage.error_threshold else {
        return Ok(());
    };
    let n_in = sh.metrics.records_in.load(Relaxed);
    let n_err = sh.metrics.errors.load(Relaxed);
    if n_in >= min_in && n_in > 0 && n_err as f64 / n_in as f64 > t {
        let msg = format!(
            "{THRESHOLD_EXCEEDED}: {n_err} of {n_in} records failed ({:.1}%), more than the stage's threshold of {:.1}%",
            100.0 * n_err as f64 / n_in as f64,
            100.0 * t
        );
        *sh.metrics.last_error.lock().unwrap() = Some(msg.clone());
        return Err(msg.into());
    }
    Ok(())
}

/// Tries each failed record again, up to the stage's `retries.max` more
/// times, `retries.backoff` apart; what still fails keeps its attempt
/// count for its dead letter. A retry is a call of the node like any
/// other: [`call_node`] applies the stage's call timeout to it.
async fn retry_failures(
    sh: &StageShared,
    st: &mut StageState,
    out: &mut Emitter,
) -> Result<(), ActorProcessingErr> {
    let retries = sh.stage.retries;
    let (main, named, failures) = out.take();
    for r in main {
        out.emit(r);
    }
    for (n, v) in named {
        for r in v {
            out.emit_to(&n, r);
        }
    }
    for mut f in failures {
        let mut failed = Some(f.clone());
        while let Some(cur) = failed.take() {
            f = cur;
            if f.attempts > retries.max {
                failed = Some(f.clone());
                break;
            }
            if !retries.backoff.0.is_zero() {
                tokio::time::sleep(retries.backoff.0).await;
            }
            let record = vec![f.record.clone()];
            let (r, mut again) = call_node(sh, st, move |node| {
                let mut again = Emitter::new();
                let r = match node {
                    Node::Transform(t) => t.process(record, &mut again),
                    Node::Sink(s) => s.write(record, &mut again),
                    Node::Source(_) => Ok(()),
                };
                (r, again)
            })
            .await?;
            r?;
            let (m, n, fs) = again.take();
            for r in m {
                out.emit(r);
            }
            for (name, v) in n {
                for r in v {
                    out.emit_to(&name, r);
                }
            }
            let mut fs = fs.into_iter();
            failed = fs.next().map(|nf| Failure {
                attempts: f.attempts + 1,
                ..nf
            });
            for extra in fs {
                out.push_failure(Failure {
                    attempts: f.attempts + 1,
                    ..extra
                });
            }
        }
        if let Some(f) = failed {
            out.push_failure(f);
        }
    }
    Ok(())
}

/// Lets a source emit as much as its outputs have room for.
async fn poll_source(
    sh: &mut StageShared,
    st: &mut StageState,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    if !matches!(st.node, Node::Source(_)) {
        return Ok(());
    }
    if sh.source.done || st.draining {
        return Ok(());
    }
    let room = sh
        .outputs
        .iter()
        .map(|o| o.log.log.room())
        .min()
        .unwrap_or(u64::MAX);
    if room == 0 {
        // an ack will poll again; under exactly_once the consumers see
        // nothing before a commit
        if sh.dirty() {
            sh.commit(&mut st.node).await?;
        }
        return Ok(());
    }
    let max = room.min(sh.batch_size as u64) as usize;
    let started = Instant::now();
    let (status, mut out) = call_node(sh, st, move |node| {
        let mut out = Emitter::new();
        let r = match node {
            Node::Source(src) => src.poll(max, &mut out),
            _ => Ok(SourceStatus::Done),
        };
        (r, out)
    })
    .await?;
    sh.metrics.observe_latency(started.elapsed());
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
            return Err(e.into());
        }
    };
    let (mut main, named, mut failures) = out.take();
    // a restarted source that replays from its start: drop what an earlier
    // incarnation emitted; only the rest is progress
    let replaying = st.replay.pending();
    let (n_main, n_failed) = st.replay.admit(&mut sh.source, &mut main, &mut failures);
    for r in main {
        out.emit(r);
    }
    if !replaying {
        for (n, v) in named {
            for r in v {
                out.emit_to(&n, r);
            }
        }
    }
    for f in failures {
        out.push_failure(f);
    }
    // a batch that fails the stage is made again by the next incarnation
    // (which starts from the committed position)
    sh.route(&mut out).await?;
    if n_main + n_failed > 0 {
        sh.mark_dirty(n_main + n_failed);
    }
    match status {
        SourceStatus::More => {
            myself.cast(StageMsg::Poll)?;
            if sh.commit_due() {
                sh.commit(&mut st.node).await?;
            }
        }
        SourceStatus::Wait(d) => {
            st.poll_at = Some(Instant::now() + d);
            myself.send_after(d, || StageMsg::Poll);
            after_work(sh, st, myself).await?;
        }
        SourceStatus::Done => {
            if let Err(short) = st.replay.finish(sh.source_committed) {
                let msg = format!("{BAD_INPUT}{short}");
                *sh.metrics.last_error.lock().unwrap() = Some(msg.clone());
                return Err(msg.into());
            }
            info!(
                stage = %sh.stage.name,
                "source reached its end after {} records and {} failures",
                sh.source.emitted,
                sh.source.failed
            );
            sh.source.done = true;
            sh.publish_end().await?;
            sh.commit(&mut st.node).await?;
        }
    }
    Ok(())
}
