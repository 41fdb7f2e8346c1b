//! # rill-testing
//!
//! What rill's process-level tests share, in one place: finding (or
//! building) a binary, a scratch folder that sees the repository's
//! `configs/`, running a command to its end within a time limit, a
//! process driver that kills and restarts (`Proc`), loopback ports and
//! Zenoh endpoints, and reading what sinks wrote.
//!
//! Used by `apps/rill/tests`, `apps/custom-rill/tests`, `hil-tests` and
//! `framework/runtime/tests`. (Running a node on scripted inputs, without
//! processes, is `rill_core::testkit`.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The `rill` binary: `$RILL_BIN` when set, else the one of the profile
/// these tests were built with (next to the test executable's `deps/`
/// folder), built with cargo if absent.
pub fn rill_bin() -> PathBuf {
    // another build of rill (a release build, or an older one to show
    // what a test would have caught)
    if let Some(bin) = std::env::var_os("RILL_BIN") {
        return PathBuf::from(bin);
    }
    bin("rill", "rill-cli")
}

/// The binary `name` of package `package`, of the profile these tests were
/// built with, built with cargo if absent.
pub fn bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_owned();
    let bin = profile_dir.join(name);
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["build", "-q", "-p", package]).current_dir(root());
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("cargo build");
        assert!(st.success(), "cannot build the {name} binary");
    }
    bin
}

/// A temporary working directory with the repository's `configs` linked
/// in (pipelines name their inputs relative to the working directory).
pub fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::os::unix::fs::symlink(root().join("configs"), dir.path().join("configs"))
        .expect("configs linked in");
    dir
}

/// `bin ARGS` in `dir`, with the test-only node types, no `RILL_LOG` from
/// outside, and its output captured.
pub fn command_of(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(dir)
        .env("RILL_TEST_NODES", "1")
        .env_remove("RILL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `rill ARGS` in `dir`, as [`command_of`].
pub fn command(dir: &Path, args: &[&str]) -> Command {
    command_of(&rill_bin(), dir, args)
}

/// A child process that is killed when dropped, so a test that fails
/// leaves nothing running (a stray `rill run` holds ports and CPU and can
/// make the next test fail).
pub struct Spawned(Option<Child>);

impl Spawned {
    /// Waits for it, as [`wait`].
    pub fn wait(mut self, limit: Duration, what: &str) -> Output {
        wait(self.0.take().expect("not waited for yet"), limit, what)
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Whether it has not exited yet.
    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Sends it `sig` (`-TERM`, `-INT`, ...).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Kills it and returns what it printed (for a failure message).
    pub fn kill_and_output(mut self) -> Output {
        let mut c = self.0.take().expect("not waited for yet");
        let _ = c.kill();
        c.wait_with_output().expect("output")
    }
}

impl From<Child> for Spawned {
    fn from(c: Child) -> Spawned {
        Spawned(Some(c))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `rill ARGS` in `dir` (as [`command`]), killed when dropped.
pub fn spawn(dir: &Path, args: &[&str]) -> Spawned {
    Spawned(Some(command(dir, args).spawn().expect("spawn rill")))
}

/// Waits for a child, killing it (and failing the test) after `limit`.
pub fn wait(mut child: Child, limit: Duration, what: &str) -> Output {
    let end = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `bin ARGS` in `dir` to its end (at most 60 s).
pub fn run_of(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    let child = command_of(bin, dir, args).spawn().expect("spawn");
    wait(
        child,
        Duration::from_secs(60),
        &format!("{} {}", bin.display(), args.join(" ")),
    )
}

/// Runs `rill ARGS` in `dir` to its end (at most 60 s).
pub fn rill(dir: &Path, args: &[&str]) -> Output {
    run_of(&rill_bin(), dir, args)
}

/// Writes `yaml` to `dir/p.yaml` and runs `rill run p.yaml` to its end.
pub fn run_yaml(dir: &Path, yaml: &str) -> Output {
    std::fs::write(dir.join("p.yaml"), yaml).expect("p.yaml written");
    rill(dir, &["run", "p.yaml"])
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reads a JSON Lines file (panics, naming it, when it is absent).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The int field `field` of every row of a JSON Lines file.
pub fn int_column(path: &Path, field: &str) -> Vec<i64> {
    read_jsonl(path)
        .iter()
        .map(|r| {
            r[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{}: no int `{field}` in {r}", path.display()))
        })
        .collect()
}

/// The lines of a file so far (0 when it does not exist yet).
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Waits until `path` has at least `n` lines (at most 30 s).
pub fn wait_lines(path: &Path, n: usize) {
    wait_lines_for(path, n, Duration::from_secs(30));
}

/// Waits until `path` has at least `n` lines, at most `limit`.
pub fn wait_lines_for(path: &Path, n: usize, limit: Duration) {
    let end = Instant::now() + limit;
    while lines(path) < n {
        assert!(
            Instant::now() < end,
            "fewer than {n} lines in {} after {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` (`-TERM`, `-KILL`, ...) to a child with `kill`.
pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// A keyed stream through a running count per key (`TestCountPerKey`)
/// into `out.jsonl`: the pipeline that the recovery and chaos tests stop,
/// kill and resume. `generate` is `Generate`'s config (a flow mapping's
/// inside), `options` the body of `options:`.
pub fn counting_pipeline(name: &str, generate: &str, options: &str) -> String {
    format!(
        r#"
pipeline:
  name: {name}
  transforms:
    - type: Generate
      name: gen
      config: {{{generate}}}
    - type: TestCountPerKey
      name: count
      input: gen
    - type: WriteToJson
      name: sink
      input: count
      config: {{path: out.jsonl}}
options:
{options}"#
    )
}

/// The random source of a chaos test: seeded from `RILL_CHAOS_SEED` when
/// set (to replay a failure), else at random; the seed is printed, and
/// returned for failure messages.
pub fn chaos_rng() -> (u64, fastrand::Rng) {
    let seed: u64 = std::env::var("RILL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos seed {seed} (RILL_CHAOS_SEED={seed} replays it)");
    (seed, fastrand::Rng::with_seed(seed))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `--listen` on `ports[me]` and `--connect` to the others: the Zenoh
/// endpoints of process `me` of a pipeline split over processes.
pub fn endpoints(ports: &[u16], me: usize) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        format!("tcp/127.0.0.1:{}", ports[me]),
    ];
    for (i, p) in ports.iter().enumerate() {
        if i != me {
            args.push("--connect".into());
            args.push(format!("tcp/127.0.0.1:{p}"));
        }
    }
    args
}

/// `rill run -q p.yaml` in `dir` as one process named `name`, listening
/// on a free loopback port.
pub fn one_process(dir: &Path, name: &str) -> Proc {
    let mut args: Vec<String> = vec!["run".into(), "-q".into(), "p.yaml".into()];
    args.extend(endpoints(&[free_port()], 0));
    Proc::new(name, dir, &args)
}

/// `rill run -q p.yaml --stages S` in `dir`, one process per stage of
/// `stages` (named after it), each connected to the others on loopback.
pub fn process_per_stage(dir: &Path, stages: &[&str]) -> Vec<Proc> {
    let ports: Vec<u16> = stages.iter().map(|_| free_port()).collect();
    stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let mut args: Vec<String> = vec!["run".into(), "-q".into(), "p.yaml".into()];
            args.push("--stages".into());
            args.push((*stage).into());
            args.extend(endpoints(&ports, i));
            Proc::new(stage, dir, &args)
        })
        .collect()
}

/// One `rill run` process that the driver kills and starts again.
pub struct Proc {
    pub name: String,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
    pub exit: Option<i32>,
    /// Extra environment (`RILL_LOG`, say).
    pub env: Vec<(String, String)>,
}

impl Proc {
    pub fn new(name: &str, dir: &Path, args: &[String]) -> Proc {
        Proc {
            name: name.to_owned(),
            args: args.to_vec(),
            dir: dir.to_owned(),
            child: None,
            starts: 0,
            kills: 0,
            exit: None,
            env: Vec::new(),
        }
    }

    /// Starts it; its stderr goes to `<dir>/<name>.<n>.log`.
    pub fn start(&mut self) {
        let log =
            std::fs::File::create(self.dir.join(format!("{}.{}.log", self.name, self.starts)))
                .expect("log file");
        let child = Command::new(rill_bin())
            .args(&self.args)
            .current_dir(&self.dir)
            .env("RILL_TEST_NODES", "1")
            .env_remove("RILL_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rill");
        self.child = Some(child);
        self.starts += 1;
        self.exit = None;
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }

    /// Whether it is running; records its exit code once it has ended.
    pub fn running(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait().expect("try_wait") {
            None => true,
            Some(st) => {
                self.exit = Some(st.code().unwrap_or(-1));
                self.child = None;
                false
            }
        }
    }

    /// The stderr of start `n`.
    pub fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.{n}.log", self.name))).unwrap_or_default()
    }

    /// The stderr of every start, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.starts)
            .map(|n| {
                let p = self.dir.join(format!("{}.{n}.log", self.name));
                format!(
                    "--- {} start {n} ---\n{}",
                    self.name,
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the bash script `setup`, which makes (or reuses) a Python
/// environment with packages from PyPI and prints its python's path, and
/// returns that path. A failing setup fails the test with its stderr.
pub fn python_env(setup: &Path) -> PathBuf {
    let made = Command::new("bash").arg(setup).output().expect("bash");
    assert!(
        made.status.success(),
        "{} failed: {}",
        setup.display(),
        String::from_utf8_lossy(&made.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&made.stdout).trim())
}

/// Runs the bash script `setup` (see [`python_env`]), then `python script
/// DIR` in a new temporary folder, and returns that folder with what the
/// script wrote there. A failing step fails the test with its stderr.
pub fn python_outputs(setup: &Path, script: &Path) -> tempfile::TempDir {
    let python = python_env(setup);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ran = Command::new(&python)
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python");
    assert!(
        ran.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&ran.stderr)
    );
    dir
}

/// A TCP link between two processes on loopback that a test can cut and
/// heal, as a pulled cable would: while cut, the connections it carries
/// stay open and everything sent on them is lost (no reset, no close: the
/// peers find out by their own timeouts), and connections made during the
/// cut hang the same way. Connections made after [`Link::heal`] carry
/// traffic again; those of before the cut stay dead, as a real peer's
/// would after its lease expired.
pub struct Link {
    port: u16,
    state: std::sync::Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    cut: std::sync::atomic::AtomicBool,
    cuts: std::sync::atomic::AtomicU64,
}

impl Link {
    /// A link to `127.0.0.1:target`; connect to [`Link::endpoint`].
    pub fn to(target: u16) -> Link {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the link");
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(LinkState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(a) = conn else { continue };
                let Ok(b) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                // a connection made during a cut is dead from the start
                let born = if st.cut.load(SeqCst) {
                    u64::MAX
                } else {
                    st.cuts.load(SeqCst)
                };
                for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)]
                {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if born != st.cuts.load(SeqCst) {
                                continue; // cut: lost on the way
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        if born == st.cuts.load(SeqCst) {
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        }
                    });
                }
            }
        });
        Link { port, state }
    }

    /// The endpoint to connect to (`tcp/127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("tcp/127.0.0.1:{}", self.port)
    }

    /// Cuts the link: nothing passes any more on the connections it has.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.cut.store(true, SeqCst);
        self.state.cuts.fetch_add(1, SeqCst);
    }

    /// Heals it: new connections carry traffic.
    pub fn heal(&self) {
        self.state
            .cut
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
