//! A stage's commit: everything since the last one made durable in one
//! atomic write, then published and acknowledged; and the control messages
//! a consumer sends its producers.

use super::shared::Mark;
use super::*;

/// A commit written to the store and not yet flushed: what waits for it.
pub(crate) struct Applied {
    number: u64,
    started: Instant,
    /// What the commit added to each output that publishes once it is
    /// durable (not under `at_least_once`, which publishes at once, nor to
    /// consumers in this process, which get it at once).
    waiting: Vec<(usize, Vec<ZBytes>)>,
    /// Each output's committed mark at this commit.
    outputs: Vec<u64>,
    /// Each input's position at this commit.
    inputs: Vec<InputPos>,
}

/// How many background flushes of one stage may run at once: a second
/// starts for the commits written while the first runs (the device syncs
/// overlap, and those commits wait for one sync, not for one and a half).
const FLUSHES_AT_ONCE: usize = 2;

/// Where background flushes report: the number of the last commit each
/// covered, and how it went.
pub(crate) type FlushReports = Arc<std::sync::Mutex<Vec<(u64, Result<(), String>)>>>;

impl StageShared {
    /// Makes everything since the last commit durable in one atomic write:
    /// the node's checkpoint and state changes, input positions, the source
    /// position, new output messages. Then publishes what waited for it and
    /// acknowledges the inputs. Nothing is acknowledged before it is durable.
    /// Earlier commits still unflushed ([`Self::commit_soon`]) are made
    /// durable with it.
    pub(crate) async fn commit(&mut self, node: &mut Node) -> Result<(), ActorProcessingErr> {
        wait_for_producers(self.uncovered()).await;
        let applied = self.apply(node).await?;
        let wrote = applied.is_some();
        self.unflushed.extend(applied);
        self.settle().await?;
        if wrote && let Node::Sink(s) = node {
            // the second phase of a two-phase sink (a table commit)
            tokio::task::block_in_place(|| s.committed()).map_err(|e| {
                let msg = format!("publishing what the commit holds failed: {e}");
                *self.metrics.last_error.lock().unwrap() = Some(msg.clone());
                msg
            })?;
        }
        Ok(())
    }

    /// The same commit, with its flush (the fsync) in the background: the
    /// stage goes on while it runs. Consumers in this process get the new
    /// messages at once; the rest of what waits for the flush (messages to
    /// other processes, acknowledgements) goes out when it ends. One flush
    /// runs at a time; the commits written meanwhile share the next one
    /// (group commit). A two-phase sink, and a store in memory, commit at
    /// once.
    pub(crate) async fn commit_soon(
        &mut self,
        node: &mut Node,
        myself: &ActorRef<StageMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let two_phase = matches!(node, Node::Sink(s) if s.two_phase());
        if !self.store.durable() || two_phase {
            return self.commit(node).await;
        }
        self.reap(myself).await?;
        let uncovered = self.uncovered();
        if !uncovered.is_empty() {
            // the stage consumed records a producer here has not flushed
            // yet: nothing of what it did with them may reach its store
            // before they are durable (a crash would keep this stage's
            // position and lose the producer's records). It takes no more
            // input meanwhile, so the position it waits for stays put.
            self.frozen = true;
            if !self.dep_waiter.swap(true, Relaxed) {
                for (rx, pos) in &uncovered {
                    debug!(target: "rill::flush_order", stage = %self.stage.name,
                        "a commit waits for the flush of a producer here: consumed up to {}, durable up to {}",
                        pos.next, rx.borrow().1);
                }
                let (waiter, me) = (self.dep_waiter.clone(), myself.clone());
                tokio::spawn(async move {
                    wait_for_producers(uncovered).await;
                    waiter.store(false, Relaxed);
                    let _ = me.cast(StageMsg::Commit);
                });
            }
            return Ok(());
        }
        self.frozen = false;
        if let Some(applied) = self.apply(node).await? {
            self.unflushed.push_back(applied);
        }
        self.start_flush(myself);
        Ok(())
    }

    /// The inputs from producers in this process whose durable marks do
    /// not cover what the stage processed, with the positions to wait for.
    fn uncovered(&self) -> Vec<(tokio::sync::watch::Receiver<(u64, u64)>, InputPos)> {
        self.inputs
            .iter()
            .filter_map(|port| {
                let rx = port.upstream.as_ref()?;
                let pos = InputPos {
                    epoch: port.epoch,
                    next: port.processed,
                    ended: port.ended,
                };
                let (epoch, held) = *rx.borrow();
                (pos.epoch == Some(epoch) && pos.next > held).then(|| (rx.clone(), pos))
            })
            .collect()
    }

    /// Takes the reports of background flushes that ended: publishes and
    /// acknowledges what waited for them, and starts the next flush.
    pub(crate) async fn reap(
        &mut self,
        myself: &ActorRef<StageMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.flushing.is_empty() {
            return Ok(());
        }
        let ended: Vec<(u64, Result<(), String>)> = {
            let mut reports = self.flush_done.lock().unwrap();
            // (a report of an earlier incarnation's flush, settled since,
            // says nothing)
            let running = &self.flushing;
            let (ours, _stale): (Vec<_>, Vec<_>) =
                reports.drain(..).partition(|(n, _)| running.contains(n));
            ours
        };
        if ended.is_empty() {
            return Ok(());
        }
        self.flushing.retain(|n| !ended.iter().any(|(e, _)| e == n));
        let mut durable = 0;
        for (number, result) in ended {
            // on failure the commits stay unflushed: the next incarnation
            // flushes them again before it sends anything (`settle`)
            result.map_err(|e| self.store_failed(&e))?;
            durable = durable.max(number);
        }
        // a flush covers every write before it: one that ended makes every
        // commit up to its own durable, whichever started first
        while self.unflushed.front().is_some_and(|a| a.number <= durable) {
            let applied = self.unflushed.pop_front().expect("checked");
            self.made_durable(applied).await?;
        }
        self.start_flush(myself);
        Ok(())
    }

    /// What a flush of every unflushed commit waits for first: the durable
    /// marks of this process's producers, up to what the commits consumed.
    fn flush_deps(&self) -> Vec<(tokio::sync::watch::Receiver<(u64, u64)>, InputPos)> {
        let Some(last) = self.unflushed.back() else {
            return Vec::new();
        };
        self.inputs
            .iter()
            .zip(&last.inputs)
            .filter_map(|(port, pos)| Some((port.upstream.clone()?, *pos)))
            .collect()
    }

    /// The durable marks a flush of every unflushed commit sets.
    fn flush_marks(&self) -> Vec<(Mark, u64, u64)> {
        let Some(last) = self.unflushed.back() else {
            return Vec::new();
        };
        self.outputs
            .iter()
            .zip(&last.outputs)
            .map(|(port, seq)| (port.mark.clone(), port.producer.epoch, *seq))
            .collect()
    }

    /// Starts a background flush of every unflushed commit not covered by
    /// one that runs, unless [`FLUSHES_AT_ONCE`] run: a commit written while
    /// a flush runs need not wait for it to end before its own starts.
    fn start_flush(&mut self, myself: &ActorRef<StageMsg>) {
        let Some(last) = self.unflushed.back() else {
            return;
        };
        if self.flushing.len() >= FLUSHES_AT_ONCE || self.flushing.iter().any(|&n| n >= last.number)
        {
            return;
        }
        let number = last.number;
        self.flushing.push(number);
        let (deps, marks) = (self.flush_deps(), self.flush_marks());
        let (store, reports, me) = (self.store.clone(), self.flush_done.clone(), myself.clone());
        tokio::spawn(async move {
            wait_for_producers(deps).await;
            let result = match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the flush stopped: {e}")),
            };
            if result.is_ok() {
                set_marks(&marks);
            }
            reports.lock().unwrap().push((number, result));
            // an incarnation that stopped meanwhile gets nothing: the next
            // one flushes again before it sends anything (`settle`)
            let _ = me.cast(StageMsg::Flushed);
        });
    }

    /// Makes every unflushed commit durable here (after the producers'
    /// flushes it depends on) and sends what waited for them.
    pub(crate) async fn settle(&mut self) -> Result<(), ActorProcessingErr> {
        if self.unflushed.is_empty() {
            self.flushing.clear();
            return Ok(());
        }
        wait_for_producers(self.flush_deps()).await;
        let marks = self.flush_marks();
        if self.store.durable() {
            let store = self.store.clone();
            tokio::task::block_in_place(|| store.flush())
                .map_err(|e| self.store_failed(&e.to_string()))?;
        }
        set_marks(&marks);
        // a background flush still running reports to no one now
        self.flushing.clear();
        while let Some(applied) = self.unflushed.pop_front() {
            self.made_durable(applied).await?;
        }
        Ok(())
    }

    /// Whether anything waits for a commit: records processed, or log
    /// messages every consumer acknowledged (to delete).
    pub(crate) fn wants_commit(&self) -> bool {
        self.dirty() || self.outputs.iter().any(|o| o.log.log.has_trimmed())
    }

    fn store_failed(&self, e: &str) -> String {
        let msg = format!(
            "cannot commit to the state store (nothing acknowledged since the last commit): {e}"
        );
        *self.metrics.last_error.lock().unwrap() = Some(msg.clone());
        msg
    }

    /// Writes everything since the last commit to the store in one atomic
    /// write (not flushed) and moves the in-memory marks to it; publishes
    /// the new messages of outputs whose consumers all run here. None when
    /// there was nothing to write.
    async fn apply(&mut self, node: &mut Node) -> Result<Option<Applied>, ActorProcessingErr> {
        if !self.wants_commit() {
            return Ok(None);
        }
        let started = Instant::now();
        // while a node emits what a watermark fired, a part at a time, the
        // watermark waits behind the last part: sent before, it would make
        // the parts after it late downstream
        let firing =
            self.node_uses_watermarks() && matches!(node, Node::Transform(t) if t.pending());
        if self.dirty() && self.stage.sends_watermarks && !firing {
            let hold = match node {
                Node::Transform(t) => t.watermark_hold(),
                _ => None,
            };
            let wm = self
                .clock
                .output_watermark(self.own_watermark(), &self.stage.watermark)
                .min(hold.unwrap_or(i64::MAX));
            if wm > self.clock.sent {
                self.publish_watermark(wm).await?;
                self.clock.sent = wm;
            }
        }
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
        if self.clock != self.clock_committed {
            batch.put(CLOCK_KEY.to_vec(), durable::encode(&self.clock));
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
                    .stage_commit(&mut batch, |p, out| out.extend_from_slice(&p.to_bytes()));
            } else {
                // a store in memory holds no copy of the logs
                port.log.log.take_trimmed();
            }
        }
        if batch.is_empty() {
            self.dirty_records = 0;
            self.dirty_since = None;
            return Ok(None);
        }
        self.store
            .commit(batch)
            .map_err(|e| self.store_failed(&e.to_string()))?;
        if let (Some(d), Some(len)) = (&mut self.dlq, dlq_len) {
            d.committed(len);
        }
        // the store holds the commit now (durable once flushed): so does
        // every in-memory mark of it, before anything below can fail (a
        // new incarnation returns to them)
        let early = self.publish_early();
        let mut waiting: Vec<(usize, Vec<ZBytes>)> = Vec::new();
        let mut now: Vec<(usize, Vec<ZBytes>)> = Vec::new();
        let mut marks = Vec::with_capacity(self.outputs.len());
        for (o, port) in self.outputs.iter_mut().enumerate() {
            if port.local_early {
                now.push((o, port.log.uncommitted().cloned().collect()));
            } else if !early {
                waiting.push((o, port.log.uncommitted().cloned().collect()));
            }
            port.log.committed();
            marks.push(port.log.committed_seq());
        }
        self.source_committed = self.source;
        self.finished_committed = self.finished_node;
        self.clock_committed = self.clock.clone();
        self.dirty_records = 0;
        self.dirty_since = None;
        let mut positions = Vec::with_capacity(self.inputs.len());
        for port in &mut self.inputs {
            port.committed = InputPos {
                epoch: port.epoch,
                next: port.processed,
                ended: port.ended,
            };
            positions.push(port.committed);
        }
        // consumers in this process get what the commit holds at once
        for (o, payloads) in now {
            for p in payloads {
                self.outputs[o].publisher.put(p).await?;
            }
        }
        self.commit_number += 1;
        Ok(Some(Applied {
            number: self.commit_number,
            started,
            waiting,
            outputs: marks,
            inputs: positions,
        }))
    }

    /// A commit is durable: what waited for it goes out, and the inputs are
    /// acknowledged up to it.
    async fn made_durable(&mut self, flight: Applied) -> Result<(), ActorProcessingErr> {
        self.metrics.commits.fetch_add(1, Relaxed);
        self.metrics
            .commit_us
            .fetch_add(flight.started.elapsed().as_micros() as u64, Relaxed);
        for (port, mark) in self.outputs.iter_mut().zip(flight.outputs) {
            port.durable_seq = port.durable_seq.max(mark);
        }
        for (o, payloads) in flight.waiting {
            for p in payloads {
                self.outputs[o].publisher.put(p).await?;
            }
        }
        for (i, pos) in flight.inputs.into_iter().enumerate() {
            if pos != self.inputs[i].durable {
                self.inputs[i].durable = pos;
                self.ack(i).await?;
            }
        }
        Ok(())
    }
    pub(crate) async fn ack(&mut self, input: usize) -> Result<(), ActorProcessingErr> {
        let port = &self.inputs[input];
        let Some(epoch) = port.durable.epoch else {
            return Ok(());
        };
        let msg = CtlMsg::Ack {
            consumer: self.consumer_id.clone(),
            epoch,
            next: port.durable.next,
        };
        port.ctl.put(encode_ctl(&msg)?).await?;
        Ok(())
    }
    pub(crate) async fn request_resend(
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
}

/// Waits until each producer's durable mark covers the position consumed
/// (or names another epoch: the producer started over, and what was
/// consumed of the old one is not its to make durable).
async fn wait_for_producers(deps: Vec<(tokio::sync::watch::Receiver<(u64, u64)>, InputPos)>) {
    for (mut rx, pos) in deps {
        let Some(epoch) = pos.epoch else {
            continue;
        };
        // a producer that stopped (its sender dropped) has nothing to wait for
        let _ = rx.wait_for(|&(e, seq)| e != epoch || seq >= pos.next).await;
    }
}

/// Moves durable marks forward (never back, within an epoch).
fn set_marks(marks: &[(Mark, u64, u64)]) {
    for (tx, epoch, seq) in marks {
        tx.send_if_modified(|m| {
            if m.0 != *epoch || m.1 < *seq {
                *m = (*epoch, *seq);
                true
            } else {
                false
            }
        });
    }
}
