//! # rill-core
//!
//! The parts of rill every other part builds on, with no dependency on Zenoh,
//! sled or Burn:
//!
//! - [`value`]: the record model ([`Record`], [`Value`], [`Tensor`]);
//! - [`codec`]: the binary encoding between stages; [`json`]: the JSON mapping;
//! - [`node`]: the traits a node implements (sources, transforms, sinks);
//! - [`registry`]: YAML `type` names to node factories;
//! - [`spec`]: the pipeline YAML, parsed and validated with positions;
//! - [`testkit`]: runs a node on scripted inputs, with no transport at all.
//!
//! ```
//! use rill_core::{record, Value};
//! let r = record! {"temp" => 21.5, "device" => "a"};
//! assert_eq!(r.get("temp"), Some(&Value::Float(21.5)));
//! ```

pub mod codec;
pub mod fields;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod perms;
pub mod value;
pub mod yaml;

pub use node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, SourceStatus,
};
pub use value::{DType, Fields, Name, Record, Tensor, TensorData, Text, Value};
pub mod node;
pub mod registry;
pub mod serve;
pub mod spec;
pub mod state;
pub mod testkit;
pub mod units;
pub mod window;
pub mod wire;
