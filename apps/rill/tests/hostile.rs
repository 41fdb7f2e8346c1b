//! Hostile input through the real binary: names that would escape the state
//! directory, YAML that would exhaust the stack or the memory, and the
//! permissions of what rill writes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rill_testing::*;

fn validate(dir: &Path, yaml: &str) -> std::process::Output {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    rill(dir, &["validate", "p.yaml"])
}

#[test]
fn names_that_would_escape_the_state_directory_are_refused() {
    let dir = sandbox();
    for (name, says) in [
        ("..", "is not a usable folder name"),
        (".", "is not a usable folder name"),
        ("_dlq", "starts with `_`"),
        (".hidden", "starts with `.`"),
    ] {
        let o = validate(
            dir.path(),
            &format!(
                "pipeline:\n  transforms:\n    - {{type: Create, name: \"{name}\", config: {{elements: [1]}}}}\n    - {{type: LogForTesting, input: \"{name}\"}}\n"
            ),
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("transform name `{name}` {says}")),
            "{name}: {err}"
        );
        assert!(
            err.contains("p.yaml:3:"),
            "{name}: points at the stage: {err}"
        );
    }
    // a file named `...yaml` names its pipeline without dots: its state
    // stays inside the state directory
    std::fs::write(
        dir.path().join("...yaml"),
        "pipeline:\n  transforms:\n    - {type: Create, name: c, config: {elements: [1]}}\n    - {type: WriteToJson, input: c, config: {path: o.jsonl}}\n",
    )
    .unwrap();
    let o = rill(
        dir.path(),
        &["run", "-q", "...yaml", "--listen", "tcp/127.0.0.1:0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join(".rill/state/__").is_dir());
}

#[test]
fn yaml_that_would_exhaust_the_process_is_refused_at_once() {
    let dir = sandbox();
    // billion laughs, in a key nobody reads
    let mut laughs = String::from("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..10 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    let t = Instant::now();
    let o = validate(dir.path(), &laughs);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("aliases expand to more than 100000 nodes"),
        "{}",
        stderr(&o)
    );
    assert!(t.elapsed() < Duration::from_secs(20));

    // 4,000 levels of block-style lists
    let deep: String = (0..4000)
        .map(|i| format!("{}-\n", " ".repeat(i + 4)))
        .collect();
    let o = validate(dir.path(), &format!("pipeline:\n  transforms:\n{deep}"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nested deeper than 128 levels"),
        "{}",
        stderr(&o)
    );

    // deep elements of a Create: refused by `validate` (not an abort in `run`)
    let mut v = String::from("1");
    for _ in 0..1000 {
        v = format!("[{v}]");
    }
    let o = validate(
        dir.path(),
        &format!("pipeline:\n  transforms:\n    - {{type: Create, config: {{elements: [{v}]}}}}\n"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// State and dead letters hold whole records: owner-only. Outputs keep the
/// usual permissions.
#[test]
fn state_and_dead_letters_are_private() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(
        d.join("p.yaml"),
        r#"
pipeline:
  name: private
  transforms:
    - {type: Generate, name: gen, config: {rate: 2000, start_time: 0}}
    - type: MapToFields
      name: work
      input: gen
      config:
        language: python
        append: true
        fields: {inv: "100 // (id % 2)"}
        error_handling: {output: errors}
    - {type: WriteToJson, name: good, input: work, config: {path: out/good.jsonl}}
    - {type: WriteToJson, name: bad, input: work.errors, config: {path: out/bad.jsonl}}
"#,
    )
    .unwrap();
    let child = command(d, &["run", "-q", "p.yaml", "--listen", "tcp/127.0.0.1:0"])
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_to_string(d.join("out/bad.jsonl")).map_or(0, |s| s.lines().count()) < 100 {
        assert!(t.elapsed() < Duration::from_secs(30), "no dead letters");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-TERM");
    let o = wait(child, Duration::from_secs(20), "rill after SIGTERM");
    assert!(o.status.success(), "{}", stderr(&o));
    let mut seen = 0;
    let mut todo = vec![d.join(".rill")];
    while let Some(p) = todo.pop() {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        if p.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        seen += 1;
    }
    assert!(
        d.join(".rill/state/private/_dlq/work.jsonl").exists(),
        "the dead-letter queue is among them"
    );
    assert!(seen > 5);
    // an output is for others to read: the usual 0666 less the umask
    let umask = unsafe { umask_now() };
    let mode = std::fs::metadata(d.join("out/good.jsonl"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666 & !umask, "output file");
}

/// The umask of this process (set and put back).
unsafe fn umask_now() -> u32 {
    unsafe extern "C" {
        fn umask(mask: u32) -> u32;
    }
    unsafe {
        let m = umask(0o022);
        umask(m);
        m
    }
}

/// A line longer than the limit fails as a record; it is not held in
/// memory, and the lines after it flow.
#[test]
fn a_line_past_the_limit_is_a_dead_letter() {
    let dir = sandbox();
    let d = dir.path();
    let long = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    std::fs::write(
        d.join("in.jsonl"),
        format!("{{\"a\": 1}}\n{long}\n{{\"a\": 3}}\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("p.yaml"),
        r#"
pipeline:
  transforms:
    - {type: ReadFromJson, name: read, config: {path: in.jsonl, error_handling: {output: bad}}}
    - {type: WriteToJson, input: read, config: {path: out.jsonl}}
    - {type: WriteToJson, input: read.bad, config: {path: bad.jsonl}}
"#,
    )
    .unwrap();
    let o = command(d, &["run", "-q", "p.yaml", "--listen", "tcp/127.0.0.1:0"])
        .env("RILL_MAX_LINE_BYTES", "1000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_jsonl(&d.join("out.jsonl")).len(), 2);
    let bad = read_jsonl(&d.join("bad.jsonl"));
    assert_eq!(bad.len(), 1);
    let msg = bad[0]["msg"].as_str().unwrap();
    assert!(
        msg.contains("in.jsonl:2: the line is 5012 bytes, longer than the limit of 1000"),
        "{msg}"
    );
}
