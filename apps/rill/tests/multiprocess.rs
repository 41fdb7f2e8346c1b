//! One pipeline split over two `rill run --stages` processes on loopback
//! delivers exactly what the one-process run delivers.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use rill_testing::*;

const PIPELINE: &str = r#"
pipeline:
  name: split
  transforms:
    - type: Generate
      name: gen
      config: {count: 20000, keys: 4, start_time: 0, seed: 3}
    - type: MapToFields
      name: double
      input: gen
      config:
        language: python
        append: true
        fields: {twice: "value * 2", bucket: "id % 7"}
    - type: Filter
      name: some
      input: double
      config: {language: python, keep: "bucket != 3"}
    - type: WriteToJson
      name: sink
      input: some
      config: {path: out.jsonl}
"#;

/// `rill run -q p.yaml --stages STAGES`, listening on `ep`, or connecting
/// to it (and listening on a port of its own).
/// With `--reset-state`: the one-process run before it finished the same
/// pipeline in the same folder.
fn side(dir: &Path, stages: &str, ep: &str, listen: bool) -> Child {
    let mut args = vec!["run", "-q", "p.yaml", "--reset-state", "--stages", stages];
    if listen {
        args.extend(["--listen", ep]);
    } else {
        args.extend(["--connect", ep, "--listen", "tcp/127.0.0.1:0"]);
    }
    command(dir, &args).spawn().unwrap()
}

#[test]
fn split_over_two_processes_equals_one_process() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let one = rill(dir.path(), &["run", "-q", "p.yaml"]);
    assert!(one.status.success(), "{}", stderr(&one));
    let single = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    std::fs::remove_file(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(
        single.lines().count(),
        (0..20000).filter(|i| i % 7 != 3).count()
    );

    // the consumer side starts first and listens; the producer side connects
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let b = side(dir.path(), "some,sink", &ep, true);
    std::thread::sleep(Duration::from_millis(300));
    let a = side(dir.path(), "gen,double", &ep, false);
    let a = wait(a, Duration::from_secs(60), "producer process");
    let b = wait(b, Duration::from_secs(60), "consumer process");
    assert!(a.status.success(), "producer: {}", stderr(&a));
    assert!(b.status.success(), "consumer: {}", stderr(&b));
    let split = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(
        split == single,
        "the split run wrote something else than the single run"
    );
}

#[test]
fn producer_started_first_waits_for_its_consumer() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    // the producer listens and starts long before the consumer exists: its
    // first messages reach nobody, and must be resent
    let a = side(dir.path(), "gen,double", &ep, true);
    std::thread::sleep(Duration::from_millis(1500));
    let b = side(dir.path(), "some,sink", &ep, false);
    let b = wait(b, Duration::from_secs(60), "consumer process");
    let a = wait(a, Duration::from_secs(60), "producer process");
    assert!(a.status.success(), "producer: {}", stderr(&a));
    assert!(b.status.success(), "consumer: {}", stderr(&b));
    let rows = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(rows.len(), (0..20000).filter(|i| i % 7 != 3).count());
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "order kept, no duplicates"
    );
}

#[test]
fn unknown_stage_name_is_bad_input() {
    let dir = sandbox();
    std::fs::write(dir.path().join("p.yaml"), PIPELINE).unwrap();
    let out = rill(dir.path(), &["run", "p.yaml", "--stages", "gen,dobule"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--stages names `dobule`"),
        "{}",
        stderr(&out)
    );
}

/// A finished run is not destroyed by running it again (issue 23, finding
/// 2): the same command says the pipeline already finished, exits 0 and
/// leaves the output as it was, in one process and for either side of a
/// split run (where the rerun sink once waited forever for a producer that
/// had finished, its output cut to 0 rows); `--reset-state` runs it again.
#[test]
fn a_rerun_of_a_finished_run_keeps_its_output() {
    let dir = sandbox();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let out = d.join("out.jsonl");
    let o = rill(d, &["run", "-q", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read_to_string(&out).unwrap();
    let n = (0..20000).filter(|i| i % 7 != 3).count();
    assert_eq!(first.lines().count(), n);
    let modified = std::fs::metadata(&out).unwrap().modified().unwrap();

    let again = rill(d, &["run", "p.yaml"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("pipeline `split` already finished at ")
            && stderr(&again).contains("--reset-state"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&out).unwrap().modified().unwrap(),
        modified,
        "the output was written again"
    );

    // the same over two processes, each side run again on its own
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let run_side = |stages: &str, listen: bool, reset: bool| {
        let mut args = vec!["run", "-q", "p.yaml", "--stages", stages];
        if reset {
            args.push("--reset-state");
        }
        if listen {
            args.extend(["--listen", ep.as_str()]);
        } else {
            args.extend(["--connect", ep.as_str(), "--listen", "tcp/127.0.0.1:0"]);
        }
        command(d, &args).spawn().unwrap()
    };
    let b = run_side("some,sink", true, true);
    std::thread::sleep(Duration::from_millis(300));
    let a = run_side("gen,double", false, true);
    let a = wait(a, Duration::from_secs(60), "producer process");
    let b = wait(b, Duration::from_secs(60), "consumer process");
    assert!(a.status.success(), "producer: {}", stderr(&a));
    assert!(b.status.success(), "consumer: {}", stderr(&b));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    for (stages, listen) in [("some,sink", true), ("gen,double", false)] {
        let o = wait(
            run_side(stages, listen, false),
            Duration::from_secs(30),
            "a finished side run again",
        );
        assert!(o.status.success(), "{stages}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("already finished"),
            "{stages}: {}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            first,
            "{stages} run again changed the output"
        );
    }
    // on purpose: the whole run again
    let o = rill(d, &["run", "-q", "--reset-state", "p.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
}

const END_CUT: &str = r#"
pipeline:
  name: endcut
  transforms:
    - {type: Generate, name: gen, config: {count: 600, seed: 1}}
    - type: MapToFields
      name: slow
      input: gen
      config:
        language: python
        fields: {id: id, v: "sum(range(150000)) + id"}
    - {type: WriteToJson, name: sink, input: slow, config: {path: out.jsonl}}
# the producer listens nowhere: its one way to the consumer is the link
options: {batch_size: 16, zenoh: {listen: []}}
"#;

/// The split `END_CUT` run, the link between its processes cut after the
/// producer sent its last record and its end while the consumer still
/// works: the consumer (`slow,sink`, listening on the returned endpoint,
/// with `RILL_END_WAIT_SECS=end_wait`), the producer (`gen`, connected
/// through the link) and the link.
fn end_cut(d: &Path, end_wait: &str) -> (Spawned, Spawned, Link, String) {
    std::fs::write(d.join("p.yaml"), END_CUT).unwrap();
    let out = d.join("out.jsonl");
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let link = Link::to(port);
    let consumer: Spawned = command(
        d,
        &["run", "p.yaml", "--stages", "slow,sink", "--listen", &ep],
    )
    .env("RILL_END_WAIT_SECS", end_wait)
    .spawn()
    .unwrap()
    .into();
    std::thread::sleep(Duration::from_millis(300));
    let producer = spawn(
        d,
        &[
            "run",
            "p.yaml",
            "--stages",
            "gen",
            "--connect",
            &link.endpoint(),
        ],
    );
    // all 600 records (fewer than a window) and the end are sent long
    // before the slow consumer (8 s in all, in batches of 16) has written
    // its first ones
    wait_lines(&out, 1);
    std::thread::sleep(Duration::from_millis(500));
    let cut_at = lines(&out);
    assert!(cut_at < 600, "the consumer finished before the cut");
    link.cut();
    eprintln!("cut when {cut_at} of 600 rows were written");
    (consumer, producer, link, ep)
}

/// The end of the stream survives a link cut (issue 23, findings 1 and
/// 4): the link between the processes is cut after the producer sent its
/// last record and its end, while the consumer still works; the consumer
/// finishes during the cut, longer than Zenoh's lease (10 s), so its last
/// acknowledgement is lost. Before, the consumer left once the producer's
/// token was gone, and the producer, back, waited forever for that
/// acknowledgement, without a word. Now the consumer says what it waits
/// for and acknowledges again until the producer confirms it, each side
/// warns of the other being unreachable and back, and both exit by
/// themselves.
#[test]
fn the_end_of_the_stream_survives_a_cut() {
    let dir = sandbox();
    let d = dir.path();
    let out = d.join("out.jsonl");
    let (mut consumer, producer, link, _) = end_cut(d, "300");
    wait_lines_for(&out, 600, Duration::from_secs(120));
    // the consumer finished during the cut; the lease ends, the producer is
    // unreachable: before, the consumer left here
    std::thread::sleep(Duration::from_secs(16));
    let still = consumer.running();
    link.heal();
    assert!(
        still,
        "the consumer left while its producer had not confirmed the end: {}",
        stderr(&consumer.kill_and_output())
    );
    let c = consumer.wait(Duration::from_secs(60), "consumer process");
    let p = producer.wait(Duration::from_secs(60), "producer process");
    assert!(c.status.success(), "consumer: {}", stderr(&c));
    assert!(p.status.success(), "producer: {}", stderr(&p));
    assert!(
        stderr(&c).contains("waiting for producer `gen`")
            && stderr(&c).contains("unreachable for")
            && stderr(&c).contains("producer `gen` confirmed the end of its stream"),
        "the consumer did not say what it waited for: {}",
        stderr(&c)
    );
    assert!(
        stderr(&p).contains("consumer `slow` is unreachable")
            && stderr(&p).contains("consumer `slow` is reachable again"),
        "the producer did not say its consumer was unreachable: {}",
        stderr(&p)
    );
    let ids = int_column(&out, "id");
    assert_eq!(ids, (0..600).collect::<Vec<_>>(), "exactly once, in order");
}

/// A consumer that gave up waiting for its unreachable producer (here
/// after 2 s) leaves a producer that waits for the last acknowledgement;
/// running the consumer's command again once the link is back says the
/// pipeline finished, sends that acknowledgement again, and the producer
/// confirms it and exits by itself; the output is untouched.
#[test]
fn a_rerun_sends_a_lost_last_acknowledgement_again() {
    let dir = sandbox();
    let d = dir.path();
    let out = d.join("out.jsonl");
    let (consumer, mut producer, link, ep) = end_cut(d, "2");
    let c = consumer.wait(Duration::from_secs(120), "consumer process");
    assert!(c.status.success(), "consumer: {}", stderr(&c));
    assert!(
        stderr(&c).contains("gave up after") && stderr(&c).contains("producer `gen`"),
        "{}",
        stderr(&c)
    );
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 600);
    link.heal();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        producer.running(),
        "the producer left without the last acknowledgement: {}",
        stderr(&producer.kill_and_output())
    );
    let again = wait(
        command(
            d,
            &["run", "p.yaml", "--stages", "slow,sink", "--listen", &ep],
        )
        .spawn()
        .unwrap(),
        Duration::from_secs(60),
        "the consumer run again",
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already finished")
            && stderr(&again).contains("sent the last acknowledgement again: producer `gen`"),
        "{}",
        stderr(&again)
    );
    let p = producer.wait(Duration::from_secs(30), "producer process");
    assert!(p.status.success(), "producer: {}", stderr(&p));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
}

/// A consumer's process killed after its stages finished but before its
/// producer confirmed the end (the link is cut) resumes when run again:
/// its stages' own finished flags are state, not the mark of a finished
/// run (they once shared a key: the rerun said the pipeline had finished,
/// and the producer waited forever for the last acknowledgement).
#[test]
fn a_consumer_killed_while_it_waits_for_the_confirmation_resumes() {
    let dir = sandbox();
    let d = dir.path();
    let out = d.join("out.jsonl");
    let (consumer, producer, link, ep) = end_cut(d, "300");
    wait_lines_for(&out, 600, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let mut consumer = consumer;
    assert!(consumer.running(), "the consumer did not wait");
    consumer.signal("-KILL");
    let _ = consumer.kill_and_output();
    let written = std::fs::read_to_string(&out).unwrap();
    link.heal();
    let again = spawn(
        d,
        &["run", "p.yaml", "--stages", "slow,sink", "--listen", &ep],
    );
    let p = producer.wait(Duration::from_secs(60), "producer process");
    let c = again.wait(Duration::from_secs(60), "the consumer run again");
    assert!(p.status.success(), "producer: {}", stderr(&p));
    assert!(c.status.success(), "consumer: {}", stderr(&c));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
    let ids = int_column(&out, "id");
    assert_eq!(ids, (0..600).collect::<Vec<_>>(), "exactly once, in order");
}

/// A pipeline run whole keeps its stages in one store (`_shared`); split
/// over processes, each process keeps its stages in one of its own
/// (`_shared-<hash>`), or a single stage in its own folder. Here one run is
/// SIGKILLed mid-stream in each layout in turn (whole; two processes of two
/// stages; four processes of one; whole again, to the end): every start
/// moves the state to where it now belongs, and the output is exact.
#[test]
fn state_moves_between_a_whole_run_and_split_ones_across_kills() {
    let dir = sandbox();
    let d = dir.path();
    let yaml = PIPELINE.replace("count: 20000,", "count: 20000, rate: 4000,");
    std::fs::write(d.join("p.yaml"), &yaml).unwrap();
    let out = d.join("out.jsonl");
    let state = d.join(".rill/state/split");
    let want: Vec<i64> = (0..20000).filter(|i| i % 7 != 3).collect();
    let stores = || {
        let mut v: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n != "_dlq")
            .collect();
        v.sort();
        v
    };

    // whole, killed mid-stream
    let mut whole = one_process(d, "whole");
    whole.start();
    wait_lines(&out, 3000);
    whole.kill();
    let mut at = lines(&out);
    assert!(
        at < want.len() - 9000,
        "the kill came too late ({at} lines)"
    );
    assert_eq!(stores(), ["_shared"]);

    // two processes of two stages, then four of one, each killed mid-stream
    for (round, split) in [
        vec!["gen,double", "some,sink"],
        vec!["gen", "double", "some", "sink"],
    ]
    .into_iter()
    .enumerate()
    {
        let mut parts = process_per_stage(d, &split);
        for p in &mut parts {
            p.start();
        }
        let t = std::time::Instant::now();
        while lines(&out) < at + 3000 {
            let logs = parts.iter().map(Proc::logs).collect::<String>();
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "round {round}: fewer than {} lines after 60 s: {logs}",
                at + 3000
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs = parts.iter().map(Proc::logs).collect::<String>();
        let now = stores();
        if round == 0 {
            assert_eq!(now.len(), 2, "{now:?}: {logs}");
            assert!(
                now.iter().all(|n| n.starts_with("_shared-")),
                "{now:?}: {logs}"
            );
        } else {
            assert_eq!(now, ["double", "gen", "sink", "some"], "{logs}");
        }
        for p in &mut parts {
            p.kill();
        }
        at = lines(&out);
        assert!(
            at < want.len() - 3000,
            "round {round}: the kill came too late ({at} lines)"
        );
    }

    // whole again, to the end
    let o = rill(d, &["run", "-q", "p.yaml", "--listen", "tcp/127.0.0.1:0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stores(), ["_shared"]);
    let got = int_column(&out, "id");
    assert_eq!(got.len(), want.len(), "duplicates or gaps");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want);
}
