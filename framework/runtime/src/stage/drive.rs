//! Processing what is queued: admitting input, gathering batches, calling
//! the node, routing, and committing (group commit).

use super::*;

/// Commits now when a threshold is reached, else queues a commit behind the
/// input already waiting (group commit).
pub(crate) async fn after_work(
    sh: &mut StageShared,
    st: &mut StageState,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    if !sh.dirty() {
        return Ok(());
    }
    if sh.commit_due() {
        sh.commit_soon(&mut st.node, myself).await
    } else {
        queue_commit(sh, myself)
    }
}

pub(crate) fn queue_commit(
    sh: &mut StageShared,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    if !sh.commit_queued {
        sh.commit_queued = true;
        myself.cast(StageMsg::Commit)?;
    }
    Ok(())
}

/// Whether a message (records or an end marker) numbered from `first` on
/// `input` is the next one to process ([`gather::admit`]); else it is stale
/// or from an ended input, and skipped.
pub(crate) fn accept(sh: &mut StageShared, input: usize, epoch: u64, first: u64) -> bool {
    let port = &mut sh.inputs[input];
    let mut at = InputState {
        epoch: port.epoch,
        processed: port.processed,
        ended: port.ended,
        lossy: port.lossy,
    };
    let admitted = gather::admit(&mut at, epoch, first);
    port.epoch = at.epoch;
    port.processed = at.processed;
    match admitted {
        Admission::Take { restarted } => {
            if restarted {
                warn!(stage = %sh.stage.name, input = %port.label,
                    "the producer started over (its state was reset): reading it from its start");
            }
            true
        }
        Admission::Skip => false,
    }
}

/// What is queued, as [`gather::gather`] sees it.
fn queued(pending: &VecDeque<Pending>, oldest: Instant) -> Queued {
    let mut q = Queued {
        records: 0,
        oldest,
        end: false,
    };
    for p in pending {
        match p {
            Pending::Data { records, .. } => q.records += records.len(),
            // the end, or a watermark: what came before goes now
            Pending::End { .. } | Pending::Watermark { .. } => {
                q.end = true;
                break;
            }
        }
    }
    q
}

/// Processes queued input while the outputs have room.
pub(crate) async fn drive(
    sh: &mut StageShared,
    st: &mut StageState,
    myself: &ActorRef<StageMsg>,
) -> Result<(), ActorProcessingErr> {
    loop {
        if sh.outputs_blocked() {
            // under exactly_once the consumers see nothing before a commit
            if sh.dirty() {
                sh.commit_soon(&mut st.node, myself).await?;
            }
            // requests send nothing downstream: they go on
            if serve_requests(sh, st, myself).await? {
                continue;
            }
            break;
        }
        // what the last watermark fires comes first, a part at a time as
        // the outputs have room; no input is taken before it is out
        if node_pending(sh, st) {
            call_hook(sh, st, |t, out| t.resume(out)).await?;
            sh.mark_dirty(0);
            continue;
        }
        if st.finish_due {
            finish_node(sh, st).await?;
            continue;
        }
        // a commit waits for a producer's flush: no input until it is written
        let front = if sh.frozen { None } else { st.pending.front() };
        let Some(front) = front else {
            if serve_requests(sh, st, myself).await? {
                continue;
            }
            break;
        };
        if let Pending::Data { arrived, .. } = front {
            // dynamic batching: wait for more until the batch is full, the
            // oldest record has waited long enough, or an input ends;
            // waiting requests count toward the batch
            let now = Instant::now();
            let mut q = queued(&st.pending, *arrived);
            let waiting = sh.requests.as_ref().and_then(|r| r.waiting());
            if let Some((rows, oldest)) = waiting {
                q.records += rows;
                q.oldest = q.oldest.min(oldest);
            }
            let limit = match gather::gather(sh.batching, q, st.draining, now) {
                Gathered::WaitUntil(due) => {
                    if st.flush_at.is_none_or(|t| t > due) {
                        st.flush_at = Some(due);
                        myself.send_after(due.saturating_duration_since(now), || StageMsg::Flush);
                    }
                    break;
                }
                Gathered::Take { limit } => limit,
            };
            // requests first, up to `serve.share` of the batch while the
            // stream waits too (the stream always gets a record or more)
            let full = limit;
            let limit = match (waiting, &sh.stage.serve) {
                (Some((rows, _)), Some(s)) if limit > 0 => {
                    let reserve = rows.min((s.share * limit as f64).ceil() as usize);
                    limit.saturating_sub(reserve).max(1)
                }
                _ => limit,
            };
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
                sh.last_heard[input] = Instant::now();
                if sh.stage.windowing_key.is_some() {
                    // `windowing:` on a transform puts its input into
                    // windows again (by event time)
                    for r in &mut recs {
                        r.window = None;
                    }
                }
                records.extend(recs);
            }
            if records.is_empty() {
                continue;
            }
            if let Some(r) = &sh.requests {
                r.grant(full.saturating_sub(records.len()));
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
            if sh.own_watermark() {
                sh.clock.emitted(out.main().iter().map(|r| r.event_time));
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
            Pending::Watermark {
                input,
                epoch,
                seq,
                time,
            } => {
                if !accept(sh, input, epoch, seq) {
                    continue;
                }
                sh.inputs[input].processed = seq + 1;
                sh.last_heard[input] = Instant::now();
                sh.clock.arrive(input, time);
                sh.mark_dirty(0);
                advance_watermark(sh, st).await?;
            }
            Pending::End { input, epoch, seq } => {
                if !accept(sh, input, epoch, seq) {
                    continue;
                }
                let port = &mut sh.inputs[input];
                port.ended = true;
                port.processed = seq + 1;
                sh.mark_dirty(0);
                // an ended input holds nothing back: when it was the last,
                // the watermark reaches the end of time before `finish`
                sh.clock.arrive(input, rill_core::window::END_OF_TIME);
                if !sh.finished_node {
                    advance_watermark(sh, st).await?;
                }
                if sh.inputs_ended() && !sh.finished_node {
                    // (after what the last watermark fires, when that
                    // takes more than one call)
                    if node_pending(sh, st) {
                        st.finish_due = true;
                    } else {
                        finish_node(sh, st).await?;
                    }
                }
            }
        }
    }
    after_work(sh, st, myself).await
}

/// Serves waiting requests alone (no stream records go with them): they
/// are gathered as the batcher gathers records (up to a full batch, or
/// until the oldest has waited `serve.max_batch_delay`), and the node is
/// called with no records and the grant to take them. Whether it called
/// the node.
async fn serve_requests(
    sh: &mut StageShared,
    st: &mut StageState,
    myself: &ActorRef<StageMsg>,
) -> Result<bool, ActorProcessingErr> {
    let Some(q) = sh.requests.clone() else {
        return Ok(false);
    };
    let Some((rows, oldest)) = q.waiting() else {
        return Ok(false);
    };
    let batching = sh.batching.map(|b| rill_core::node::Batching {
        max_batch_delay: sh
            .stage
            .serve
            .as_ref()
            .and_then(|s| s.max_batch_delay)
            .map_or(b.max_batch_delay, |d| d.0),
        ..b
    });
    let now = Instant::now();
    let queued = Queued {
        records: rows,
        oldest,
        end: false,
    };
    let limit = match gather::gather(batching, queued, st.draining, now) {
        Gathered::WaitUntil(due) => {
            if st.flush_at.is_none_or(|t| t > due) {
                st.flush_at = Some(due);
                myself.send_after(due.saturating_duration_since(now), || StageMsg::Flush);
            }
            return Ok(false);
        }
        Gathered::Take { limit } => limit,
    };
    q.grant(if limit == 0 { sh.batch_size } else { limit });
    let started = Instant::now();
    let (result, _) = call_node(sh, st, move |node| {
        let mut out = Emitter::new();
        let r = match node {
            Node::Transform(t) => t.process(Vec::new(), &mut out),
            _ => Ok(()),
        };
        (r, out)
    })
    .await?;
    sh.metrics.observe_latency(started.elapsed());
    if let Err(e) = result {
        *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
        return Err(e.into());
    }
    // (a node that took nothing would be called again and again)
    Ok(q.waiting().is_none_or(|(_, o)| o != oldest))
}

/// Whether the node has output left for the watermark it was given.
pub(crate) fn node_pending(sh: &StageShared, st: &StageState) -> bool {
    sh.node_uses_watermarks() && matches!(&st.node, Node::Transform(t) if t.pending())
}

/// Every input ended: the node finishes, the end goes out, and all of it
/// is committed at once.
pub(crate) async fn finish_node(
    sh: &mut StageShared,
    st: &mut StageState,
) -> Result<(), ActorProcessingErr> {
    st.finish_due = false;
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
    sh.commit(&mut st.node).await
}

/// Moves the stage's watermark to the minimum over its inputs that are not
/// idle; when it moved, a node that acts on event time fires what it
/// completes ([`Transform::on_watermark`]).
///
/// [`Transform::on_watermark`]: rill_core::node::Transform::on_watermark
pub(crate) async fn advance_watermark(
    sh: &mut StageShared,
    st: &mut StageState,
) -> Result<(), ActorProcessingErr> {
    let idle_for = Duration::from_millis(sh.stage.watermark.idle_timeout.0.max(0) as u64);
    let idle: Vec<bool> = clock::idle(&sh.last_heard, idle_for, Instant::now())
        .into_iter()
        .zip(&sh.inputs)
        .map(|(idle, port)| idle && !port.ended)
        .collect();
    let wm = sh.clock.input_watermark(&idle);
    if wm <= sh.clock.given {
        return Ok(());
    }
    sh.clock.given = wm;
    sh.mark_dirty(0);
    sh.metrics.watermark.store(wm, Relaxed);
    if !sh.node_uses_watermarks() {
        return Ok(());
    }
    call_hook(sh, st, move |t, out| t.on_watermark(wm, out)).await?;
    Ok(())
}

/// Calls one of a transform's event-time hooks (`on_watermark`, `resume`,
/// `on_timer`) and routes what it emits; true when it emitted anything.
pub(crate) async fn call_hook(
    sh: &mut StageShared,
    st: &mut StageState,
    hook: impl FnOnce(&mut dyn Transform, &mut Emitter) -> Result<(), NodeError> + Send + 'static,
) -> Result<bool, ActorProcessingErr> {
    let (result, mut out) = call_node(sh, st, move |node| {
        let mut out = Emitter::new();
        let r = match node {
            Node::Transform(t) => hook(t.as_mut(), &mut out),
            _ => Ok(()),
        };
        (r, out)
    })
    .await?;
    if let Err(e) = result {
        *sh.metrics.last_error.lock().unwrap() = Some(e.to_string());
        return Err(e.into());
    }
    if out.is_empty() {
        return Ok(false);
    }
    if sh.own_watermark() {
        sh.clock.emitted(out.main().iter().map(|r| r.event_time));
    }
    sh.route(&mut out).await?;
    check_threshold(sh, 1)?;
    Ok(true)
}
