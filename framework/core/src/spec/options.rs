//! Checks of `options:` values and of the settings shared with stages
//! (queues, restart policies).

use super::{Cx, Options, QueueSpec, RestartPolicy, WhenFull};
use crate::yaml::{Mark, YNode};

pub(super) fn check_options(cx: &mut Cx, o: &Options, node: Option<&YNode>) {
    let mark = node.map_or(Mark::default(), |n| n.mark);
    let at = |k: &str| node.and_then(|n| n.entry(k)).map_or(mark, |(k, _)| k.mark);
    if o.batch_size == 0 {
        cx.err(at("batch_size"), "`batch_size` must be at least 1");
    }
    check_queue(cx, &o.queue, at("queue"));
    if o.checkpoint_interval.records == 0 {
        cx.err(
            at("checkpoint_interval"),
            "`checkpoint_interval.records` must be at least 1",
        );
    }
    if !matches!(o.zenoh.mode.as_str(), "peer" | "client" | "router") {
        cx.err(
            at("zenoh"),
            format!(
                "unknown zenoh mode `{}`: expected `peer`, `client` or `router`",
                o.zenoh.mode
            ),
        );
    }
    let tls_endpoint = o
        .zenoh
        .listen
        .iter()
        .chain(&o.zenoh.connect)
        .find(|e| e.starts_with("tls/") || e.starts_with("quic/"));
    if let Some(e) = tls_endpoint
        && o.zenoh.tls.is_none()
    {
        cx.err(
            at("zenoh"),
            format!("the endpoint `{e}` is TLS (over TCP or QUIC): it needs `zenoh.tls: {{root_ca, certificate, private_key}}`"),
        );
    }
    if let Some(acl) = &o.zenoh.access_control
        && !acl.is_object()
    {
        cx.err(
            at("zenoh"),
            "`zenoh.access_control` must be a mapping, as Zenoh's configuration writes it",
        );
    }
    check_restart(cx, &o.restart, at("restart"));
}

pub(super) fn check_queue(cx: &mut Cx, q: &QueueSpec, mark: Mark) {
    if q.size == 0 {
        cx.err(mark, "queue `size` must be at least 1");
    }
    if q.when_full == WhenFull::DropOldest {
        cx.err(
            mark,
            "`when_full: drop_oldest` is not supported yet by this version of rill; use `block`",
        );
    }
}

pub(super) fn check_restart(cx: &mut Cx, r: &RestartPolicy, mark: Mark) {
    if r.backoff.multiplier.is_nan() || r.backoff.multiplier < 1.0 {
        cx.err(mark, "backoff `multiplier` must be at least 1.0");
    }
    if !(0.0..=1.0).contains(&r.backoff.jitter) {
        cx.err(mark, "backoff `jitter` must be between 0.0 and 1.0");
    }
    if r.backoff.initial > r.backoff.max {
        cx.err(mark, "backoff `initial` must not exceed `max`");
    }
}
