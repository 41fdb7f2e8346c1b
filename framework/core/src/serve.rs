//! Online serving: requests a stage's node answers beside its stream
//! (`serve:` on a `RunInference` stage).
//!
//! The protocol servers (HTTP, Zenoh queryable) turn a request into rows
//! and [`RequestQueue::push`] them; the runtime grants the node room for
//! request rows in each batch it gathers ([`RequestQueue::grant`]), and
//! the node takes that many ([`RequestQueue::take_granted`]), runs them in
//! the same forward passes as the stream's records, and answers each
//! request through its callback. A request row never becomes a record of
//! the stream: it is not emitted, not dead-lettered, not committed.
//!
//! The queue is bounded in rows (a full one refuses at once: HTTP 429),
//! every request carries a deadline (an expired one is answered, never run),
//! and a stage that stops or fails closes its queue: what was queued is
//! answered "closed" (HTTP 503) and new requests are refused until the
//! next incarnation opens it again. Nothing here uses tokio: the reply is a
//! callback, which the server backs with a channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::value::Record;

/// The answer for one row: the output record (with the inference,
/// `model_id` and `model_version`), or why the row failed.
pub type RowResult = Result<Record, String>;

/// What a request gets back.
pub type Reply = Result<Vec<RowResult>, Refusal>;

/// Why a request was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The queue holds `cap` rows already (HTTP 429).
    Full { cap: usize },
    /// The request alone has more rows than the queue holds (HTTP 413).
    TooLarge { rows: usize, cap: usize },
    /// The stage is not running (stopping, or restarting after a
    /// failure): HTTP 503.
    Closed(String),
    /// Its deadline passed while it waited in the queue (HTTP 504).
    Expired { waited: Duration },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full { cap } => write!(
                f,
                "the stage's request queue is full ({cap} rows waiting); retry later"
            ),
            Refusal::TooLarge { rows, cap } => write!(
                f,
                "the request has {rows} rows, more than the stage's whole request queue ({cap}); split it"
            ),
            Refusal::Closed(why) => f.write_str(why),
            Refusal::Expired { waited } => write!(
                f,
                "the request's deadline passed after {} ms in the queue",
                waited.as_millis()
            ),
        }
    }
}

type Callback = Box<dyn FnOnce(Reply) + Send>;

/// One request: its rows, its deadline, and where its answer goes.
pub struct Request {
    pub rows: Vec<Record>,
    pub deadline: Instant,
    pub enqueued: Instant,
    reply: Option<Callback>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("rows", &self.rows.len())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Request {
    pub fn new(
        rows: Vec<Record>,
        deadline: Instant,
        reply: impl FnOnce(Reply) + Send + 'static,
    ) -> Request {
        Request {
            rows,
            deadline,
            enqueued: Instant::now(),
            reply: Some(Box::new(reply)),
        }
    }

    /// Answers the request (once; a request dropped unanswered drops its
    /// callback, which the server reads as "the stage went away").
    pub fn answer(mut self, r: Reply) {
        if let Some(cb) = self.reply.take() {
            cb(r)
        }
    }

    /// Takes the rows out, leaving the request to be answered.
    pub fn take_rows(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.rows)
    }
}

/// What the protocols tell clients about the served model (KServe's model
/// metadata, Vertex's ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedModel {
    /// The model's name (RunInference's `model_id`).
    pub name: String,
    /// The version answering now.
    pub version: String,
    /// The record fields a request's rows must carry (the model's inputs,
    /// or what `preprocess` reads).
    pub inputs: Vec<String>,
    /// The field the inference lands in.
    pub output: String,
}

struct Inner {
    queue: VecDeque<Request>,
    rows: usize,
    open: bool,
    why: String,
    /// Rows the runtime lets the node take in the call it is about to make.
    granted: usize,
}

/// A stage's bounded queue of requests (see the module docs). It outlives
/// the stage's incarnations, as its metrics do.
pub struct RequestQueue {
    stage: String,
    inner: Mutex<Inner>,
    cap_rows: usize,
    waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    model: Mutex<Option<ServedModel>>,
    /// Counters (also shown as the node's metrics by the runtime).
    pub served_requests: AtomicU64,
    pub served_rows: AtomicU64,
    pub expired: AtomicU64,
    pub refused_full: AtomicU64,
    /// Rows waiting now (a gauge, read without the lock).
    pub waiting_rows: AtomicUsize,
}

impl std::fmt::Debug for RequestQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestQueue")
            .field("stage", &self.stage)
            .field("cap_rows", &self.cap_rows)
            .finish()
    }
}

impl RequestQueue {
    /// A closed queue of at most `cap_rows` waiting rows, for `stage`.
    pub fn new(stage: &str, cap_rows: usize) -> RequestQueue {
        RequestQueue {
            stage: stage.to_owned(),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                rows: 0,
                open: false,
                why: format!("stage `{stage}` is starting; retry shortly"),
                granted: 0,
            }),
            cap_rows: cap_rows.max(1),
            waker: Mutex::new(None),
            model: Mutex::new(None),
            served_requests: AtomicU64::new(0),
            served_rows: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            waiting_rows: AtomicUsize::new(0),
        }
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn cap_rows(&self) -> usize {
        self.cap_rows
    }

    /// What the stage calls when requests arrive in an empty queue.
    pub fn set_waker(&self, wake: impl Fn() + Send + Sync + 'static) {
        *self.waker.lock().unwrap() = Some(Arc::new(wake));
    }

    /// Queues `req`, or answers it at once with why it is refused.
    /// Requests whose deadline passed while they waited leave the queue
    /// first (answered), so they take no room from new ones.
    pub fn push(&self, req: Request) {
        let rows = req.rows.len();
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap();
        let mut expired = Vec::new();
        if g.queue.iter().any(|r| r.deadline <= now) {
            let (gone, kept): (VecDeque<Request>, VecDeque<Request>) =
                g.queue.drain(..).partition(|r| r.deadline <= now);
            g.queue = kept;
            g.rows = g.queue.iter().map(|r| r.rows.len()).sum();
            self.waiting_rows.store(g.rows, Relaxed);
            expired.extend(gone);
        }
        if !expired.is_empty() {
            drop(g);
            for r in expired {
                self.expired.fetch_add(1, Relaxed);
                let waited = now.saturating_duration_since(r.enqueued);
                r.answer(Err(Refusal::Expired { waited }));
            }
            g = self.inner.lock().unwrap();
        }
        let refusal = if !g.open {
            Some(Refusal::Closed(g.why.clone()))
        } else if rows > self.cap_rows {
            Some(Refusal::TooLarge {
                rows,
                cap: self.cap_rows,
            })
        } else if g.rows + rows > self.cap_rows {
            self.refused_full.fetch_add(1, Relaxed);
            Some(Refusal::Full { cap: self.cap_rows })
        } else {
            None
        };
        if let Some(r) = refusal {
            drop(g);
            req.answer(Err(r));
            return;
        }
        let was_empty = g.queue.is_empty();
        g.rows += rows;
        self.waiting_rows.store(g.rows, Relaxed);
        g.queue.push_back(req);
        drop(g);
        if was_empty {
            let w = self.waker.lock().unwrap().clone();
            if let Some(w) = w {
                w()
            }
        }
    }

    /// Rows waiting, and when the oldest waiting request arrived.
    pub fn waiting(&self) -> Option<(usize, Instant)> {
        let g = self.inner.lock().unwrap();
        g.queue.front().map(|r| (g.rows, r.enqueued))
    }

    /// The runtime lets the node take up to `rows` request rows in its
    /// next call.
    pub fn grant(&self, rows: usize) {
        self.inner.lock().unwrap().granted = rows;
    }

    /// Whole requests, up to the rows granted (at least one request when
    /// anything was granted, even if it has more rows); the grant is used
    /// up. Requests whose deadline passed are answered, not returned.
    pub fn take_granted(&self) -> Vec<Request> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut taken = Vec::new();
        {
            let mut g = self.inner.lock().unwrap();
            let room = std::mem::take(&mut g.granted);
            let mut rows = 0;
            while let Some(front) = g.queue.front() {
                if room == 0 {
                    break;
                }
                let n = front.rows.len();
                if front.deadline <= now {
                    let r = g.queue.pop_front().expect("front");
                    g.rows -= n;
                    expired.push(r);
                    continue;
                }
                if !taken.is_empty() && rows + n > room {
                    break;
                }
                let r = g.queue.pop_front().expect("front");
                g.rows -= n;
                rows += n;
                taken.push(r);
            }
            self.waiting_rows.store(g.rows, Relaxed);
        }
        for r in expired {
            self.expired.fetch_add(1, Relaxed);
            let waited = now.saturating_duration_since(r.enqueued);
            r.answer(Err(Refusal::Expired { waited }));
        }
        taken
    }

    /// Counts an answered request.
    pub fn served(&self, rows: usize) {
        self.served_requests.fetch_add(1, Relaxed);
        self.served_rows.fetch_add(rows as u64, Relaxed);
    }

    /// Opens the queue (a new incarnation of the stage is running).
    pub fn open(&self) {
        let mut g = self.inner.lock().unwrap();
        g.open = true;
        g.granted = 0;
    }

    /// Whether requests are taken now.
    pub fn is_open(&self) -> bool {
        self.inner.lock().unwrap().open
    }

    /// Closes the queue: every queued request is answered
    /// [`Refusal::Closed`] with `why`, and new ones are refused so, until
    /// [`RequestQueue::open`].
    pub fn close(&self, why: &str) {
        let queued: Vec<Request> = {
            let mut g = self.inner.lock().unwrap();
            g.open = false;
            g.why = why.to_owned();
            g.rows = 0;
            g.granted = 0;
            self.waiting_rows.store(0, Relaxed);
            g.queue.drain(..).collect()
        };
        for r in queued {
            r.answer(Err(Refusal::Closed(why.to_owned())));
        }
    }

    /// The model the protocols describe (set by the node when it is built
    /// and when a new version is swapped in).
    pub fn set_model(&self, m: ServedModel) {
        *self.model.lock().unwrap() = Some(m);
    }

    /// Sets the version answering now.
    pub fn set_version(&self, v: &str) {
        if let Some(m) = self.model.lock().unwrap().as_mut() {
            m.version = v.to_owned();
        }
    }

    pub fn model(&self) -> Option<ServedModel> {
        self.model.lock().unwrap().clone()
    }
}

/// How long a request waits unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn req(n: usize, deadline: Instant) -> (Request, Arc<Mutex<Option<Reply>>>) {
        let got: Arc<Mutex<Option<Reply>>> = Arc::default();
        let g = got.clone();
        let rows = (0..n)
            .map(|i| Record::default().with("x", Value::Int(i as i64)))
            .collect();
        (
            Request::new(rows, deadline, move |r| *g.lock().unwrap() = Some(r)),
            got,
        )
    }

    #[test]
    fn bounded_expiring_and_closing() {
        let q = RequestQueue::new("s", 10);
        let later = Instant::now() + Duration::from_secs(60);
        // closed until opened
        let (r, got) = req(1, later);
        q.push(r);
        assert!(matches!(
            &*got.lock().unwrap(),
            Some(Err(Refusal::Closed(_)))
        ));
        q.open();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        q.set_waker(move || {
            w.fetch_add(1, Relaxed);
        });
        let (a, _) = req(4, later);
        let (b, _) = req(4, later);
        q.push(a);
        q.push(b);
        assert_eq!(woken.load(Relaxed), 1, "woken once, on the first request");
        let (c, got_c) = req(4, later);
        q.push(c);
        assert_eq!(
            *got_c.lock().unwrap(),
            Some(Err(Refusal::Full { cap: 10 })),
            "8 + 4 rows do not fit in 10"
        );
        let (d, got_d) = req(11, later);
        q.push(d);
        assert!(matches!(
            &*got_d.lock().unwrap(),
            Some(Err(Refusal::TooLarge { rows: 11, cap: 10 }))
        ));
        assert_eq!(q.waiting().unwrap().0, 8);
        // nothing granted, nothing taken; a grant of 5 takes one request of 4
        assert!(q.take_granted().is_empty());
        q.grant(5);
        let t = q.take_granted();
        assert_eq!(t.len(), 1);
        // a grant smaller than the next request still takes it whole
        q.grant(1);
        assert_eq!(q.take_granted().len(), 1);
        assert!(q.waiting().is_none());
        // an expired request is answered, never taken
        let (e, got_e) = req(2, Instant::now());
        q.push(e);
        q.grant(10);
        assert!(q.take_granted().is_empty());
        assert!(matches!(
            &*got_e.lock().unwrap(),
            Some(Err(Refusal::Expired { .. }))
        ));
        assert_eq!(q.expired.load(Relaxed), 1);
        // an expired request waiting frees its room for a new one
        let (g1, got_g1) = req(9, Instant::now() + Duration::from_millis(20));
        q.push(g1);
        std::thread::sleep(Duration::from_millis(30));
        let (g2, got_g2) = req(9, later);
        q.push(g2);
        assert!(matches!(
            &*got_g1.lock().unwrap(),
            Some(Err(Refusal::Expired { .. }))
        ));
        assert!(got_g2.lock().unwrap().is_none(), "queued");
        q.grant(10);
        assert_eq!(q.take_granted().len(), 1);
        // closing answers what waits
        let (f, got_f) = req(2, later);
        q.push(f);
        q.close("stage `s` failed; restarting");
        assert_eq!(
            *got_f.lock().unwrap(),
            Some(Err(Refusal::Closed("stage `s` failed; restarting".into())))
        );
        // a request dropped unanswered drops its callback
        drop(t);
    }
}
