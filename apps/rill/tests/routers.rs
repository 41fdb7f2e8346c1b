//! Pipelines whose processes reach each other only through a Zenoh router
//! (issue 23, finding 3): `rill router`, and `rill run --mode router` for a
//! process that also runs stages. The other processes are clients: they
//! connect to the router only, never to each other, as on boxes that can
//! reach the hub and nothing else.

use std::path::Path;
use std::time::Duration;

use rill_testing::*;

/// `gen` feeds a quick sink and a slow branch (`slow` → `far`).
const PIPELINE: &str = r#"
pipeline:
  name: star
  transforms:
    - {type: Generate, name: gen, config: {count: 600, seed: 2}}
    - {type: WriteToJson, name: near, input: gen, config: {path: near.jsonl}}
    - type: MapToFields
      name: slow
      input: gen
      config:
        language: python
        fields: {id: id, v: "sum(range(400000)) + id"}
    - {type: WriteToJson, name: far, input: slow, config: {path: far.jsonl}}
options: {batch_size: 16, zenoh: {listen: []}}
"#;

fn client(d: &Path, stages: &str, router: &str) -> Spawned {
    spawn(
        d,
        &[
            "run",
            "p.yaml",
            "--stages",
            stages,
            "--mode",
            "client",
            "--connect",
            router,
        ],
    )
}

fn exact(d: &Path, file: &str) {
    assert_eq!(
        int_column(&d.join(file), "id"),
        (0..600).collect::<Vec<_>>(),
        "{file}: exactly once, in order"
    );
}

/// A star through `rill router`: two clients that only know the router
/// run the pipeline exactly; the router stops on SIGTERM with exit 0.
#[test]
fn a_star_through_rill_router() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let router = spawn(d, &["router", "--listen", &ep]);
    std::thread::sleep(Duration::from_millis(300));
    let far = client(d, "slow,far,near", &ep);
    let src = client(d, "gen", &ep);
    let src = src.wait(Duration::from_secs(90), "the source client");
    let far = far.wait(Duration::from_secs(90), "the sink client");
    assert!(src.status.success(), "{}", stderr(&src));
    assert!(far.status.success(), "{}", stderr(&far));
    exact(d, "near.jsonl");
    exact(d, "far.jsonl");
    router.signal("-TERM");
    let r = router.wait(Duration::from_secs(10), "the router");
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("listening on"), "{}", stderr(&r));
}

/// The hub runs a stage too (`near`, quick) with `--mode router`: it
/// finishes long before the slow branch's last acknowledgement, which
/// passes through it. Before, the hub (a peer) left as soon as its own
/// sink finished and the source waited forever for that acknowledgement;
/// now it routes until the others have left, and says so.
#[test]
fn a_hub_that_finished_routes_until_the_others_leave() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let mut hub = spawn(
        d,
        &[
            "run", "p.yaml", "--stages", "near", "--mode", "router", "--listen", &ep,
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let far = client(d, "slow,far", &ep);
    let src = client(d, "gen", &ep);
    // the hub's own sink is done while the slow branch still works
    wait_lines(&d.join("near.jsonl"), 600);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        lines(&d.join("far.jsonl")) < 600,
        "the slow branch finished before the hub's sink"
    );
    assert!(hub.running(), "the hub left while the others still ran");
    let src = src.wait(Duration::from_secs(90), "the source client");
    let far = far.wait(Duration::from_secs(90), "the slow client");
    let hub = hub.wait(Duration::from_secs(30), "the hub");
    assert!(src.status.success(), "{}", stderr(&src));
    assert!(far.status.success(), "{}", stderr(&far));
    assert!(hub.status.success(), "{}", stderr(&hub));
    assert!(
        stderr(&hub).contains("still routing for the stages of other processes"),
        "{}",
        stderr(&hub)
    );
    exact(d, "near.jsonl");
    exact(d, "far.jsonl");
}

#[test]
fn an_unknown_mode_is_refused() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(
        d.join("p.yaml"),
        PIPELINE.replace("listen: []", "mode: hub"),
    )
    .unwrap();
    let o = rill(d, &["validate", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown zenoh mode `hub`: expected `peer`, `client` or `router`"),
        "{}",
        stderr(&o)
    );
}

/// The same star written with `placement` and `options.hosts`: each
/// process is `rill run p.yaml --host NAME`, with its endpoints and mode
/// from the file; `rill validate` and `rill graph` show the hosts.
#[test]
fn placement_runs_each_host_with_its_own_endpoints() {
    let dir = sandbox();
    let d = dir.path();
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let yaml = PIPELINE
        .replace(
            "options: {batch_size: 16, zenoh: {listen: []}}",
            &format!(
                "options:\n  batch_size: 16\n  hosts:\n    hub: {{listen: ['{ep}'], mode: router}}\n    src: {{connect: ['{ep}'], mode: client}}\n    far: {{connect: ['{ep}'], mode: client}}\n"
            ),
        )
        .replace(
            "config: {count: 600, seed: 2}}",
            "config: {count: 600, seed: 2}, placement: {host: src}}",
        )
        .replace(
            "config: {path: near.jsonl}}",
            "config: {path: near.jsonl}, placement: {host: hub}}",
        )
        .replace("      name: slow\n", "      name: slow\n      placement: {host: far}\n")
        .replace(
            "config: {path: far.jsonl}}",
            "config: {path: far.jsonl}, placement: {host: far}}",
        );
    std::fs::write(d.join("p.yaml"), &yaml).unwrap();

    let v = rill(d, &["validate", "p.yaml"]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(
        stdout(&v).contains("slow (MapToFields, transform) on far <- gen"),
        "{}",
        stdout(&v)
    );
    let g = rill(d, &["graph", "p.yaml", "--format", "mermaid"]);
    assert!(
        stdout(&g).contains("subgraph h1[\"host hub\"]"),
        "{}",
        stdout(&g)
    );
    let bad = rill(d, &["run", "p.yaml", "--host", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad)
            .contains("--host `nope`: `options.hosts` has no such host (hosts: far, hub, src)"),
        "{}",
        stderr(&bad)
    );

    let hub = spawn(d, &["run", "p.yaml", "--host", "hub"]);
    std::thread::sleep(Duration::from_millis(300));
    let far = spawn(d, &["run", "p.yaml", "--host", "far"]);
    let src = spawn(d, &["run", "p.yaml", "--host", "src"]);
    for (p, what) in [(src, "src"), (far, "far"), (hub, "hub")] {
        let o = p.wait(Duration::from_secs(90), what);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
    }
    exact(d, "near.jsonl");
    exact(d, "far.jsonl");
}
