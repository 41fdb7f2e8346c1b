//! The stage actor itself: its messages, what an incarnation holds, and
//! the ractor callbacks that wire subscriptions and dispatch messages to
//! the parts in the sibling modules.

use super::*;

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
    /// Input `input`'s watermark, numbered `seq`.
    Watermark {
        input: usize,
        epoch: u64,
        seq: u64,
        time: i64,
    },
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
    /// No token of the producer of input `input` is live any more.
    ProducerDown { input: usize },
    /// A consumer of output `output` came up.
    ConsumerUp {
        output: usize,
        consumer: String,
        token: String,
    },
    /// A token of consumer `consumer` of output `output` went away.
    ConsumerDown {
        output: usize,
        consumer: String,
        token: String,
    },
    /// Commit what is pending (queued behind the input that arrived before
    /// it, so one commit covers all of it).
    Commit,
    /// A background flush ended ([`StageShared::commit_soon`]): its report
    /// waits in the stage's shared part (taken at every message).
    Flushed,
    /// Timers.
    Tick,
    /// A gathering batch reached its `max_batch_delay`.
    Flush,
    /// Sources: emit more now.
    Poll,
    /// Requests arrived in the stage's empty request queue (`serve:`).
    Requests,
    /// Graceful stop: commit what was processed and stop.
    Drain,
}

/// Fresh records still in the payload they arrived in.
pub struct Encoded {
    pub(crate) payload: ZBytes,
    /// Where the records start in the payload.
    pub(crate) records_at: usize,
    /// How many of them were seen already (dropped after decoding).
    pub(crate) skip: usize,
    /// How many are fresh.
    pub(crate) count: usize,
}

impl Encoded {
    /// The fresh records.
    fn decode(&self) -> Result<Vec<Record>, CodecError> {
        let mut records = decode_records(&self.payload.to_bytes(), self.records_at)?;
        records.drain(..self.skip.min(records.len()));
        Ok(records)
    }
}

pub(crate) enum Pending {
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
    Watermark {
        input: usize,
        epoch: u64,
        seq: u64,
        time: i64,
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
    pub(crate) shared: Arc<Mutex<StageShared>>,
    pub(crate) node: Node,
    pub(crate) pending: VecDeque<Pending>,
    /// What a restarted source still has to drop (it replays from its
    /// start what earlier incarnations emitted).
    pub(crate) replay: Replay,
    pub(crate) poll_at: Option<Instant>,
    pub(crate) offload: Offload,
    /// When a `Flush` is scheduled for a batch that is still gathering.
    pub(crate) flush_at: Option<Instant>,
    pub(crate) draining: bool,
    /// Every input ended while the node still had output pending: it
    /// finishes once that is out.
    pub(crate) finish_due: bool,
    pub(crate) _subs: Vec<Subscriber<()>>,
    /// Closes the request queue when this incarnation ends, however it
    /// ends: what waits is answered "stage not running" (HTTP 503).
    pub(crate) _serving: Option<CloseOnDrop>,
}

/// Closes a stage's request queue when dropped.
pub(crate) struct CloseOnDrop(Arc<rill_core::serve::RequestQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(&format!(
            "stage `{}` is not running (restarting after a failure, or stopping); retry shortly",
            self.0.stage()
        ));
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
        // a new incarnation starts from the last commit; one whose flush
        // was still running when the last incarnation stopped makes it
        // durable first, before anything of it is sent again
        sh.rollback();
        sh.settle().await?;
        let prebuilt = sh.prebuilt.get_mut().unwrap().take();
        let mut node = match prebuilt {
            Some(n) => n,
            None => {
                // the new node gets state of its own: an earlier one that
                // was abandoned mid-call may still write to the old
                sh.state = sh.state.detached();
                build_node(&sh, args.attempt, &args.base_dir, &args.extensions)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        sh.metrics
            .started
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let subs = subscribe(&mut sh, &args.session, &myself).await?;
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
        // a restart between the last input's end and the finish that
        // waited for a large firing finishes when that is out
        let finish_due = !sh.inputs.is_empty()
            && sh.inputs_ended()
            && !sh.finished_node
            && !matches!(node, Node::Source(_));
        let pool = sh.pool.clone();
        // requests are taken from now on; arriving ones wake the actor
        let serving = sh.requests.clone().map(|q| {
            let me = myself.clone();
            q.set_waker(move || {
                let _ = me.cast(StageMsg::Requests);
            });
            q.open();
            CloseOnDrop(q)
        });
        drop(sh);
        myself.send_interval(TICK, || StageMsg::Tick);
        if matches!(node, Node::Source(_)) {
            myself.cast(StageMsg::Poll)?;
        }
        // a restart in the middle of a large firing goes on from there
        if finish_due || matches!(&node, Node::Transform(t) if t.pending()) {
            myself.cast(StageMsg::Flush)?;
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
            finish_due,
            _subs: subs,
            _serving: serving,
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
        // a background flush that ended: what waited for it goes out first,
        // whatever queued behind its report
        sh.reap(&myself).await?;
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
            StageMsg::Watermark {
                input,
                epoch,
                seq,
                time,
            } => {
                st.pending.push_back(Pending::Watermark {
                    input,
                    epoch,
                    seq,
                    time,
                });
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
                if let Some(since) = sh.inputs[input].gone.take() {
                    let port = &sh.inputs[input];
                    warn!(
                        stage = %sh.stage.name,
                        input = %port.label,
                        "producer `{}` is reachable again after {:.1} s; asking it for the records from {from} on",
                        port.producer_key,
                        since.elapsed().as_secs_f64()
                    );
                }
                sh.request_resend(input, from, true).await?;
                sh.ack(input).await?;
            }
            StageMsg::ProducerDown { input } => {
                let stage = sh.stage.name.clone();
                let port = &mut sh.inputs[input];
                if !port.ended && port.gone.is_none() {
                    port.gone = Some(Instant::now());
                    let from = port.received.lock().unwrap().next;
                    warn!(
                        stage = %stage,
                        input = %port.label,
                        "producer `{}` is unreachable: its process left or its link is cut (waiting for it; it resends from record {from} when it is back)",
                        port.producer_key
                    );
                }
            }
            StageMsg::ConsumerUp {
                output,
                consumer,
                token,
            } => {
                let port = &mut sh.outputs[output];
                port.tokens
                    .entry(consumer.clone())
                    .or_default()
                    .insert(token);
                let from = port.log.log.min_acked();
                let waiting = port.log.log.next_seq().saturating_sub(from);
                if let Some(since) = port.gone.remove(&consumer) {
                    let name = port.name.clone();
                    warn!(
                        stage = %sh.stage.name,
                        output = name.as_deref().unwrap_or("main"),
                        "consumer `{consumer}` is reachable again after {:.1} s; resending the {waiting} records it has not acknowledged",
                        since.elapsed().as_secs_f64()
                    );
                }
                sh.resend(output, from).await?;
            }
            StageMsg::ConsumerDown {
                output,
                consumer,
                token,
            } => {
                let port = &mut sh.outputs[output];
                let left = port.tokens.get_mut(&consumer).map(|t| {
                    t.remove(&token);
                    t.is_empty()
                });
                let acked = port
                    .log
                    .log
                    .acks()
                    .find(|(c, _)| *c == consumer)
                    .map_or(0, |(_, a)| a);
                let pending = port.log.log.next_seq().saturating_sub(acked);
                let ended = port.log.log.end_seq().is_some_and(|e| acked > e);
                if left == Some(true) && !ended && !port.gone.contains_key(&consumer) {
                    port.gone.insert(consumer.clone(), Instant::now());
                    let name = port.name.clone();
                    warn!(
                        stage = %sh.stage.name,
                        output = name.as_deref().unwrap_or("main"),
                        "consumer `{consumer}` is unreachable: its process left or its link is cut ({pending} records it has not acknowledged are kept for it, and sent again when it is back)"
                    );
                }
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

                        let ended_now = port
                            .log
                            .log
                            .end_seq()
                            .is_some_and(|e| next > e && !port.ended.contains_key(&consumer));
                        if port.log.log.finished() || ended_now {
                            // the last ack (of all, or of one consumer):
                            // made durable at once (the consumer may finish
                            // and leave now)
                            sh.commit(&mut st.node).await?;
                        } else if port.log.log.has_trimmed() {
                            queue_commit(&mut sh, &myself)?;
                        }

                        drive(&mut sh, st, &myself).await?;
                        if matches!(st.node, Node::Source(_)) && st.poll_at.is_none() {
                            poll_source(&mut sh, st, &myself).await?;
                        }
                    }
                    // a consumer that acknowledged the end (durably: that
                    // ack was committed at once, or loaded from the store)
                    // is told so by a token it waits for before it leaves;
                    // a repeated ack after a restart gets it too
                    let port = &sh.outputs[output];
                    let ended = epoch == port.producer.epoch
                        && !port.ended.contains_key(&consumer)
                        && port.log.log.end_seq().is_some_and(|e| {
                            port.log.log.acks().any(|(c, a)| c == consumer && a > e)
                        });
                    if ended {
                        let key = ended_key(&sh.pipeline, &sh.stage.key_name(), &consumer);
                        if let Ok(t) = sh.session.liveliness().declare_token(key).await {
                            sh.outputs[output].ended.insert(consumer, t);
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
                let was_frozen = sh.frozen;
                sh.commit_soon(&mut st.node, &myself).await?;
                // the input held back while the commit waited goes on
                if was_frozen && !sh.frozen {
                    drive(&mut sh, st, &myself).await?;
                }
            }
            // taken above
            StageMsg::Flushed => {}
            StageMsg::Tick => {
                if sh.node_uses_watermarks() && !sh.finished_node && !node_pending(&sh, st) {
                    // an input that went quiet stops holding the watermark
                    // back; early firings are due on processing time
                    advance_watermark(&mut sh, st).await?;
                    if call_hook(&mut sh, st, |t, out| t.on_timer(out)).await? {
                        sh.mark_dirty(0);
                    }
                    after_work(&mut sh, st, &myself).await?;
                }
                if node_pending(&sh, st) || st.finish_due {
                    drive(&mut sh, st, &myself).await?;
                }
                // a sink with work due on time alone (a part to roll on a
                // stream that went quiet) commits without new input
                if !sh.finished_node && matches!(&st.node, Node::Sink(s) if s.checkpoint_due()) {
                    sh.mark_dirty(0);
                    sh.commit(&mut st.node).await?;
                }
                if sh.commit_due() {
                    sh.commit_soon(&mut st.node, &myself).await?;
                }
                let mut unreachable_ms = sh
                    .inputs
                    .iter()
                    .filter_map(|i| i.gone.map(|t| t.elapsed().as_millis() as u64))
                    .max()
                    .unwrap_or(0);
                for o in 0..sh.outputs.len() {
                    let port = &mut sh.outputs[o];
                    let gone = port
                        .gone
                        .values()
                        .map(|t| t.elapsed().as_millis() as u64)
                        .max()
                        .unwrap_or(0);
                    unreachable_ms = unreachable_ms.max(gone);
                    let port = &mut sh.outputs[o];
                    if port.log.log.unacked() > 0 && port.last_progress.elapsed() >= port.rto {
                        port.rto = (port.rto * 2).min(RTO_MAX);
                        port.last_progress = Instant::now();
                        let from = port.log.log.min_acked();
                        debug!(stage = %sh.stage.name, output = o, from, "resending unacknowledged records");
                        sh.resend(o, from).await?;
                    }
                }
                sh.metrics
                    .unreachable_ms
                    .store(unreachable_ms, std::sync::atomic::Ordering::Relaxed);
                if st.poll_at.is_some_and(|t| Instant::now() >= t) {
                    st.poll_at = None;
                    poll_source(&mut sh, st, &myself).await?;
                }
            }
            StageMsg::Flush => {
                st.flush_at = None;
                drive(&mut sh, st, &myself).await?;
            }
            StageMsg::Requests => drive(&mut sh, st, &myself).await?,
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
                if let Some(q) = &sh.requests {
                    q.close(&format!("stage `{}` is stopping", sh.stage.name));
                }
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
