//! The output side of a stage: appending to its logs and publishing,
//! routing what a node emitted (main, named and dead-letter outputs), and
//! resending what consumers ask for again.

use super::*;

impl StageShared {
    /// Appends records to output `idx`, in messages of `batch_size`, and
    /// publishes them now or at the next commit.
    pub(crate) async fn publish(
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
    pub(crate) async fn publish_end(&mut self) -> Result<(), ActorProcessingErr> {
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
    /// Appends the watermark `time` to every output that has not ended,
    /// and publishes it now or at the next commit.
    pub(crate) async fn publish_watermark(&mut self, time: i64) -> Result<(), ActorProcessingErr> {
        let early = self.publish_early();
        for port in &mut self.outputs {
            if port.log.log.ended() || !port.log.log.has_consumers() {
                continue;
            }
            let msg = DataMsg::Watermark {
                producer: port.producer.clone(),
                seq: port.log.log.next_seq(),
                time,
            };
            let payload = ZBytes::from(encode_data(&msg)?);
            if port.log.log.unacked() == 0 {
                port.last_progress = Instant::now();
            }
            port.log.log.append(1, payload.clone());
            if early {
                port.publisher.put(payload).await?;
            }
        }
        Ok(())
    }
    /// Sends what a node emitted: main output, named outputs, dead letters.
    /// A failed record without an error output fails the stage.
    pub(crate) async fn route(&mut self, out: &mut Emitter) -> Result<(), ActorProcessingErr> {
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
    pub(crate) fn output_index(&self, name: Option<&str>) -> Result<usize, ActorProcessingErr> {
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
    /// Resends what output `idx` holds from `from` on (only what is
    /// committed, under `exactly_once`), up to a window.
    pub(crate) async fn resend(&mut self, idx: usize, from: u64) -> Result<(), ActorProcessingErr> {
        let early = self.publish_early();
        let port = &mut self.outputs[idx];
        let from = from.max(port.log.log.min_acked());
        // under exactly_once only what is durable goes out, or committed
        // to consumers in this process (their flushes wait for this one's)
        let upto = if early {
            u64::MAX
        } else if port.local_early {
            port.log.committed_seq()
        } else {
            port.durable_seq
        };
        let payloads: Vec<ZBytes> = port.log.log.resend_between(from, upto, port.window);
        for payload in payloads {
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
        window: f.record.window,
    }
}

pub(crate) fn describe_record(r: &Record) -> String {
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
