//! Opening the process's Zenoh session.
//!
//! rill's default is a peer on loopback with multicast scouting off, so a
//! pipeline never talks to anything the user did not name. A lost link is
//! tried again every 250 ms, backing off to once a second (Zenoh's own
//! default backs off to 4 s), so traffic resumes within about a second
//! of a link coming back.

use rill_core::spec::ZenohOptions;

/// The Zenoh configuration for `opts` as JSON5.
pub fn config_json(opts: &ZenohOptions) -> String {
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let path =
        |p: &std::path::Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    // mutual TLS: one certificate for the links a process opens and accepts
    let tls = match &opts.tls {
        None => String::new(),
        Some(t) => format!(
            r#"  transport: {{ link: {{ tls: {{
    root_ca_certificate: {ca},
    listen_certificate: {cert}, listen_private_key: {key},
    connect_certificate: {cert}, connect_private_key: {key},
    enable_mtls: true,
  }} }} }},
"#,
            ca = path(&t.root_ca),
            cert = path(&t.certificate),
            key = path(&t.private_key),
        ),
    };
    let acl = match &opts.access_control {
        None => String::new(),
        Some(a) => format!("  access_control: {a},\n"),
    };
    format!(
        r#"{{
  mode: {mode},
  listen: {{ endpoints: {listen} }},
  connect: {{ endpoints: {connect}, retry: {{ period_init_ms: 250, period_max_ms: 1000, period_increase_factor: 2 }} }},
  scouting: {{ multicast: {{ enabled: false }}, gossip: {{ enabled: true }} }},
{tls}{acl}}}"#,
        mode = serde_json::to_string(&opts.mode).unwrap_or_default(),
        listen = list(&opts.listen),
        connect = list(&opts.connect),
    )
}

/// Opens a session; the error says which endpoint was at fault where Zenoh
/// tells.
pub async fn open(opts: &ZenohOptions) -> Result<zenoh::Session, String> {
    if let Some(e) = opts
        .listen
        .iter()
        .chain(&opts.connect)
        .find(|e| e.starts_with("tls/"))
    {
        tracing::warn!(
            endpoint = %e,
            "Zenoh 1.10's TLS-over-TCP links can crash a process under load (a rustls stream shared by a reading and a writing task, eclipse-zenoh/zenoh#2557); use quic/ endpoints, which carry the same mutual TLS"
        );
    }
    let config = zenoh::Config::from_json5(&config_json(opts))
        .map_err(|e| format!("bad zenoh options: {e}"))?;
    zenoh::open(config).await.map_err(|e| {
        format!(
            "cannot open the Zenoh session (listen {:?}, connect {:?}): {e}",
            opts.listen, opts.connect
        )
    })
}
