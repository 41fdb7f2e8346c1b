//! Polling a source node as far as its outputs have room, and resuming a
//! restarted one ([`crate::resume`]).

use super::*;

/// Lets a source emit as much as its outputs have room for.
pub(crate) async fn poll_source(
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
            sh.commit_soon(&mut st.node, myself).await?;
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
    if sh.stage.sends_watermarks {
        sh.clock.emitted(main.iter().map(|r| r.event_time));
    }
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
                sh.commit_soon(&mut st.node, myself).await?;
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
