//! `LogForTesting`: prints each record as one JSON object on its own line on
//! standard output, and passes it on unchanged (as Beam's does).

use std::io::Write;

use rill_core::Record;
use rill_core::json::record_to_json_line;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Transform,
};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogForTesting {
    /// Beam's `level` (ERROR, INFO, DEBUG); the record is printed at any level.
    pub level: Option<String>,
    /// Printed before each line.
    #[serde(default)]
    pub prefix: String,
}

impl NodeConfig for LogForTesting {
    fn kind(&self) -> NodeKind {
        NodeKind::Transform
    }
    fn validate(&self) -> Result<(), ConfigError> {
        match self
            .level
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("ERROR" | "WARNING" | "WARN" | "INFO" | "DEBUG") => Ok(()),
            Some(other) => Err(ConfigError::at(
                "level",
                format!("unknown level `{other}`: expected ERROR, WARNING, INFO or DEBUG"),
            )),
        }
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        Ok(Node::Transform(Box::new(LogNode {
            prefix: self.prefix.clone(),
        })))
    }
}

struct LogNode {
    prefix: String,
}

impl Transform for LogNode {
    fn process(&mut self, batch: Vec<Record>, out: &mut Emitter) -> Result<(), NodeError> {
        let mut text = String::new();
        for r in &batch {
            text.push_str(&self.prefix);
            text.push_str(&record_to_json_line(r));
            text.push('\n');
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        // a closed stdout (e.g. `| head`) must not fail the pipeline
        let _ = lock.write_all(text.as_bytes()).and_then(|_| lock.flush());
        for r in batch {
            out.emit(r);
        }
        Ok(())
    }
}
