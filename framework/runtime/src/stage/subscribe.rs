//! What an incarnation of a stage listens to: each input's data key and
//! its producer's liveliness tokens (which announce the epochs it takes
//! data from), and each output's control key and its consumers' tokens.

use super::*;

/// Declares the incarnation's subscriptions; their callbacks cast
/// [`StageMsg`]s to `myself`. Dropping them undeclares them.
pub(crate) async fn subscribe(
    sh: &mut StageShared,
    session: &Session,
    myself: &ActorRef<StageMsg>,
) -> Result<Vec<Subscriber<()>>, ActorProcessingErr> {
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
        let sub = session
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
                    DataHead::Batch { producer, .. }
                    | DataHead::End { producer, .. }
                    | DataHead::Watermark { producer, .. } => (producer.epoch, false),
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
                    if metrics.foreign.fetch_add(1, Relaxed).is_multiple_of(1000) {
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
                    DataHead::End { producer, seq } | DataHead::Watermark { producer, seq, .. } => {
                        (producer.epoch, *seq, 1)
                    }
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
                    (Arrival::Fresh { .. }, DataHead::Watermark { seq, time, .. }) => {
                        StageMsg::Watermark {
                            input: i,
                            epoch,
                            seq,
                            time,
                        }
                    }
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
        let sub = session
            .liveliness()
            .declare_subscriber(alive_keys(&pipeline_name, &port.producer_key))
            .history(true)
            .callback(move |sample| {
                let Some(token) = token_of_alive_key(sample.key_expr().as_str()) else {
                    return;
                };
                let live = sample.kind() == zenoh::sample::SampleKind::Put;
                let any = {
                    let mut a = announced.lock().unwrap();
                    a.insert(token, live);
                    a.values().any(|l| *l)
                };
                if live {
                    let _ = me.cast(StageMsg::ProducerUp { input: i });
                } else if !any {
                    let _ = me.cast(StageMsg::ProducerDown { input: i });
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
        let sub = session
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
            let consumer = c.clone();
            let sub = session
                .liveliness()
                .declare_subscriber(alive_keys(&sh.pipeline, c))
                .history(true)
                .callback(move |sample| {
                    let token = sample.key_expr().as_str().to_owned();
                    let consumer = consumer.clone();
                    let msg = if sample.kind() == zenoh::sample::SampleKind::Put {
                        StageMsg::ConsumerUp {
                            output: o,
                            consumer,
                            token,
                        }
                    } else {
                        StageMsg::ConsumerDown {
                            output: o,
                            consumer,
                            token,
                        }
                    };
                    let _ = me.cast(msg);
                })
                .await?;
            subs.push(sub);
        }
    }
    Ok(subs)
}
