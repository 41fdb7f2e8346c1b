//! # rill-hil-tests
//!
//! Hardware-in-the-loop tests: real process kills and real CUDA devices
//! (network cuts between hosts are for the multi-host work, not built yet).
//! Each test checks for what it needs first and, where it is absent, skips
//! with a message saying what was missing, so `cargo test --workspace`
//! stays green on a CPU-only CI machine.
//!
//! - `tests/chaos.rs`: SIGKILL at random moments against a pipeline split
//!   over three `rill run --stages` processes, and against a one-process
//!   run; the sink must equal an undisturbed run's, record for record. A
//!   short version (~30 s) runs in CI; the long one is
//!   `cargo test --release -p rill-hil-tests -- --ignored chaos_long`.
//! - `tests/chaos_sources.rs`: every source that claims exactly-once
//!   (`Create`, `Generate`, `ReadFromJson`, `ReadFromCsv`) under SIGKILL,
//!   in one process and with only the source's process killed, under
//!   `exactly_once` and `at_least_once`; each asserts that its kills
//!   landed while the source was mid-stream.
//!
//! This library holds what the tests share: finding (or building) the
//! `rill` binary, free loopback ports, and a process driver.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
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
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_owned();
    let bin = profile_dir.join("rill");
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["build", "-q", "-p", "rill-cli"])
            .current_dir(root());
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("cargo build -p rill-cli");
        assert!(st.success(), "cannot build the rill binary");
    }
    bin
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
