//! What a machine offers (cores, memory, CUDA devices), for the resource
//! pass: this machine's, or one described in a file (`rill machine`).

use serde::Deserialize;

/// What the machine offers, for checking stage budgets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Machine {
    pub cpus: usize,
    pub memory: u64,
    /// Memory of each CUDA device rill can use (empty without `cuda`).
    pub gpus: Vec<u64>,
    /// The file the machine was described in (`rill validate --machine`);
    /// `None` for this machine.
    pub described: Option<String>,
    /// Where a pipeline spans hosts (`placement`): the machine of each
    /// host that has its own (`rill validate --machine NAME=FILE`); the
    /// other hosts' stages are checked against this one.
    pub hosts: std::collections::BTreeMap<String, Machine>,
    /// Check only the stages placed on this host (`rill run --host NAME`
    /// checks its own against the machine it runs on).
    pub only_host: Option<String>,
}

/// A machine as `rill machine` prints it and `--machine` reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineFile {
    /// CPU cores.
    pub cpus: usize,
    /// Memory, in bytes or as a size (`128GiB`).
    pub memory: Bytes,
    /// The CUDA devices, `cuda:0` first.
    #[serde(default)]
    pub gpus: Vec<GpuFile>,
}

/// One CUDA device of a [`MachineFile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuFile {
    #[serde(default)]
    pub name: Option<String>,
    /// Memory, in bytes or as a size (`80GiB`).
    pub memory: Bytes,
}

/// Bytes as a number, or a size (`80GiB`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    Count(u64),
    Size(String),
}

impl Bytes {
    fn get(&self) -> Result<u64, String> {
        match self {
            Bytes::Count(n) => Ok(*n),
            Bytes::Size(s) => crate::units::parse_size(s),
        }
    }
}

impl Machine {
    /// How messages name the machine.
    pub(super) fn what(&self) -> String {
        match &self.described {
            None => "this machine".into(),
            Some(f) => format!("the machine of {f}"),
        }
    }

    /// Reads a machine described as JSON (what `rill machine` prints).
    pub fn from_json(text: &str, file: &str) -> Result<Machine, String> {
        let m: MachineFile = serde_json::from_str(text)
            .map_err(|e| format!("{file}: not a machine description: {e}"))?;
        if m.cpus == 0 {
            return Err(format!("{file}: `cpus` must be at least 1"));
        }
        let at = |what: &str, e: String| format!("{file}: `{what}`: {e}");
        Ok(Machine {
            cpus: m.cpus,
            memory: m.memory.get().map_err(|e| at("memory", e))?,
            gpus: m
                .gpus
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    g.memory
                        .get()
                        .map_err(|e| at(&format!("gpus[{i}].memory"), e))
                })
                .collect::<Result<_, _>>()?,
            described: Some(file.to_owned()),
            ..Machine::default()
        })
    }

    /// Reads the CPU count and total memory of this machine.
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kb| kb * 1024);
        Machine {
            cpus,
            memory,
            gpus: Vec::new(),
            described: None,
            ..Machine::default()
        }
    }
}
