//! `ReadFromIceberg`: one snapshot of a table (the current one when the
//! pipeline first starts, kept across restarts), record by record.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError};

use arrow::array::RecordBatch;
use futures::StreamExt;
use iceberg::Catalog;
use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Source, SourceStatus,
};
use rill_core::state::KeyedState;
use rill_core::{Fields, Record, Value};
use rill_nodes::files::columnar;
use serde::Deserialize;

use crate::catalog::{self, CatalogProps};

const SNAPSHOT_KEY: &str = "iceberg/snapshot";

fn rill() -> String {
    "rill".into()
}

/// `ReadFromIceberg`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromIceberg {
    /// `namespace.table`.
    pub table: String,
    #[serde(default = "rill")]
    pub catalog_name: String,
    #[serde(default)]
    pub catalog_properties: CatalogProps,
    /// The snapshot to read (default: the table's current one).
    pub snapshot_id: Option<i64>,
    /// Only these columns.
    pub columns: Option<Vec<String>>,
    /// Field whose value becomes the record key.
    pub key: Option<String>,
    /// Field holding the event time (ms since the epoch, or a timestamp).
    pub event_time: Option<String>,
}

impl NodeConfig for ReadFromIceberg {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        catalog::table_ident(&self.table).map_err(|e| ConfigError::at("table", e))?;
        self.catalog_properties.validate()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let at = self
            .catalog_properties
            .resolve(&self.catalog_name, &ctx.resolve(Path::new("")));
        let ident = catalog::table_ident(&self.table).map_err(NodeError::Failed)?;
        let cat = catalog::open(&at)?;
        let id2 = ident.clone();
        let table = crate::rt::block(async move {
            if cat.table_exists(&id2).await? {
                cat.load_table(&id2).await.map(Some)
            } else {
                Ok(None)
            }
        })
        .map_err(|e| NodeError::failed(format!("cannot load {ident}: {e}")))?
        .ok_or_else(|| {
            NodeError::BadInput(format!(
                "there is no table {ident} in the catalog {}",
                at.db.display()
            ))
        })?;
        let pinned = match ctx.state.get_value(SNAPSHOT_KEY)? {
            Some(Value::Int(i)) => Some(i),
            _ => None,
        };
        let snapshot = pinned
            .or(self.snapshot_id)
            .or_else(|| table.metadata().current_snapshot().map(|s| s.snapshot_id()));
        if let Some(id) = snapshot
            && table.metadata().snapshot_by_id(id).is_none()
        {
            return Err(NodeError::BadInput(format!(
                "table {ident} has no snapshot {id} (expired?)"
            )));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RecordBatch, String>>(2);
        if let Some(id) = snapshot {
            let columns = self.columns.clone();
            crate::rt::spawn(async move {
                let scan = async {
                    let mut b = table
                        .scan()
                        .snapshot_id(id)
                        .with_concurrency_limit(1)
                        .with_batch_size(Some(4096));
                    if let Some(c) = columns {
                        b = b.select(c);
                    }
                    b.build()?.to_arrow().await
                };
                let mut stream = match scan.await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Some(b) = stream.next().await {
                    let b = b.map_err(|e| e.to_string());
                    // bounded: waits while the source is behind
                    if tokio::task::block_in_place(|| tx.send(b)).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Node::Source(Box::new(IcebergSource {
            name: ident.to_string(),
            rx,
            pending: VecDeque::new(),
            skip: 0,
            state: ctx.state.clone(),
            snapshot,
            saved: pinned.is_some(),
            key: self.key.clone(),
            event_time: self.event_time.clone(),
        })))
    }
}

struct IcebergSource {
    name: String,
    rx: Receiver<Result<RecordBatch, String>>,
    pending: VecDeque<Fields>,
    /// Records to pass over (made before a restart).
    skip: u64,
    state: KeyedState,
    snapshot: Option<i64>,
    saved: bool,
    key: Option<String>,
    event_time: Option<String>,
}

impl IcebergSource {
    fn stamp(&self, r: &mut Record) -> Result<(), String> {
        if let Some(k) = &self.key {
            r.key = match r.fields.get(k.as_str()) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => return Err(format!("key field `{k}` is missing")),
                Some(other) => Some(other.to_string().into()),
            };
        }
        if let Some(t) = &self.event_time {
            r.event_time = match r.fields.get(t.as_str()) {
                Some(Value::Int(i)) => *i,
                other => {
                    return Err(format!(
                        "event_time field `{t}` must be a timestamp or milliseconds, found {other:?}"
                    ));
                }
            };
        }
        Ok(())
    }
}

impl Source for IcebergSource {
    fn seek(&mut self, made: u64) -> bool {
        // the snapshot is read again from its start, and what was made
        // before is passed over here
        self.skip = made;
        true
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        let mut n = 0;
        while n < max {
            let Some(f) = self.pending.pop_front() else {
                match self.rx.try_recv() {
                    Ok(Ok(b)) => {
                        self.pending.extend(columnar::rows(&b));
                        continue;
                    }
                    Ok(Err(e)) => {
                        return Err(NodeError::failed(format!("reading {}: {e}", self.name)));
                    }
                    Err(TryRecvError::Empty) => {
                        return Ok(if n > 0 {
                            SourceStatus::More
                        } else {
                            SourceStatus::Wait(std::time::Duration::from_millis(5))
                        });
                    }
                    Err(TryRecvError::Disconnected) => {
                        return Ok(if n > 0 {
                            SourceStatus::More
                        } else {
                            SourceStatus::Done
                        });
                    }
                }
            };
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            n += 1;
            let mut r = Record::new(f);
            match self.stamp(&mut r) {
                Ok(()) => out.emit(r),
                Err(e) => out.fail(r, format!("{}: {e}", self.name)),
            }
        }
        Ok(SourceStatus::More)
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        if !self.saved
            && let Some(id) = self.snapshot
        {
            self.state.put_value(SNAPSHOT_KEY, &Value::Int(id))?;
            self.saved = true;
        }
        Ok(())
    }
}
