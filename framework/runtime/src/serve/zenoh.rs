//! The Zenoh queryable of a served stage: `rill/<pipeline>/<stage>/predict`
//! takes the same JSON as HTTP (`inputs`: KServe v2, `instances`: Vertex
//! AI) and replies with the same JSON; an error is a reply error holding
//! `{"error": "...", "code": HTTP_STATUS}`. Selector parameters:
//! `timeout_ms=N` (the deadline) and `token=...` (when the stage has
//! `serve.token_env`).

use serde_json::json;
use tokio::task::JoinHandle;
use zenoh::Session;

use super::protocol;
use super::{ServeError, Served, parse_timeout_ms, run_parsed};

/// Declares the queryable and answers its queries until the task is
/// aborted (or the session closes).
pub async fn spawn(session: &Session, served: Served) -> Result<JoinHandle<()>, String> {
    let key = served.predict_key();
    let qbl = session
        .declare_queryable(key.clone())
        .await
        .map_err(|e| format!("cannot declare the queryable {key}: {e}"))?;
    Ok(tokio::spawn(async move {
        while let Ok(query) = qbl.recv_async().await {
            let served = served.clone();
            tokio::spawn(async move {
                let body = query
                    .payload()
                    .map(|p| p.to_bytes().into_owned())
                    .unwrap_or_default();
                let params = query.parameters();
                let token = params.get("token").map(str::as_bytes);
                let timeout = params.get("timeout_ms").map(str::to_owned);
                let r = answer(&served, &body, token, timeout.as_deref()).await;
                let sent = match r {
                    Ok(j) => query.reply(query.key_expr().clone(), j.to_string()).await,
                    Err(e) => {
                        let j = json!({"error": e.msg, "code": e.status});
                        query.reply_err(j.to_string()).await
                    }
                };
                if let Err(e) = sent {
                    tracing::debug!("predict queryable: cannot reply: {e}");
                }
            });
        }
        drop(qbl);
    }))
}

async fn answer(
    s: &Served,
    body: &[u8],
    token: Option<&[u8]>,
    timeout_ms: Option<&str>,
) -> Result<serde_json::Value, ServeError> {
    if s.token.is_some() {
        let header = token.map(|t| [b"Bearer ".as_slice(), t].concat());
        if !s.authorized(header.as_deref()) {
            return Err(ServeError::new(
                401,
                "this model needs `token=...` in the selector (serve.token_env)",
            ));
        }
    }
    if body.len() as u64 > s.spec.max_body.0 {
        return Err(ServeError::new(
            413,
            format!(
                "the payload is larger than the limit of {} bytes (`serve.max_body`)",
                s.spec.max_body.0
            ),
        ));
    }
    let Some(model) = s.queue.model() else {
        return Err(ServeError::new(503, "the model is loading"));
    };
    let parsed = protocol::parse_any(body, &model).map_err(|e| ServeError::new(400, e))?;
    let asked = timeout_ms.map(parse_timeout_ms).transpose()?;
    run_parsed(s, &model, parsed, asked).await
}
