//! The stage actor: one per pipeline stage, under the [`crate::supervisor`].
//!
//! The actor owns the running node and its Zenoh subscriptions. What must
//! outlive a crash of the node (the output logs, the input positions, the
//! publishers and the metrics) lives in [`StageShared`], which the supervisor
//! hands to every incarnation of the stage.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rill_core::node::{BuildContext, Emitter, Extensions, Failure, Node, SourceStatus};
use rill_core::spec::Stage;
use rill_core::{Fields, Record, Value};
use tokio::sync::Mutex;
use tracing::{debug, warn};
use zenoh::Session;
use zenoh::bytes::ZBytes;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;

use crate::log::{Arrival, InCursor, OutLog};
use crate::metrics::StageMetrics;
use crate::protocol::{
    CtlMsg, DataMsg, ProducerId, ctl_key, data_key, decode_ctl, decode_data, encode_ctl,
    encode_data,
};

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
    pub log: OutLog<ZBytes>,
    pub window: u64,
    last_progress: Instant,
    rto: Duration,
}

/// One input of a stage.
pub(crate) struct InPort {
    pub label: String,
    pub data_key: String,
    pub ctl: Publisher<'static>,
    /// What the subscriber has let through (shared with its callback).
    pub received: Arc<std::sync::Mutex<InCursor>>,
    /// Next number not yet processed, and the producer epoch it counts in.
    pub processed: u64,
    pub epoch: Option<u64>,
    pub ended: bool,
    last_resend: Option<Instant>,
}

/// The part of a stage that survives restarts of its actor.
pub struct StageShared {
    pub(crate) pipeline: String,
    pub(crate) stage: Stage,
    pub(crate) consumer_id: String,
    pub(crate) outputs: Vec<OutPort>,
    pub(crate) inputs: Vec<InPort>,
    pub(crate) metrics: Arc<StageMetrics>,
    /// The node built before the run started (taken by the first incarnation).
    pub(crate) prebuilt: Option<Node>,
    /// Records a source has emitted so far: a restarted (deterministic)
    /// source skips this many, so nothing is emitted twice.
    pub(crate) source_emitted: u64,
    pub(crate) source_failed: u64,
    pub(crate) source_done: bool,
    pub(crate) finished_node: bool,
    pub(crate) batch_size: usize,
}

impl StageShared {
    /// Declares the stage's publishers.
    pub(crate) async fn new(
        session: &Session,
        pipeline: &rill_core::spec::Pipeline,
        stage: &Stage,
        epoch: u64,
        metrics: Arc<StageMetrics>,
        prebuilt: Node,
    ) -> Result<StageShared, zenoh::Error> {
        let key = stage.key_name();
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
                log: OutLog::new(consumers),
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
            inputs.push(InPort {
                label: inp.to_string(),
                data_key: data_key(&pipeline.name, &producer, inp.output.as_deref()),
                ctl,
                received: Arc::default(),
                processed: 0,
                epoch: None,
                ended: false,
                last_resend: None,
            });
        }
        Ok(StageShared {
            pipeline: pipeline.name.clone(),
            consumer_id: key,
            stage: stage.clone(),
            outputs,
            inputs,
            metrics,
            prebuilt: Some(prebuilt),
            source_emitted: 0,
            source_failed: 0,
            source_done: false,
            finished_node: false,
            batch_size: pipeline.options.batch_size,
        })
    }

    fn outputs_blocked(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| o.log.has_consumers() && o.log.room() == 0)
    }

    fn inputs_ended(&self) -> bool {
        self.inputs.iter().all(|i| i.ended)
    }

    fn done(&self) -> bool {
        let node_done = match self.stage.kind {
            rill_core::NodeKind::Source => self.source_done,
            _ => self.finished_node,
        };
        node_done && self.outputs.iter().all(|o| o.log.finished())
    }

    /// Publishes records on output `idx`, in messages of `batch_size`.
    async fn publish(
        &mut self,
        idx: usize,
        records: Vec<Record>,
    ) -> Result<(), ActorProcessingErr> {
        if records.is_empty() {
            return Ok(());
        }
        let batch_size = self.batch_size;
        let port = &mut self.outputs[idx];
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let chunk: Vec<Record> = records.by_ref().take(batch_size).collect();
            let count = chunk.len() as u64;
            let msg = DataMsg::Batch {
                producer: port.producer.clone(),
                first_seq: port.log.next_seq(),
                records: chunk,
            };
            let payload = ZBytes::from(encode_data(&msg)?);
            if port.log.unacked() == 0 {
                port.last_progress = Instant::now();
            }
            port.log.append(count, payload.clone());
            self.metrics
                .log_high_water
                .fetch_max(port.log.unacked(), std::sync::atomic::Ordering::Relaxed);
            port.publisher.put(payload).await?;
        }
        Ok(())
    }

    async fn publish_end(&mut self) -> Result<(), ActorProcessingErr> {
        for port in &mut self.outputs {
            if port.log.ended() {
                continue;
            }
            let msg = DataMsg::End {
                producer: port.producer.clone(),
                seq: port.log.next_seq(),
            };
            let payload = ZBytes::from(encode_data(&msg)?);
            if port.log.unacked() == 0 {
                port.last_progress = Instant::now();
            }
            port.log.append_end(payload.clone());
            port.publisher.put(payload).await?;
        }
        Ok(())
    }

    /// Sends what a node emitted: main output, named outputs, dead letters.
    /// A failed record without an error output fails the stage.
    async fn route(&mut self, out: &mut Emitter) -> Result<(), ActorProcessingErr> {
        let (main, named, failures) = out.take();
        if !failures.is_empty() {
            self.metrics
                .errors
                .fetch_add(failures.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let Some(err_out) = self.stage.error_output.clone() else {
                let f = &failures[0];
                let msg = format!("record {} failed: {}", describe_record(&f.record), f.msg);
                *self.metrics.last_error.lock().unwrap() = Some(msg.clone());
                return Err(msg.into());
            };
            let letters: Vec<Record> = failures
                .into_iter()
                .map(|f| dead_letter(&self.stage.name, f, 1))
                .collect();
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
            .fetch_add(n_main + n_named, std::sync::atomic::Ordering::Relaxed);
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

    async fn ack(&mut self, input: usize) -> Result<(), ActorProcessingErr> {
        let port = &self.inputs[input];
        let Some(epoch) = port.epoch else {
            return Ok(());
        };
        let msg = CtlMsg::Ack {
            consumer: self.consumer_id.clone(),
            epoch,
            next: port.processed,
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
        if !force && port.last_resend.is_some_and(|t| t.elapsed() < RESEND_GAP) {
            return Ok(());
        }
        port.last_resend = Some(Instant::now());
        let msg = CtlMsg::Resend {
            consumer: self.consumer_id.clone(),
            epoch: port.epoch.unwrap_or(0),
            from,
        };
        port.ctl.put(encode_ctl(&msg)?).await?;
        Ok(())
    }

    async fn resend(&mut self, idx: usize, from: u64) -> Result<(), ActorProcessingErr> {
        let port = &mut self.outputs[idx];
        let from = from.max(port.log.min_acked());
        for payload in port.log.resend_from(from, port.window) {
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
    let mut fields = Fields::new();
    fields.insert("element".into(), Value::Map(f.record.fields));
    fields.insert("msg".into(), Value::String(f.msg));
    fields.insert("stage".into(), Value::String(stage.to_owned()));
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
        records: Vec<Record>,
    },
    /// The end of input `input`, numbered `seq`.
    End { input: usize, epoch: u64, seq: u64 },
    /// A duplicate arrived on `input`: the producer missed our ack.
    Duplicate { input: usize },
    /// Input `input` skipped numbers: ask again from `from`.
    Gap { input: usize, from: u64 },
    /// A consumer's message about output `output`.
    Ctl { output: usize, msg: CtlMsg },
    /// Timers.
    Tick,
    /// Sources: emit more now.
    Poll,
}

enum Pending {
    Data {
        input: usize,
        epoch: u64,
        first_seq: u64,
        records: Vec<Record>,
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
    /// (records, failures) a restarted source still has to skip.
    skip: (u64, u64),
    poll_at: Option<Instant>,
    offload: Offload,
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
}

impl Offload {
    const HEAVY: f64 = 200.0;

    fn run<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = if self.avg_us > Self::HEAVY {
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
        let node = match sh.prebuilt.take() {
            Some(n) => n,
            None => {
                let ctx = BuildContext {
                    pipeline: &sh.pipeline,
                    stage: &sh.stage.name,
                    attempt: args.attempt,
                    base_dir: &args.base_dir,
                    extensions: &args.extensions,
                };
                sh.stage.node.build(&ctx)?
            }
        };
        sh.metrics
            .started
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let mut subs = Vec::new();
        // inputs: a fresh incarnation expects what was processed last
        for (i, port) in sh.inputs.iter_mut().enumerate() {
            {
                let mut r = port.received.lock().unwrap();
                r.epoch = port.epoch;
                r.next = port.processed;
            }
            let received = port.received.clone();
            let me = myself.clone();
            let label = port.label.clone();
            let sub = args
                .session
                .declare_subscriber(port.data_key.clone())
                .callback(move |sample| {
                    let bytes = sample.payload().to_bytes();
                    let msg = match decode_data(&bytes) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(input = %label, "ignoring an undecodable message: {e}");
                            return;
                        }
                    };
                    let (epoch, first, count) = match &msg {
                        DataMsg::Batch {
                            producer,
                            first_seq,
                            records,
                        } => (producer.epoch, *first_seq, records.len() as u64),
                        DataMsg::End { producer, seq } => (producer.epoch, *seq, 1),
                    };
                    if count == 0 {
                        return;
                    }
                    let arrival = received.lock().unwrap().arrive(epoch, first, count);
                    let out = match (arrival, msg) {
                        (Arrival::Fresh { skip }, DataMsg::Batch { mut records, .. }) => {
                            records.drain(..skip);
                            StageMsg::Data {
                                input: i,
                                epoch,
                                first_seq: first + skip as u64,
                                records,
                            }
                        }
                        (Arrival::Fresh { .. }, DataMsg::End { seq, .. }) => StageMsg::End {
                            input: i,
                            epoch,
                            seq,
                        },
                        (Arrival::Duplicate, _) => StageMsg::Duplicate { input: i },
                        (Arrival::Gap { from }, _) => StageMsg::Gap { input: i, from },
                    };
                    let _ = me.cast(out);
                })
                .await?;
            subs.push(sub);
        }
        let key = sh.stage.key_name();
        for (o, port) in sh.outputs.iter().enumerate() {
            if !port.log.has_consumers() {
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
        }
        // ask every input for what we have not processed yet
        for i in 0..sh.inputs.len() {
            let from = sh.inputs[i].processed;
            sh.request_resend(i, from, true).await?;
        }
        let skip = match &node {
            Node::Source(src) if src.deterministic() => (sh.source_emitted, sh.source_failed),
            _ => (0, 0),
        };
        drop(sh);
        myself.send_interval(TICK, || StageMsg::Tick);
        if matches!(node, Node::Source(_)) {
            myself.cast(StageMsg::Poll)?;
        }
        Ok(StageState {
            shared: args.shared,
            node,
            pending: VecDeque::new(),
            skip,
            poll_at: None,
            offload: Offload::default(),
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
                records,
            } => {
                let depth = sh
                    .metrics
                    .queue_depth
                    .fetch_add(records.len() as i64, std::sync::atomic::Ordering::Relaxed)
                    + records.len() as i64;
                sh.metrics
                    .queue_high_water
                    .fetch_max(depth, std::sync::atomic::Ordering::Relaxed);
                st.pending.push_back(Pending::Data {
                    input,
                    epoch,
                    first_seq,
                    records,
                });
                drive(&mut sh, st).await?;
            }
            StageMsg::End { input, epoch, seq } => {
                st.pending.push_back(Pending::End { input, epoch, seq });
                drive(&mut sh, st).await?;
            }
            StageMsg::Duplicate { input } => sh.ack(input).await?,
            StageMsg::Gap { input, from } => sh.request_resend(input, from, false).await?,
            StageMsg::Ctl { output, msg } => match msg {
                CtlMsg::Ack { consumer, next, .. } => {
                    let port = &mut sh.outputs[output];
                    if port.log.ack(&consumer, next) {
                        port.last_progress = Instant::now();
                        port.rto = RTO_MIN;
                        drive(&mut sh, st).await?;
                        if matches!(st.node, Node::Source(_)) && st.poll_at.is_none() {
                            poll_source(&mut sh, st, &myself).await?;
                        }
                    }
                }
                CtlMsg::Resend { from, .. } => sh.resend(output, from).await?,
            },
            StageMsg::Tick => {
                for o in 0..sh.outputs.len() {
                    let port = &mut sh.outputs[o];
                    if port.log.unacked() > 0 && port.last_progress.elapsed() >= port.rto {
                        port.rto = (port.rto * 2).min(RTO_MAX);
                        port.last_progress = Instant::now();
                        let from = port.log.min_acked();
                        debug!(stage = %sh.stage.name, output = o, from, "resending unacknowledged records");
                        sh.resend(o, from).await?;
                    }
                }
                if st.poll_at.is_some_and(|t| Instant::now() >= t) {
                    st.poll_at = None;
                    poll_source(&mut sh, st, &myself).await?;
                }
            }
            StageMsg::Poll => {
                // a timed poll may find its wait already over (or another
                // poll earlier): poll when nothing is scheduled in the future
                if st.poll_at.is_none_or(|t| Instant::now() >= t) {
                    st.poll_at = None;
                    poll_source(&mut sh, st, &myself).await?;
                }
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

/// Processes queued input while the outputs have room.
async fn drive(sh: &mut StageShared, st: &mut StageState) -> Result<(), ActorProcessingErr> {
    while !sh.outputs_blocked() {
        let Some(item) = st.pending.pop_front() else {
            break;
        };
        match item {
            Pending::Data {
                input,
                epoch,
                first_seq,
                records,
            } => {
                let n = records.len() as u64;
                sh.metrics
                    .queue_depth
                    .fetch_sub(n as i64, std::sync::atomic::Ordering::Relaxed);
                if sh.inputs[input].epoch != Some(epoch) {
                    sh.inputs[input].epoch = Some(epoch);
                    sh.inputs[input].processed = 0;
                }
                if first_seq != sh.inputs[input].processed {
                    // stale (queued before a restart of the producer); the
                    // cursor asks again where needed
                    continue;
                }
                sh.metrics
                    .records_in
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                let started = Instant::now();
                let mut out = Emitter::new();
                let result = match &mut st.node {
                    Node::Transform(t) => st.offload.run(|| t.process(records, &mut out)),
                    Node::Sink(s) => st.offload.run(|| s.write(records, &mut out)),
                    Node::Source(_) => Ok(()),
                };
                sh.metrics.observe_latency(started.elapsed());
                if let Err(e) = result {
                    *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
                    return Err(e.into());
                }
                sh.route(&mut out).await?;
                sh.inputs[input].processed = first_seq + n;
                sh.ack(input).await?;
            }
            Pending::End { input, epoch, seq } => {
                if sh.inputs[input].epoch != Some(epoch) {
                    sh.inputs[input].epoch = Some(epoch);
                    sh.inputs[input].processed = 0;
                }
                if sh.inputs[input].processed != seq {
                    continue;
                }
                sh.inputs[input].ended = true;
                sh.inputs[input].processed = seq + 1;
                sh.ack(input).await?;
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
                    sh.publish_end().await?;
                    sh.finished_node = true;
                }
            }
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
    let Node::Source(src) = &mut st.node else {
        return Ok(());
    };
    if sh.source_done {
        return Ok(());
    }
    let room = sh
        .outputs
        .iter()
        .map(|o| o.log.room())
        .min()
        .unwrap_or(u64::MAX);
    if room == 0 {
        return Ok(()); // an ack will poll again
    }
    let max = room.min(sh.batch_size as u64) as usize;
    let mut out = Emitter::new();
    let started = Instant::now();
    let status = st.offload.run(|| src.poll(max, &mut out));
    sh.metrics.observe_latency(started.elapsed());
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
            return Err(e.into());
        }
    };
    let (main, named, failures) = out.take();
    let (n_main, n_failed) = (main.len() as u64, failures.len() as u64);
    // a restarted deterministic source replays what an earlier incarnation
    // emitted: skip it
    let skip_main = st.skip.0.min(n_main) as usize;
    let skip_failed = st.skip.1.min(n_failed) as usize;
    st.skip.0 -= skip_main as u64;
    st.skip.1 -= skip_failed as u64;
    for r in main.into_iter().skip(skip_main) {
        out.emit(r);
    }
    if skip_main == 0 {
        for (n, v) in named {
            for r in v {
                out.emit_to(&n, r);
            }
        }
    }
    for f in failures.into_iter().skip(skip_failed) {
        out.fail(f.record, f.msg);
    }
    sh.route(&mut out).await?;
    // counted only once routed: a batch that failed the stage is emitted again
    sh.source_emitted += n_main;
    sh.source_failed += n_failed;
    match status {
        SourceStatus::More => {
            myself.cast(StageMsg::Poll)?;
        }
        SourceStatus::Wait(d) => {
            st.poll_at = Some(Instant::now() + d);
            myself.send_after(d, || StageMsg::Poll);
        }
        SourceStatus::Done => {
            sh.source_done = true;
            sh.publish_end().await?;
        }
    }
    Ok(())
}
