//! `WriteToIceberg`: staged parts, written as data files at a checkpoint
//! and committed to the table once the stage's commit is durable.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, TimeUnit};
use iceberg::spec::{DataFile, DataFileFormat, FormatVersion};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, TableCreation, TableIdent};
use iceberg_catalog_sql::SqlCatalog;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rill_core::node::{BuildContext, ConfigError, Node, NodeConfig, NodeError, NodeKind};
use rill_core::state::KeyedState;
use rill_core::units::ByteSize;
use rill_core::{Fields, Value};
use rill_nodes::files::columnar::{self, ColType, Column, Columns};
use rill_nodes::files::parts::{PartOpts, PartSink, PartTarget, Roll, StagedChunks, check_schema};
use serde::Deserialize;

use crate::catalog::{self, CatalogProps};

const PENDING_KEY: &str = "iceberg/pending";
const RUN_KEY: &str = "iceberg/run";

fn rill() -> String {
    "rill".into()
}
fn default_part_records() -> u64 {
    1_000_000
}
fn default_part_bytes() -> ByteSize {
    ByteSize(128 << 20)
}
fn sixty() -> f64 {
    60.0
}

/// `WriteToIceberg` (Beam's names: `table`, `catalog_name`,
/// `catalog_properties`, `triggering_frequency_seconds`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToIceberg {
    /// `namespace.table`; created (and its namespace) when missing.
    pub table: String,
    #[serde(default = "rill")]
    pub catalog_name: String,
    #[serde(default)]
    pub catalog_properties: CatalogProps,
    /// Column types for a table the sink creates; by default inferred from
    /// the first records. A table that exists keeps its own, and gains an
    /// optional column for each new field.
    pub schema: Option<indexmap::IndexMap<String, String>>,
    /// A commit at the first stage commit after this many records...
    #[serde(default = "default_part_records")]
    pub part_records: u64,
    /// ...or this many staged bytes...
    #[serde(default = "default_part_bytes")]
    pub part_bytes: ByteSize,
    /// ...or this many seconds after its first record, and at the end.
    #[serde(default = "sixty")]
    pub triggering_frequency_seconds: f64,
}

impl WriteToIceberg {
    fn roll(&self) -> Roll {
        Roll {
            records: self.part_records,
            bytes: self.part_bytes.0,
            interval: std::time::Duration::from_secs_f64(
                self.triggering_frequency_seconds.max(0.0),
            ),
        }
    }
}

/// A name fit for a file: letters, digits, `.`, `_` and `-`.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl NodeConfig for WriteToIceberg {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), ConfigError> {
        catalog::table_ident(&self.table).map_err(|e| ConfigError::at("table", e))?;
        self.catalog_properties.validate()?;
        check_schema(&self.schema)?;
        if !self.triggering_frequency_seconds.is_finite()
            || self.triggering_frequency_seconds <= 0.0
        {
            return Err(ConfigError::at(
                "triggering_frequency_seconds",
                "must be more than 0",
            ));
        }
        if self.part_records == 0 {
            return Err(ConfigError::at("part_records", "must be at least 1"));
        }
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let at = self
            .catalog_properties
            .resolve(&self.catalog_name, &ctx.resolve(Path::new("")));
        let ident = catalog::table_ident(&self.table).map_err(NodeError::Failed)?;
        let cat = catalog::open(&at)?;
        let tag = file_safe(&format!("{}.{}", ctx.pipeline, ctx.stage));
        let run = match ctx.state.get_value(RUN_KEY)? {
            Some(Value::String(s)) => s.to_string(),
            // a new run: the id goes into the state with its first part
            _ => format!(
                "{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        };
        let target = IcebergParts {
            cat,
            ident,
            sink: format!("{}/{}", ctx.pipeline, ctx.stage),
            tag: tag.clone(),
            run,
            attempt: ctx.attempt,
            table: None,
            pending: None,
        };
        let opts = PartOpts {
            staging_dir: at.warehouse.join(".rill-staging"),
            staging_stem: file_safe(&format!("{}-{tag}", self.table)),
            schema: self.schema.clone(),
            roll: self.roll(),
        };
        Ok(Node::Sink(Box::new(PartSink::build(ctx, &opts, target)?)))
    }
}

/// Data files written at a checkpoint, to be committed.
#[derive(Clone)]
struct Pending {
    seq: u64,
    files: Vec<DataFile>,
}

struct IcebergParts {
    cat: Arc<SqlCatalog>,
    ident: TableIdent,
    /// `pipeline/stage`: whose snapshots are whose.
    sink: String,
    /// The stage, fit for file names.
    tag: String,
    /// This run of the pipeline (kept in the state across restarts).
    run: String,
    attempt: u32,
    table: Option<Table>,
    pending: Option<Pending>,
}

fn ice(what: &str) -> impl Fn(iceberg::Error) -> NodeError + '_ {
    move |e| NodeError::failed(format!("{what}: {e}"))
}

impl IcebergParts {
    fn load(&mut self) -> Result<(), NodeError> {
        let (cat, ident) = (self.cat.clone(), self.ident.clone());
        self.table = crate::rt::block(async move {
            if cat.table_exists(&ident).await? {
                Ok(Some(cat.load_table(&ident).await?))
            } else {
                Ok::<_, iceberg::Error>(None)
            }
        })
        .map_err(ice("cannot load the table"))?;
        Ok(())
    }

    /// The last part this run committed to the table.
    fn last_committed(&self) -> Option<u64> {
        let md = self.table.as_ref()?.metadata();
        let mut s = md.current_snapshot().cloned();
        while let Some(snap) = s {
            let p = &snap.summary().additional_properties;
            if p.get("rill.sink") == Some(&self.sink) && p.get("rill.run") == Some(&self.run) {
                return p.get("rill.part").and_then(|v| v.parse().ok());
            }
            s = snap
                .parent_snapshot_id()
                .and_then(|id| md.snapshot_by_id(id).cloned());
        }
        None
    }

    /// Commits the pending data files (if the table does not have them).
    fn commit(&mut self, p: Pending) -> Result<(), NodeError> {
        self.load()?;
        if self.last_committed().is_some_and(|s| s >= p.seq) {
            return Ok(());
        }
        let table = self
            .table
            .clone()
            .ok_or_else(|| NodeError::failed(format!("table {} is gone", self.ident)))?;
        let props = HashMap::from([
            ("rill.sink".to_owned(), self.sink.clone()),
            ("rill.run".to_owned(), self.run.clone()),
            ("rill.part".to_owned(), p.seq.to_string()),
        ]);
        let cat = self.cat.clone();
        let files = p.files.clone();
        let table = crate::rt::block(async move {
            let tx = Transaction::new(&table);
            let tx = tx
                .fast_append()
                .with_check_duplicate(false)
                .add_data_files(files)
                .set_snapshot_properties(props)
                .apply(tx)?;
            tx.commit(cat.as_ref()).await
        })
        .map_err(ice("cannot commit to the table"))?;
        self.table = Some(table);
        // a commit the catalog lost (SQLite's COMMIT failing unseen) must
        // not pass for one
        self.load()?;
        if self.last_committed() != Some(p.seq) {
            return Err(NodeError::failed(format!(
                "the commit of part {} to {} did not land (another writer on the table?)",
                p.seq, self.ident
            )));
        }
        self.write_version_hint()?;
        tracing::debug!(table = %self.ident, part = p.seq, "committed");
        Ok(())
    }

    /// `metadata/version-hint.text`, for readers that take a table's folder
    /// (DuckDB's `iceberg_scan`): the current metadata file's name.
    fn write_version_hint(&self) -> Result<(), NodeError> {
        let Some(loc) = self.table.as_ref().and_then(|t| t.metadata_location()) else {
            return Ok(());
        };
        let loc = Path::new(loc.strip_prefix("file://").unwrap_or(loc));
        let (Some(dir), Some(name)) = (loc.parent(), loc.file_name()) else {
            return Ok(());
        };
        let version = name
            .to_string_lossy()
            .trim_end_matches(".metadata.json")
            .to_owned();
        let tmp = dir.join(".version-hint.text.tmp");
        std::fs::write(&tmp, version.as_bytes())
            .and_then(|_| std::fs::rename(&tmp, dir.join("version-hint.text")))
            .map_err(|e| NodeError::io(dir, e))
    }

    fn data_dir(&self) -> Option<std::path::PathBuf> {
        let loc = self.table.as_ref()?.metadata().location().to_owned();
        Some(Path::new(loc.strip_prefix("file://").unwrap_or(&loc)).join("data"))
    }

    /// Deletes data files this stage wrote that no snapshot names: of
    /// this run, those of a part after the last committed one, or of the
    /// last one by another attempt than the one that committed it; and
    /// those of a run that never committed (killed before its first
    /// commit). Files of other writers, and of runs that committed, are
    /// left alone: older snapshots may name them.
    fn sweep(&self, last: Option<(u64, u32)>) -> Result<(), NodeError> {
        let (Some(table), Some(dir)) = (self.table.as_ref(), self.data_dir()) else {
            return Ok(());
        };
        let mut runs: HashSet<String> = HashSet::new();
        for snap in table.metadata().snapshots() {
            let p = &snap.summary().additional_properties;
            if p.get("rill.sink") == Some(&self.sink)
                && let Some(r) = p.get("rill.run")
            {
                runs.insert(r.clone());
            }
        }
        let prefix = format!("rill-{}-", self.tag);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut removed = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".parquet"))
            else {
                continue;
            };
            // {part:06}-a{attempt}-{count:05}-{run}
            let f: Vec<&str> = rest.split('-').collect();
            let [part, attempt, _, run] = f[..] else {
                continue;
            };
            let (Ok(part), Some(Ok(attempt))) = (
                part.parse::<u64>(),
                attempt.strip_prefix('a').map(str::parse::<u32>),
            ) else {
                continue;
            };
            let orphan = if run == self.run {
                match last {
                    Some((c, a)) => part > c || (part == c && attempt != a),
                    None => true,
                }
            } else {
                !runs.contains(run)
            };
            if orphan {
                let p = e.path();
                std::fs::remove_file(&p).map_err(|x| NodeError::io(&p, x))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(table = %self.ident, files = removed, "deleted data files of killed attempts");
        }
        Ok(())
    }

    /// Creates the table from the columns, or adds the columns it lacks.
    fn fit_table(&mut self, cols: &Columns) -> Result<(), NodeError> {
        if self.table.is_none() {
            let schema = catalog::schema_of(cols).map_err(NodeError::Failed)?;
            let (cat, ident) = (self.cat.clone(), self.ident.clone());
            crate::rt::block(async move {
                catalog::ensure_namespace(&cat, ident.namespace()).await?;
                if !cat.table_exists(&ident).await? {
                    let creation = TableCreation::builder()
                        .name(ident.name().to_owned())
                        .schema(schema)
                        .build();
                    cat.create_table(ident.namespace(), creation).await?;
                }
                Ok::<_, iceberg::Error>(())
            })
            .map_err(ice("cannot create the table"))?;
            self.load()?;
        }
        let table = self.table.clone().expect("loaded");
        let have = table.metadata().current_schema().clone();
        let missing: Vec<&Column> = cols
            .cols
            .iter()
            .filter(|c| have.field_by_name(c.name.as_str()).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let adds: Vec<AddColumn> = missing
            .iter()
            .map(|c| {
                AddColumn::optional(
                    c.name.as_str(),
                    catalog::iceberg_type(c.ty.as_ref().unwrap_or(&ColType::Json)),
                )
            })
            .collect();
        let names: Vec<String> = missing.iter().map(|c| c.name.to_string()).collect();
        let cat = self.cat.clone();
        let table = crate::rt::block(async move {
            let tx = Transaction::new(&table);
            let mut action = tx.update_schema();
            for a in adds {
                action = action.add_column(a);
            }
            let tx = action.apply(tx)?;
            tx.commit(cat.as_ref()).await
        })
        .map_err(ice("cannot add columns to the table"))?;
        tracing::info!(table = %self.ident, columns = ?names, "added columns to the table");
        self.table = Some(table);
        Ok(())
    }
}

/// `ms` (rill's event times) as a timestamp in `unit`.
fn scale(a: &ArrayRef, unit: &TimeUnit) -> ArrayRef {
    let k = match unit {
        TimeUnit::Second => {
            return Arc::new(
                a.as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .unary::<_, arrow::datatypes::Int64Type>(|v| v.div_euclid(1000)),
            );
        }
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 1000,
        TimeUnit::Nanosecond => 1_000_000,
    };
    Arc::new(
        a.as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64")
            .unary::<_, arrow::datatypes::Int64Type>(|v| v.saturating_mul(k)),
    )
}

/// Records as a batch of the table's Arrow schema.
fn batch_for(
    schema: &arrow::datatypes::SchemaRef,
    cols: &Columns,
    records: &[rill_core::Record],
) -> Result<RecordBatch, String> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let ty = cols
            .cols
            .iter()
            .find(|c| c.name == f.name().as_str())
            .and_then(|c| c.ty.clone())
            .unwrap_or(ColType::Json);
        let one = Columns {
            cols: vec![Column {
                name: f.name().as_str().into(),
                ty: Some(ty),
            }],
            declared: true,
            from_table: true,
        };
        let a = columnar::to_batch(&one, records)?.column(0).clone();
        let a = match f.data_type() {
            t if t == a.data_type() => a,
            // a type rill does not write: only nulls reach it
            t if *a.data_type() == DataType::Null => arrow::array::new_null_array(t, a.len()),
            DataType::Timestamp(unit, _) if *a.data_type() == DataType::Int64 => cast_with_options(
                &scale(&a, unit),
                f.data_type(),
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|e| format!("column `{}`: {e}", f.name()))?,
            t => cast_with_options(
                &a,
                t,
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|e| format!("column `{}` ({t}): {e}", f.name()))?,
        };
        arrays.push(a);
    }
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())
}

/// Data files as bytes for the state (Iceberg's own Avro encoding).
fn files_to_bytes(table: &Table, files: &[DataFile]) -> Result<Vec<u8>, NodeError> {
    let mut buf = Vec::new();
    iceberg::spec::write_data_files_to_avro(
        &mut buf,
        files.iter().cloned(),
        table.metadata().default_partition_type(),
        FormatVersion::V2,
    )
    .map_err(ice("cannot encode the data files"))?;
    Ok(buf)
}

fn files_from_bytes(table: &Table, bytes: &[u8]) -> Result<Vec<DataFile>, NodeError> {
    let md = table.metadata();
    iceberg::spec::read_data_files_from_avro(
        &mut &bytes[..],
        md.current_schema(),
        md.default_partition_spec_id(),
        md.default_partition_type(),
        FormatVersion::V2,
    )
    .map_err(ice("cannot decode the data files"))
}

impl PartTarget for IcebergParts {
    fn recover(
        &mut self,
        committed: Option<u64>,
        ctx: &BuildContext<'_>,
    ) -> Result<u64, NodeError> {
        self.load()?;
        if let Some(t) = &self.table {
            let spec = t.metadata().default_partition_spec();
            if !spec.fields().is_empty() {
                return Err(NodeError::BadInput(format!(
                    "table {} is partitioned ({} partition fields): WriteToIceberg writes unpartitioned tables only",
                    self.ident,
                    spec.fields().len()
                )));
            }
        }
        // written and named in the stage's last commit, and maybe not in
        // the table yet
        let mut last = None;
        if let Some(Value::Map(m)) = ctx.state.get_value(PENDING_KEY)? {
            let (seq, attempt) = match (m.get("part"), m.get("attempt")) {
                (Some(Value::Int(i)), Some(Value::Int(a))) => (*i as u64, *a as u32),
                _ => return Err(NodeError::failed("the pending Iceberg commit is malformed")),
            };
            last = Some((seq, attempt));
            if self.last_committed().is_none_or(|s| s < seq) {
                let Some(table) = &self.table else {
                    return Err(NodeError::failed(format!(
                        "table {} is gone, with part {seq} of this sink not committed to it",
                        self.ident
                    )));
                };
                let files = match m.get("files") {
                    Some(Value::Bytes(b)) => files_from_bytes(table, b)?,
                    _ => return Err(NodeError::failed("the pending Iceberg commit is malformed")),
                };
                tracing::info!(table = %self.ident, part = seq, "committing a part its stage committed before it stopped");
                self.commit(Pending { seq, files })?;
            }
        }
        self.sweep(last)?;
        Ok(committed.unwrap_or(0))
    }

    fn write_part(
        &mut self,
        seq: u64,
        cols: &Columns,
        chunks: &mut StagedChunks,
        state: &KeyedState,
    ) -> Result<(), NodeError> {
        self.fit_table(cols)?;
        let table = self.table.clone().expect("fitted");
        let schema = table.metadata().current_schema().clone();
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(&schema).map_err(ice("the table's schema"))?,
        );
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let location =
            DefaultLocationGenerator::new(table.metadata()).map_err(ice("the table's location"))?;
        // unique per stage, part, attempt and run: a file is never written
        // over (the writer truncates what it opens)
        let names = DefaultFileNameGenerator::new(
            format!("rill-{}-{seq:06}-a{}", self.tag, self.attempt),
            Some(self.run.clone()),
            DataFileFormat::Parquet,
        );
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            ParquetWriterBuilder::new(props, schema),
            table.file_io().clone(),
            location,
            names,
        );
        // a chunk at a time: the staged part is never all in memory
        let mut writer =
            crate::rt::block(async move { DataFileWriterBuilder::new(rolling).build(None).await })
                .map_err(ice("cannot start a data file"))?;
        loop {
            let chunk = chunks.next_chunk()?;
            if chunk.is_empty() {
                break;
            }
            let batch = batch_for(&arrow_schema, cols, &chunk)
                .map_err(|e| NodeError::failed(format!("{}: {e}", self.ident)))?;
            let (w, r) = crate::rt::block(async move {
                let r = writer.write(batch).await;
                (writer, r)
            });
            r.map_err(ice("cannot write a data file"))?;
            writer = w;
        }
        let files = crate::rt::block(async move { writer.close().await })
            .map_err(ice("cannot write a data file"))?;
        let mut m = Fields::default();
        m.insert("part".into(), Value::Int(seq as i64));
        m.insert("attempt".into(), Value::Int(i64::from(self.attempt)));
        m.insert(
            "files".into(),
            Value::Bytes(files_to_bytes(&table, &files)?),
        );
        state.put_value(PENDING_KEY, &Value::Map(m))?;
        state.put_value(RUN_KEY, &Value::String(self.run.as_str().into()))?;
        self.pending = Some(Pending { seq, files });
        Ok(())
    }

    fn committed(&mut self, _state: &KeyedState) -> Result<(), NodeError> {
        if let Some(p) = self.pending.take()
            && let Err(e) = self.commit(p.clone())
        {
            self.pending = Some(p);
            return Err(e);
        }
        Ok(())
    }

    fn evolves(&self) -> bool {
        true
    }

    fn columns(&self) -> Option<Columns> {
        self.table
            .as_ref()
            .map(|t| catalog::columns_of(t.metadata().current_schema()))
    }
}
