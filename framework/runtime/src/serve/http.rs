//! The HTTP server of `serve.http` and `--metrics-addr`, on axum (hyper)
//! on the runtime's tokio.
//!
//! Routes:
//! - KServe v2 (Open Inference Protocol): `GET /v2/health/live`,
//!   `/v2/health/ready`, `GET /v2`, `GET /v2/models/{name}[/versions/{v}]`,
//!   `GET /v2/models/{name}/ready`, `POST /v2/models/{name}[/versions/{v}]/infer`;
//! - Vertex AI: `POST /v1/models/{name}:predict`;
//! - `GET /metrics` (Prometheus text 0.0.4, or OpenMetrics on request).
//!
//! A model is named by its `model_id` or its stage's name. Errors are JSON
//! `{"error": "..."}` with the status of [`super::ServeError`]. Bodies are
//! limited to the largest `serve.max_body` on the address (413 past it); a
//! stage's token guards its model routes (401), never health or metrics.
//! Connections: at most [`MAX_CONNECTIONS`] at once (more are closed at
//! once), and a request's headers must arrive within
//! [`HEADER_READ_TIMEOUT`] (idle keep-alive connections close after it too).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::protocol;
use super::{ServeError, Served, parse_timeout_ms, run_parsed};
use crate::metrics::StageMetrics;

/// Connections held at once; one past it is closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What one address serves.
pub struct HttpConfig {
    pub pipeline: String,
    /// The stages whose metrics `/metrics` shows.
    pub stages: Vec<Arc<StageMetrics>>,
    /// The stages served on this address.
    pub served: Vec<Served>,
    /// The body size limit (bytes).
    pub max_body: usize,
}

struct App {
    served: Vec<Served>,
    registry: prometheus_client::registry::Registry,
}

/// The router of one address.
pub fn router(cfg: HttpConfig) -> Router {
    let app = Arc::new(App {
        registry: crate::prometheus::registry(&cfg.pipeline, &cfg.stages),
        served: cfg.served,
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v2", get(server_meta))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_meta))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}", get(model_meta_v))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v1/models/{target}", post(predict))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .with_state(app)
}

/// Serves `router` on `listener` until the task is aborted.
pub fn spawn(listener: TcpListener, router: Router) -> JoinHandle<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("http server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // full: closed at once rather than held unanswered
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                drop(slot);
            });
        }
    })
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(e: ServeError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, &json!({ "error": e.msg }));
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if e.status == 401 {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

async fn not_found() -> Response {
    error_response(ServeError::new(
        404,
        "no such route: rill serves /v2/... (KServe v2), /v1/models/NAME:predict (Vertex AI) and /metrics",
    ))
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let om = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = crate::prometheus::render_registry(&app.registry, om);
    let ct = if om {
        crate::prometheus::OPENMETRICS_CONTENT_TYPE
    } else {
        crate::prometheus::TEXT_CONTENT_TYPE
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
}

async fn server_meta() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"name": "rill", "version": env!("CARGO_PKG_VERSION"), "extensions": []}),
    )
}

async fn live() -> Response {
    json_response(StatusCode::OK, &json!({"live": true}))
}

fn is_ready(s: &Served) -> bool {
    s.queue.is_open() && s.queue.model().is_some()
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let ok = app.served.iter().all(is_ready);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({ "ready": ok }))
}

impl App {
    fn find(&self, name: &str) -> Result<&Served, ServeError> {
        self.served
            .iter()
            .find(|s| s.answers_to(name))
            .ok_or_else(|| {
                let names: Vec<String> = self
                    .served
                    .iter()
                    .map(|s| s.queue.model().map_or(s.stage.clone(), |m| m.name))
                    .collect();
                ServeError::new(
                    404,
                    format!(
                        "no model `{name}` is served here; served: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            })
    }
}

fn check_version(s: &Served, version: Option<&str>) -> Result<(), ServeError> {
    let Some(v) = version else {
        return Ok(());
    };
    let now = s.queue.model().map(|m| m.version).unwrap_or_default();
    if v == now {
        Ok(())
    } else {
        Err(ServeError::new(
            404,
            format!(
                "version `{v}` of `{}` is not served; version `{now}` is",
                s.stage
            ),
        ))
    }
}

async fn model_meta(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    meta(&app, &name, None)
}

async fn model_meta_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    meta(&app, &name, Some(&version))
}

fn meta(app: &App, name: &str, version: Option<&str>) -> Response {
    let s = match app.find(name) {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    if let Err(e) = check_version(s, version) {
        return error_response(e);
    }
    match s.queue.model() {
        Some(m) => json_response(StatusCode::OK, &protocol::kserve_metadata(&m)),
        None => error_response(ServeError::new(503, "the model is loading")),
    }
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.find(&name) {
        Ok(s) => {
            let ok = is_ready(s);
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(status, &json!({"name": name, "ready": ok}))
        }
        Err(e) => error_response(e),
    }
}

/// `?timeout_ms=N` in the query.
fn query_timeout(q: Option<&str>) -> Result<Option<Duration>, ServeError> {
    q.into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout_ms="))
        .map(parse_timeout_ms)
        .transpose()
}

fn body_or_error(body: Result<Bytes, BytesRejection>, limit: u64) -> Result<Bytes, ServeError> {
    body.map_err(|e| {
        let status = e.status().as_u16();
        if status == 413 {
            ServeError::new(
                413,
                format!("the body is larger than the limit of {limit} bytes (`serve.max_body`)"),
            )
        } else {
            ServeError::new(status, format!("cannot read the body: {e}"))
        }
    })
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&app, &name, None, q, &headers, body, false).await
}

async fn infer_v(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&app, &name, Some(&version), q, &headers, body, false).await
}

async fn predict(
    State(app): State<Arc<App>>,
    Path(target): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // `{name}:predict` (a route cannot end in a parameter with a suffix)
    let Some((name, "predict")) = target.rsplit_once(':') else {
        return error_response(ServeError::new(
            404,
            format!("`/v1/models/{target}`: Vertex AI's route is /v1/models/NAME:predict"),
        ));
    };
    answer(&app, name, None, q, &headers, body, true).await
}

async fn answer(
    app: &App,
    name: &str,
    version: Option<&str>,
    query: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    vertex: bool,
) -> Response {
    match answer_inner(app, name, version, query, headers, body, vertex).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn answer_inner(
    app: &App,
    name: &str,
    version: Option<&str>,
    query: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    vertex: bool,
) -> Result<Response, ServeError> {
    let s = app.find(name)?;
    if !s.authorized(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) {
        return Err(ServeError::new(
            401,
            "this model needs `Authorization: Bearer <token>` (serve.token_env)",
        ));
    }
    check_version(s, version)?;
    let body = body_or_error(body, s.spec.max_body.0)?;
    if body.len() as u64 > s.spec.max_body.0 {
        return Err(ServeError::new(
            413,
            format!(
                "the body is larger than the limit of {} bytes (`serve.max_body`)",
                s.spec.max_body.0
            ),
        ));
    }
    let Some(model) = s.queue.model() else {
        return Err(ServeError {
            status: 503,
            msg: "the model is loading".into(),
            retry_after: Some(1),
        });
    };
    let parsed = if vertex {
        protocol::parse_vertex(&body, &model)
    } else {
        let header_len = match headers.get("inference-header-content-length") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        ServeError::new(400, "Inference-Header-Content-Length is not a number")
                    })?,
            ),
        };
        protocol::parse_kserve(&body, header_len, &model)
    }
    .map_err(|e| ServeError::new(400, e))?;
    let asked = query_timeout(query.as_deref())?;
    let out = run_parsed(s, &model, parsed, asked).await?;
    Ok(json_response(StatusCode::OK, &out))
}
