//! `rill dlq list|show|replay` through the real binary: dead letters are
//! kept durably per stage, replaying them unfixed puts them back, and
//! replaying after a fix empties the queue into the pipeline's output.

use std::collections::BTreeSet;

use rill_testing::*;

/// `Generate (count) -> MapToFields (inv: expr, dead letters to
/// work.errors) -> good.jsonl / bad.jsonl`; `more` adds to Generate's config.
fn template(name: &str, count: u64, expr: &str, more: &str) -> String {
    format!(
        r#"
pipeline:
  name: {name}
  transforms:
    - {{type: Generate, name: gen, config: {{count: {count}, start_time: 0{more}}}}}
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

fn pipeline(expr: &str) -> String {
    template("dlqdemo", 200, expr, "")
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

    // a corrupt line of the queue is said, not skipped
    let q = d.join(".rill/state/dlqdemo/_dlq/work.jsonl");
    std::fs::write(&q, "{\"id\": \"a\", \"element\": {}}\n{broken\n").unwrap();
    let o = rill(d, &["dlq", "show", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("work.jsonl:2: not JSON"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 1, "the good letter is shown");
    std::fs::write(&q, "").unwrap();

    // bad requests are bad input
    let o = rill(d, &["dlq", "replay", "p.yaml", "--stage", "gen"]);
    assert_eq!(o.status.code(), Some(2));
    let o = rill(
        d,
        &["dlq", "replay", "p.yaml", "--stage", "work", "--id", "nope"],
    );
    assert_eq!(o.status.code(), Some(2));
}

fn big_pipeline(expr: &str, rate: &str) -> String {
    template("dlqbig", 450_000, expr, rate)
}

/// A replay SIGKILLed mid-way and run again delivers each letter once: the
/// letters move to the replay before they leave the queue, the replay's
/// state survives, and each sink is cut back to where the replay began.
/// A replay into a pipeline that is running, or was stopped before its
/// end, is refused (it would write under what the run resumes).
#[test]
fn a_replay_killed_midway_delivers_each_letter_once() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), big_pipeline("100 // (id % 3)", "")).unwrap();
    let o = rill(d, &["run", "-q", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let good0 = lines(&d.join("good.jsonl"));
    assert_eq!(good0, 300_000);

    // fixed; the replay is killed while it writes, then run to its end
    std::fs::write(d.join("p.yaml"), big_pipeline("100 // (id % 3 + 1)", "")).unwrap();
    let args = ["dlq", "replay", "p.yaml", "--stage", "work"];
    let mut mid = 0;
    for _ in 0..8 {
        // killed a random while after it starts writing (taking 150,000
        // letters out of the queue comes first); soon after, as a fast
        // machine writes the rest of a resumed replay in well under a second
        let at_start = lines(&d.join("good.jsonl"));
        let mut child = command(d, &args).spawn().unwrap();
        let t = std::time::Instant::now();
        while lines(&d.join("good.jsonl")) == at_start
            && child.try_wait().unwrap().is_none()
            && t.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(5..120)));
        if child.try_wait().unwrap().is_some() {
            break; // it finished: the kills so far are what counts
        }
        let written = lines(&d.join("good.jsonl"));
        child.kill().unwrap();
        child.wait().unwrap();
        if written > good0 && written < 450_000 {
            mid += 1;
        }
    }
    assert!(
        mid >= 2,
        "only {mid} kills landed while the replay wrote: the test proves nothing; make it larger"
    );
    let o = rill(d, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("150000 succeeded, 0 failed again")
            || stdout(&o).contains("no dead letters to replay"),
        "{}",
        stdout(&o)
    );
    let mut ids: Vec<u64> = read_jsonl(&d.join("good.jsonl"))
        .iter()
        .map(|g| g["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..450_000).collect::<Vec<u64>>(), "each id once");
    let o = rill(d, &["dlq", "list", "p.yaml"]);
    assert!(
        stdout(&o).contains("work: 0 dead letters"),
        "{}",
        stdout(&o)
    );
    assert!(
        !d.join(".rill/state/dlqbig/_dlq/work.replay").exists(),
        "the replay's place is gone"
    );

    // a running pipeline, then one stopped before its end: refused
    std::fs::write(
        d.join("p.yaml"),
        big_pipeline("100 // (id % 3)", ", rate: 20000"),
    )
    .unwrap();
    // (the file of the first run goes: its lines must not count here)
    std::fs::remove_file(d.join("bad.jsonl")).unwrap();
    // (the pipeline finished above: run again on purpose)
    let run = command(d, &["run", "-q", "--reset-state", "p.yaml"])
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while lines(&d.join("bad.jsonl")) < 100 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "no dead letters"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let o = rill(d, &args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the pipeline running?"),
        "{}",
        stderr(&o)
    );
    signal(&run, "-TERM");
    let o = wait(
        run,
        std::time::Duration::from_secs(20),
        "rill after SIGTERM",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = rill(d, &args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has the state of a run that has not finished"),
        "{}",
        stderr(&o)
    );
}
