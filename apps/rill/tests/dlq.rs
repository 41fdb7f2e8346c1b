//! `rill dlq list|show|replay` through the real binary: dead letters are
//! kept durably per stage, replaying them unfixed puts them back, and
//! replaying after a fix empties the queue into the pipeline's output.

mod common;

use std::collections::BTreeSet;

use common::*;

fn pipeline(expr: &str) -> String {
    format!(
        r#"
pipeline:
  name: dlqdemo
  transforms:
    - {{type: Generate, name: gen, config: {{count: 200, start_time: 0}}}}
    - type: MapToFields
      name: work
      input: gen
      config:
        language: python
        append: true
        fields: {{inv: "{expr}"}}
        error_handling: {{output: errors}}
    - {{type: WriteToJson, name: good, input: work, config: {{path: good.jsonl}}}}
    - {{type: WriteToJson, name: bad, input: work.errors, config: {{path: bad.jsonl}}}}
"#
    )
}

#[test]
fn dead_letters_are_listed_shown_and_replayed_after_a_fix() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), pipeline("100 // (id % 10)")).unwrap();
    let o = rill(d, &["run", "-q", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_jsonl(&d.join("good.jsonl")).len(), 180);
    assert_eq!(read_jsonl(&d.join("bad.jsonl")).len(), 20);

    let o = rill(d, &["dlq", "list", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("work: 20 dead letters"), "{out}");
    assert!(out.contains("ZeroDivisionError"), "{out}");

    let o = rill(d, &["dlq", "show", "p.yaml", "--limit", "3"]);
    let shown: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 3);
    assert_eq!(shown[0]["stage"], "work");
    assert_eq!(shown[0]["attempts"], 1);
    assert_eq!(shown[0]["element"]["id"], 0);
    let id = shown[0]["id"].as_str().unwrap().to_owned();

    // replayed unfixed, a letter fails again and stays in the queue
    let o = rill(
        d,
        &["dlq", "replay", "p.yaml", "--stage", "work", "--id", &id],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0 succeeded, 1 failed again"),
        "{}",
        stdout(&o)
    );
    let o = rill(d, &["dlq", "list", "p.yaml"]);
    assert!(
        stdout(&o).contains("work: 20 dead letters"),
        "{}",
        stdout(&o)
    );
    let o = rill(d, &["dlq", "show", "p.yaml", "--id", &id]);
    assert_eq!(stdout(&o), "", "the replayed letter left the queue");

    // after the fix, replay empties the queue into the output
    std::fs::write(d.join("p.yaml"), pipeline("100 // (id % 10 + 1)")).unwrap();
    let o = rill(d, &["dlq", "replay", "p.yaml", "--stage", "work"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("20 succeeded, 0 failed again"),
        "{}",
        stdout(&o)
    );
    let good = read_jsonl(&d.join("good.jsonl"));
    assert_eq!(good.len(), 200, "the replayed records joined the output");
    let ids: BTreeSet<u64> = good.iter().map(|g| g["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 200);
    let o = rill(d, &["dlq", "list", "p.yaml"]);
    assert!(
        stdout(&o).contains("work: 0 dead letters"),
        "{}",
        stdout(&o)
    );

    // bad requests are bad input
    let o = rill(d, &["dlq", "replay", "p.yaml", "--stage", "gen"]);
    assert_eq!(o.status.code(), Some(2));
    let o = rill(
        d,
        &["dlq", "replay", "p.yaml", "--stage", "work", "--id", "nope"],
    );
    assert_eq!(o.status.code(), Some(2));
}
