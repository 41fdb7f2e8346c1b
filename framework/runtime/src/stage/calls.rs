//! Calling the node: on the worker or off it ([`Offload`]), under the
//! stage's call timeout ([`call_node`]), retries of failed records, and the
//! error threshold.

use super::*;

/// Decides where a node's work runs. Short calls run on the async worker
/// (cheaper than a thread hand-off, and harmless at tens of microseconds);
/// once a call has taken longer than [`Offload::HEAVY`], the stage's calls
/// run under `block_in_place`, so a CPU-heavy node cannot stall the other
/// stages and Zenoh's tasks on that worker. The choice follows a moving
/// average of the call time, so a stage that turns heavy moves off at once.
#[derive(Debug, Default)]
pub(crate) struct Offload {
    /// Moving average of the call time in µs.
    pub(crate) avg_us: f64,
    /// The stage's own compute pool (`resources.cpu_threads`): every call
    /// runs there, so what the node parallelises stays within its budget.
    pub(crate) pool: Option<Arc<rayon::ThreadPool>>,
}

impl Offload {
    const HEAVY: f64 = 200.0;

    pub(crate) fn run<T: Send>(&mut self, f: impl FnOnce() -> T + Send) -> T {
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

/// Stands in for a node lost to a call that timed out (it is still stuck on
/// the thread that called it); the stage restarts with a new one.
pub(crate) struct Lost;

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
pub(crate) async fn call_node<T: Send + 'static>(
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

/// Fails the stage (for good) when more than its threshold of records
/// failed, once `min_in` records have come in.
pub(crate) fn check_threshold(sh: &StageShared, min_in: u64) -> Result<(), ActorProcessingErr> {
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
pub(crate) async fn retry_failures(
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
