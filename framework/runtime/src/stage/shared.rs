//! What of a stage outlives its actor: [`StageShared`], its ports, and
//! the checks of its state (dirty, done, blocked).

use super::*;

/// One output of a stage.
pub(crate) struct OutPort {
    pub name: Option<String>,
    pub producer: ProducerId,
    pub publisher: Publisher<'static>,
    pub log: OutputLog<ZBytes>,
    pub window: u64,
    pub(crate) last_progress: Instant,
    pub(crate) rto: Duration,
    /// The live liveliness tokens of each consumer, and since when a
    /// consumer with records to acknowledge has had none (unreachable).
    pub(crate) tokens: std::collections::HashMap<String, std::collections::HashSet<String>>,
    pub(crate) gone: std::collections::HashMap<String, Instant>,
    /// The tokens that tell each consumer its acknowledgement of the end
    /// arrived ([`ended_key`]), by consumer.
    pub(crate) ended: std::collections::HashMap<String, LivelinessToken>,
    /// The log's messages below this number are durable (flushed): only
    /// they go out under `exactly_once`. The log's committed mark can be
    /// ahead while a commit's flush runs ([`StageShared::commit_soon`]).
    pub(crate) durable_seq: u64,
    /// Every consumer runs in this process (`exactly_once`): the messages
    /// go out as soon as the commit that holds them is written, before it
    /// is flushed. The consumers' own flushes wait for this output's
    /// ([`OutPort::mark`]), so none of them can make durable what it did
    /// with a message that was lost.
    pub(crate) local_early: bool,
    /// The producer epoch and the number below which the log is durable,
    /// for the consumers in this process (set by the flush itself).
    pub(crate) mark: Mark,
}

/// An output's durable mark: its producer epoch, and the number below
/// which its log is flushed ([`OutPort::mark`]).
pub(crate) type Mark = Arc<tokio::sync::watch::Sender<(u64, u64)>>;

/// How long a finished consumer waits for a producer's confirmation before
/// it says what it waits for.
pub(crate) const UNREACHABLE_WARN: Duration = Duration::from_secs(10);

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
    /// The position of the last commit (written to the store; a new
    /// incarnation starts from it).
    pub committed: InputPos,
    /// The position of the last durable (flushed) commit: what an
    /// acknowledgement says.
    pub durable: InputPos,
    /// The producer's durable mark ([`OutPort::mark`]) when it runs in
    /// this process: a commit's flush waits until the producer's covers
    /// what the commit consumed.
    pub(crate) upstream: Option<tokio::sync::watch::Receiver<(u64, u64)>>,
    /// A `best_effort` input: gaps are skipped, nothing is asked again.
    pub lossy: bool,
    /// The producer's tokens, (epoch, session) → still live (shared with
    /// the subscribers' callbacks): data of an epoch no live token
    /// announces is dropped.
    #[allow(clippy::type_complexity)]
    pub announced: Arc<std::sync::Mutex<std::collections::HashMap<(u64, String), bool>>>,
    pub(crate) last_resend: Option<Instant>,
    /// Since when no token of the producer is live (while the input has
    /// not ended): it is unreachable.
    pub(crate) gone: Option<Instant>,
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
    pub(crate) ckpt: CheckpointInterval,
    /// The node built before the run started (taken by the first incarnation).
    pub(crate) prebuilt: std::sync::Mutex<Option<Node>>,
    /// What a source has emitted (and failed) so far, and what of it is
    /// committed: a restarted deterministic source seeks or skips past it.
    pub(crate) source: SourcePos,
    pub(crate) source_committed: SourcePos,
    pub(crate) finished_node: bool,
    pub(crate) finished_committed: bool,
    pub(crate) batch_size: usize,
    /// The node's dynamic batching, if it asks for it.
    pub(crate) batching: Option<rill_core::node::Batching>,
    /// The stage's compute pool (`resources.cpu_threads`).
    pub(crate) pool: Option<Arc<rayon::ThreadPool>>,
    /// Records consumed or produced since the last commit, and since when.
    pub(crate) dirty_records: u64,
    pub(crate) dirty_since: Option<Instant>,
    pub(crate) commit_queued: bool,
    /// The stage's dead-letter queue file (stages with `error_handling`).
    pub(crate) dlq: Option<crate::dlq::DlqFile>,
    /// The node is a source that cannot make its records again.
    pub(crate) unrepeatable_source: bool,
    /// Event time: the inputs' watermarks and what the stage sent, and
    /// what of it is committed.
    pub(crate) clock: Clock,
    pub(crate) clock_committed: Clock,
    /// When each input last sent something (idle inputs stop holding the
    /// stage's watermark back).
    pub(crate) last_heard: Vec<Instant>,
    /// The stage's request queue (`serve:`), shared with the servers.
    pub(crate) requests: Option<Arc<rill_core::serve::RequestQueue>>,
    pub(crate) _alive: Option<LivelinessToken>,
    pub(crate) session: Session,
    /// Commits written to the store and not yet flushed, oldest first
    /// ([`StageShared::commit_soon`]); what waits for each goes out when it
    /// is durable.
    pub(crate) unflushed: VecDeque<super::commit::Applied>,
    /// For each background flush running, the number of the last commit
    /// it covers.
    pub(crate) flushing: Vec<u64>,
    /// The reports of background flushes, put there by the flushes.
    pub(crate) flush_done: super::commit::FlushReports,
    /// Numbers the commits.
    pub(crate) commit_number: u64,
    /// A commit waits for a producer in this process to flush what the
    /// stage consumed of it: the stage takes no input until it is written.
    pub(crate) frozen: bool,
    /// A task waits for the producers' flushes (and then asks for the
    /// commit again).
    pub(crate) dep_waiter: Arc<std::sync::atomic::AtomicBool>,
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
        let committed = Committed::load(store.as_ref()).map_err(SetupError::Store)?;
        let epoch = committed.epoch;
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
            // a log written by a build with another payload layout cannot
            // be sent: say so now, not as undecodable messages downstream
            if let Some((seq, _, p)) = log.log.entries_from(0).next()
                && let Err(e) = rill_core::codec::body(&p.to_bytes())
            {
                return Err(SetupError::Store(format!(
                    "the committed output log of `{}` holds message {seq} that this build cannot read ({e}): the state was written by another version of rill; run again with --reset-state",
                    stage.name
                )));
            }
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
                durable_seq: log.committed_seq(),
                local_early: false,
                mark: Arc::new(tokio::sync::watch::Sender::new((
                    epoch,
                    log.committed_seq(),
                ))),
                log,
                window,
                last_progress: Instant::now(),
                rto: RTO_MIN,
                tokens: std::collections::HashMap::new(),
                gone: std::collections::HashMap::new(),
                ended: std::collections::HashMap::new(),
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
            let position = Committed::input(store.as_ref(), &label).map_err(SetupError::Store)?;
            inputs.push(InPort {
                label,
                data_key: data_key(&pipeline.name, &producer, inp.output.as_deref()),
                producer_key: producer,
                ctl,
                received: Arc::default(),
                processed: position.next,
                epoch: position.epoch,
                ended: position.ended,
                committed: position,
                durable: position,
                upstream: None,
                lossy: inp.delivery == Some(Delivery::BestEffort)
                    || pipeline.options.delivery == Delivery::BestEffort,
                announced: Arc::default(),
                gone: None,
                last_resend: None,
            });
        }
        let (source, finished) = (committed.source, committed.finished);
        let clock = match store.get(CLOCK_KEY) {
            Ok(Some(b)) => {
                durable::decode::<Clock>("the stage's clock", &b).map_err(SetupError::Store)?
            }
            Ok(None) => Clock::new(stage.inputs.len()),
            Err(e) => return Err(SetupError::Store(e.to_string())),
        };
        if clock.inputs.len() != stage.inputs.len() {
            return Err(SetupError::Store(format!(
                "the stage's committed clock has {} inputs, the pipeline gives it {}: the pipeline changed; run with --reset-state",
                clock.inputs.len(),
                stage.inputs.len()
            )));
        }
        let dlq = match &stage.error_output {
            None => None,
            Some(_) => {
                let path = crate::dlq::dlq_path(state_root, &pipeline.name, &key);
                let d = crate::dlq::DlqFile::open(path, committed.dlq_len)
                    .map_err(SetupError::Store)?;
                if committed.dlq_len.is_none() {
                    // a new run adopts the queue as it is, durably, before
                    // it appends: letters it writes and does not commit are
                    // then cut off after a crash, not adopted too
                    Committed::adopt_dlq_len(store.as_ref(), d.committed_len())
                        .map_err(SetupError::Store)?;
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
        let requests = stage.serve.as_ref().map(|s| {
            metrics
                .requests
                .get_or_init(|| Arc::new(rill_core::serve::RequestQueue::new(&stage.name, s.queue)))
                .clone()
        });
        Ok(StageShared {
            requests,
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
            clock_committed: clock.clone(),
            clock,
            last_heard: vec![Instant::now(); stage.inputs.len()],
            _alive: alive,
            session: session.clone(),
            unflushed: VecDeque::new(),
            flushing: Vec::new(),
            flush_done: Default::default(),
            commit_number: 0,
            frozen: false,
            dep_waiter: Default::default(),
        })
    }
    /// Forgets everything since the last commit: a new incarnation of the
    /// stage starts from there.
    pub(crate) fn rollback(&mut self) {
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
        self.clock = self.clock_committed.clone();
        self.state.discard();
        self.dirty_records = 0;
        self.dirty_since = None;
        self.commit_queued = false;
        self.frozen = false;
        // a waiter of the last incarnation wakes no one now
        self.dep_waiter = Default::default();
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
    pub(crate) fn publish_early(&self) -> bool {
        self.delivery != Delivery::ExactlyOnce && !self.unrepeatable_source
    }
    pub(crate) fn outputs_blocked(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| o.log.log.has_consumers() && o.log.log.room() == 0)
    }
    /// An output is half full of records not yet committed: commit now so
    /// consumers get them while the stage fills the other half.
    pub(crate) fn commit_due(&self) -> bool {
        self.dirty_records >= self.ckpt.records
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.ckpt.time)
            || self.outputs.iter().any(|o| {
                o.log.log.has_consumers()
                    && o.log.log.next_seq() - o.log.committed_seq() >= o.window.div_ceil(2)
            })
    }
    pub(crate) fn dirty(&self) -> bool {
        self.dirty_since.is_some()
    }
    pub(crate) fn mark_dirty(&mut self, records: u64) {
        self.dirty_records += records;
        self.dirty_since.get_or_insert_with(Instant::now);
    }
    /// The stage's outputs carry a watermark derived from the event times
    /// it emits (a source, or a node that assigns timestamps).
    pub(crate) fn own_watermark(&self) -> bool {
        self.stage.kind == rill_core::NodeKind::Source || self.stage.node.assigns_timestamps()
    }
    /// The node acts on the stage's watermark.
    pub(crate) fn node_uses_watermarks(&self) -> bool {
        self.stage.kind == rill_core::NodeKind::Transform && self.stage.node.uses_watermarks()
    }
    pub(crate) fn inputs_ended(&self) -> bool {
        self.inputs.iter().all(|i| i.ended)
    }
    pub(crate) fn done(&self) -> bool {
        let node_done = match self.stage.kind {
            rill_core::NodeKind::Source => self.source_committed.done,
            _ => self.finished_committed,
        };
        // the consumers' last acks must be durable too (the trim of what
        // they acknowledged committed): a producer restarted from a store
        // that still holds its end waits for acks from consumers that have
        // finished and left
        // a stage that serves answers requests until it is stopped
        node_done
            && self.requests.is_none()
            && !self.dirty()
            && self.unflushed.is_empty()
            && self.flushing.is_empty()
            && self
                .outputs
                .iter()
                .all(|o| o.log.log.finished() && !o.log.log.has_trimmed())
    }
}
