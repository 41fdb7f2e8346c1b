//! Online serving (`serve:` on a `RunInference` stage): the protocol
//! servers in front of a stage's [`RequestQueue`].
//!
//! - [`http`]: KServe v2 (Open Inference Protocol) and Vertex AI routes, and
//!   `/metrics`, on axum;
//! - [`zenoh`]: a queryable `rill/<pipeline>/<stage>/predict`;
//! - [`protocol`]: the shapes, to and from rows.
//!
//! Both turn a request into rows and [`submit`] them: the stage's node runs
//! them in its next batch, beside the stream's records (see
//! `rill_core::serve` and `docs/serving.md`).

pub mod http;
pub mod protocol;
pub mod zenoh;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_core::Record;
use rill_core::serve::{Refusal, Request, RequestQueue, RowResult, ServedModel};
use rill_core::spec::ServeSpec;

/// A stage this process serves.
#[derive(Clone)]
pub struct Served {
    pub pipeline: String,
    pub stage: String,
    /// The stage's name in Zenoh keys.
    pub key: String,
    pub queue: Arc<RequestQueue>,
    pub spec: ServeSpec,
    /// The bearer token requests must carry (`serve.token_env`, read at
    /// start).
    pub token: Option<String>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("stage", &self.stage)
            .field("spec", &self.spec)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Served {
    /// The key of the stage's Zenoh queryable.
    pub fn predict_key(&self) -> String {
        format!("rill/{}/{}/predict", self.pipeline, self.key)
    }

    /// Whether `name` names this stage's model (its `model_id`) or the
    /// stage.
    pub fn answers_to(&self, name: &str) -> bool {
        self.stage == name || self.queue.model().is_some_and(|m| m.name == name)
    }

    /// Whether the request's `Authorization` header is good: anything when
    /// no token is set, else `Bearer <token>`, compared in constant time.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else {
            return true;
        };
        let Some(h) = header else {
            return false;
        };
        let Some(given) = h.strip_prefix(b"Bearer ") else {
            return false;
        };
        bool::from(given.ct_eq(token.as_bytes()))
    }
}

/// Why a request got no answer from the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeError {
    /// The HTTP status it maps to.
    pub status: u16,
    pub msg: String,
    /// Seconds the client should wait before it retries (429, 503).
    pub retry_after: Option<u64>,
}

impl ServeError {
    pub fn new(status: u16, msg: impl Into<String>) -> ServeError {
        ServeError {
            status,
            msg: msg.into(),
            retry_after: None,
        }
    }
}

impl From<Refusal> for ServeError {
    fn from(r: Refusal) -> ServeError {
        let (status, retry) = match &r {
            Refusal::Full { .. } => (429, Some(1)),
            Refusal::TooLarge { .. } => (413, None),
            Refusal::Closed(_) => (503, Some(1)),
            Refusal::Expired { .. } => (504, None),
        };
        ServeError {
            status,
            msg: r.to_string(),
            retry_after: retry,
        }
    }
}

/// Queues `rows` on `q` and waits for their answer, at most `timeout`.
pub async fn submit(
    q: &RequestQueue,
    rows: Vec<Record>,
    timeout: Duration,
) -> Result<Vec<RowResult>, ServeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let (tx, rx) = tokio::sync::oneshot::channel();
    q.push(Request::new(rows, deadline, move |r| {
        let _ = tx.send(r);
    }));
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(Ok(rows))) => Ok(rows),
        Ok(Ok(Err(refusal))) => Err(refusal.into()),
        // the request was dropped unanswered: the stage failed with it
        Ok(Err(_)) => Err(ServeError {
            status: 503,
            msg: format!(
                "stage `{}` failed while it ran the request; it is restarting, retry shortly",
                q.stage()
            ),
            retry_after: Some(1),
        }),
        Err(_) => Err(ServeError::new(
            504,
            format!(
                "the deadline of {} ms passed before stage `{}` answered",
                timeout.as_millis(),
                q.stage()
            ),
        )),
    }
}

/// The deadline of a request: what it asked for, else the stage's
/// `serve.timeout`.
pub fn timeout_for(asked: Option<Duration>, spec: &ServeSpec) -> Duration {
    asked.unwrap_or(spec.timeout.0)
}

/// `timeout_ms=V` (a query or selector parameter) as a deadline.
pub fn parse_timeout_ms(v: &str) -> Result<Duration, ServeError> {
    match v.parse::<f64>() {
        Ok(ms) if ms > 0.0 && ms.is_finite() => Ok(Duration::from_secs_f64(ms / 1e3)),
        _ => Err(ServeError::new(
            400,
            format!("`timeout_ms={v}`: expected a positive number of milliseconds"),
        )),
    }
}

/// Runs a parsed request on `s`'s stage and answers in the protocol it
/// spoke; `asked` (a query or selector parameter) wins over the body's
/// deadline. A row the model could not take fails the request (400).
pub async fn run_parsed(
    s: &Served,
    model: &ServedModel,
    parsed: protocol::Parsed,
    asked: Option<Duration>,
) -> Result<serde_json::Value, ServeError> {
    let timeout = timeout_for(asked.or(parsed.timeout), &s.spec);
    let results = submit(&s.queue, parsed.rows, timeout).await?;
    let what = if parsed.shape == protocol::Shape::Vertex {
        "instance"
    } else {
        "row"
    };
    if let Some(e) = protocol::failed_row(&results, what) {
        return Err(ServeError::new(400, e));
    }
    let rows: Vec<&Record> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    match &parsed.shape {
        protocol::Shape::Vertex => Ok(protocol::vertex_response(&rows, model, &s.stage)),
        protocol::Shape::KServe { id, outputs } => {
            protocol::kserve_response(&rows, model, id.as_ref(), outputs.as_deref())
                .map_err(|e| ServeError::new(400, e))
        }
    }
}
