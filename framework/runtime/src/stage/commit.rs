//! A stage's commit: everything since the last one made durable in one
//! atomic write, then published and acknowledged; and the control messages
//! a consumer sends its producers.

use super::*;

impl StageShared {
    /// Makes everything since the last commit durable in one atomic write:
    /// the node's checkpoint and state changes, input positions, the source
    /// position, new output messages. Then publishes what waited for it and
    /// acknowledges the inputs. Nothing is acknowledged before it is durable.
    pub(crate) async fn commit(&mut self, node: &mut Node) -> Result<(), ActorProcessingErr> {
        let trims = self.outputs.iter().any(|o| o.log.log.has_trimmed());
        if !self.dirty() && !trims {
            return Ok(());
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
        if let Node::Sink(s) = node {
            // the second phase of a two-phase sink (a table commit)
            tokio::task::block_in_place(|| s.committed()).map_err(|e| {
                let msg = format!("publishing what the commit holds failed: {e}");
                *self.metrics.last_error.lock().unwrap() = Some(msg.clone());
                msg
            })?;
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
        self.clock_committed = self.clock.clone();
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
    pub(crate) async fn ack(&mut self, input: usize) -> Result<(), ActorProcessingErr> {
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
