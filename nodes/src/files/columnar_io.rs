//! Parquet and Avro: `ReadFromParquet`, `WriteToParquet`, `ReadFromAvro`,
//! `WriteToAvro`.
//!
//! The sinks write part files ([`super::parts`]); the sources read files
//! or globs ([`super::set`]) record by record and resume by record count
//! within a file. A file that cannot be read (not Parquet, truncated, a
//! corrupt block) is a dead letter naming it and the record where reading
//! stopped, and the source goes on with the next file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rill_core::node::{BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind};
use rill_core::units::{ByteSize, Dur};
use rill_core::{Fields, Name, Record, Value};
use serde::Deserialize;

use super::columnar::{self, ColType, Columns, TYPE_KEY};
use super::growing::Growing;
use super::parts::{FileParts, PartFormat, PartOpts, PartSink, PartWriter, Roll, check_schema};
use super::position::FilePos;
use super::readers::{FileReader, Stamp, Step};
use super::set::{FileOpts, FileSource, Opener};
use super::{Rows, bad_line};

fn default_part_records() -> u64 {
    1_000_000
}
fn default_part_bytes() -> ByteSize {
    ByteSize(128 << 20)
}
fn default_part_interval() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn default_rg_records() -> usize {
    131_072
}
fn default_rg_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn zstd() -> String {
    "zstd".into()
}
fn deflate() -> String {
    "deflate".into()
}

/// `WriteToParquet`: part files of ZSTD-compressed Parquet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToParquet {
    /// `out/events.parquet` writes `out/events-000001.parquet`, ...
    pub path: PathBuf,
    /// Column types (`{id: int64, name: string, v: list<float64>}`); by
    /// default inferred from the first records.
    pub schema: Option<indexmap::IndexMap<String, String>>,
    /// A part is written at the first commit after this many records...
    #[serde(default = "default_part_records")]
    pub part_records: u64,
    /// ...or this many staged bytes...
    #[serde(default = "default_part_bytes")]
    pub part_bytes: ByteSize,
    /// ...or this long after its first record, and when the input ends.
    #[serde(default = "default_part_interval")]
    pub part_interval: Dur,
    /// Row groups end at this many records or bytes.
    #[serde(default = "default_rg_records")]
    pub row_group_records: usize,
    #[serde(default = "default_rg_bytes")]
    pub row_group_bytes: ByteSize,
    /// `zstd` (default), `snappy` or `none`.
    #[serde(default = "zstd")]
    pub compression: String,
}

fn parquet_compression(s: &str) -> Result<Compression, String> {
    match s {
        "zstd" => Ok(Compression::ZSTD(ZstdLevel::default())),
        "snappy" => Ok(Compression::SNAPPY),
        "none" | "uncompressed" => Ok(Compression::UNCOMPRESSED),
        other => Err(format!(
            "unknown compression `{other}` (zstd, snappy, none)"
        )),
    }
}

impl WriteToParquet {
    fn roll(&self) -> Roll {
        Roll {
            records: self.part_records,
            bytes: self.part_bytes.0,
            interval: self.part_interval.0,
        }
    }
}

/// A part sink's `path` names its format, or no extension at all (the
/// format's is added): `out/ev.json` for Parquet parts would mislead.
fn check_ext(path: &Path, ext: &str) -> Result<(), ConfigError> {
    match path.extension().and_then(|e| e.to_str()) {
        None => Ok(()),
        Some(e) if e.eq_ignore_ascii_case(ext) => Ok(()),
        Some(e) => Err(ConfigError::at(
            "path",
            format!(
                "the parts are .{ext} files: `path` ends in .{e} (write `{}.{ext}`, or leave the extension out)",
                path.with_extension("").display()
            ),
        )),
    }
}

/// A part-file sink for `path` in `format`.
fn file_sink<F: PartFormat + 'static>(
    ctx: &BuildContext<'_>,
    path: &Path,
    schema: &Option<indexmap::IndexMap<String, String>>,
    roll: Roll,
    format: F,
) -> Result<Node, NodeError> {
    let (target, dir, stem) = FileParts::new(ctx, path, format);
    let opts = PartOpts {
        staging_dir: dir,
        staging_stem: stem,
        schema: schema.clone(),
        roll,
    };
    Ok(Node::Sink(Box::new(PartSink::build(ctx, &opts, target)?)))
}

impl NodeConfig for WriteToParquet {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), ConfigError> {
        super::check_path(&self.path)?;
        check_schema(&self.schema)?;
        self.roll().validate()?;
        parquet_compression(&self.compression).map_err(|e| ConfigError::at("compression", e))?;
        if self.row_group_records == 0 {
            return Err(ConfigError::at("row_group_records", "must be at least 1"));
        }
        if self.row_group_bytes.0 == 0 {
            return Err(ConfigError::at("row_group_bytes", "must be more than 0"));
        }
        check_ext(&self.path, "parquet")?;
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let format = ParquetFormat {
            compression: parquet_compression(&self.compression).map_err(NodeError::Failed)?,
            row_group_records: self.row_group_records,
            row_group_bytes: self.row_group_bytes.0 as usize,
        };
        file_sink(ctx, &self.path, &self.schema, self.roll(), format)
    }
}

struct ParquetFormat {
    compression: Compression,
    row_group_records: usize,
    row_group_bytes: usize,
}

impl PartFormat for ParquetFormat {
    fn ext(&self) -> &'static str {
        "parquet"
    }
    fn begin(&self, cols: &Columns, file: File) -> Result<Box<dyn PartWriter>, String> {
        let props = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_records))
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            .set_created_by(format!("rill {}", env!("CARGO_PKG_VERSION")))
            .build();
        let w = ArrowWriter::try_new(file, Arc::new(cols.arrow_schema()), Some(props))
            .map_err(|e| e.to_string())?;
        Ok(Box::new(ParquetPart {
            w,
            cols: cols.clone(),
        }))
    }
}

struct ParquetPart {
    w: ArrowWriter<File>,
    cols: Columns,
}

impl PartWriter for ParquetPart {
    fn write(&mut self, records: &[Record]) -> Result<(), String> {
        let batch = columnar::to_batch(&self.cols, records)?;
        self.w.write(&batch).map_err(|e| e.to_string())
    }
    fn finish(self: Box<Self>) -> Result<File, String> {
        self.w.into_inner().map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------

/// The options of the Parquet and Avro sources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadColumnar {
    /// A file or a glob (`out/events-*.parquet`).
    pub path: PathBuf,
    pub key: Option<String>,
    pub event_time: Option<String>,
    pub filename_column: Option<String>,
    /// Look for new files matching the glob this often.
    pub watch: Option<Dur>,
    /// Only these columns (Parquet reads only them).
    pub columns: Option<Vec<String>>,
}

impl ReadColumnar {
    fn opts(&self) -> FileOpts {
        FileOpts {
            path: self.path.clone(),
            key: self.key.clone(),
            event_time: self.event_time.clone(),
            filename_column: self.filename_column.clone(),
            follow: false,
            watch: self.watch.map(|d| d.0),
        }
    }
}

/// `ReadFromParquet`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ReadFromParquet(pub ReadColumnar);

/// `ReadFromAvro`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ReadFromAvro(pub ReadColumnar);

impl NodeConfig for ReadFromParquet {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.0.opts().validate()
    }
    fn unbounded(&self) -> bool {
        self.0.opts().unbounded()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let columns = self.0.columns.clone();
        let open: Opener = Box::new(move |_: &Path, name: &str, input: Growing, stamp: Stamp| {
            Ok(Box::new(RowReader::new(
                name,
                input,
                stamp,
                Kind::Parquet(columns.clone()),
            )) as Box<dyn FileReader>)
        });
        Ok(Node::Source(Box::new(FileSource::build(
            ctx,
            &self.0.opts(),
            Rows::Lines,
            open,
        )?)))
    }
}

impl NodeConfig for ReadFromAvro {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.0.opts().validate()
    }
    fn unbounded(&self) -> bool {
        self.0.opts().unbounded()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let columns = self.0.columns.clone();
        let open: Opener = Box::new(move |_: &Path, name: &str, input: Growing, stamp: Stamp| {
            Ok(Box::new(RowReader::new(
                name,
                input,
                stamp,
                Kind::Avro(columns.clone()),
            )) as Box<dyn FileReader>)
        });
        Ok(Node::Source(Box::new(FileSource::build(
            ctx,
            &self.0.opts(),
            Rows::Lines,
            open,
        )?)))
    }
}

enum Kind {
    Parquet(Option<Vec<String>>),
    Avro(Option<Vec<String>>),
}

/// Where a row reader's records come from once open.
enum Opened {
    Parquet(ParquetRecordBatchReader),
    Avro(Box<apache_avro::Reader<'static, BufReader<File>>>),
}

/// Reads a whole-file format record by record.
struct RowReader {
    name: String,
    input: Growing,
    stamp: Stamp,
    kind: Kind,
    rows: Option<Opened>,
    /// Decoded and not yet made.
    pending: VecDeque<Fields>,
    /// Records of this file made so far.
    made: u64,
    /// Records to pass over at the start (a resumed file).
    skip: u64,
    /// Set once the file is read to its end (or could not be read on).
    ended: bool,
}

impl RowReader {
    fn new(name: &str, input: Growing, stamp: Stamp, kind: Kind) -> RowReader {
        RowReader {
            name: name.to_owned(),
            input,
            stamp,
            kind,
            rows: None,
            pending: VecDeque::new(),
            made: 0,
            skip: 0,
            ended: false,
        }
    }

    fn open(&mut self) -> Result<(), String> {
        let file = self.input.file().try_clone().map_err(|e| e.to_string())?;
        self.rows = Some(match &self.kind {
            Kind::Parquet(cols) => {
                let mut b =
                    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
                if let Some(cols) = cols {
                    let schema = b.parquet_schema();
                    let mut idx = Vec::new();
                    for c in cols {
                        let i = (0..schema.num_columns())
                            .filter(|i| {
                                let path = schema.column(*i).path().parts().to_vec();
                                path.first().is_some_and(|p| p == c)
                            })
                            .collect::<Vec<_>>();
                        if i.is_empty() {
                            return Err(format!("it has no column `{c}`"));
                        }
                        idx.extend(i);
                    }
                    let mask = parquet::arrow::ProjectionMask::leaves(schema, idx);
                    b = b.with_projection(mask);
                }
                let r = b
                    .with_batch_size(1024)
                    .with_offset(self.skip as usize)
                    .build()
                    .map_err(|e| e.to_string())?;
                self.made = self.skip;
                Opened::Parquet(r)
            }
            Kind::Avro(_) => {
                let r = apache_avro::Reader::new(BufReader::with_capacity(1 << 16, file))
                    .map_err(|e| e.to_string())?;
                Opened::Avro(Box::new(r))
            }
        });
        Ok(())
    }

    /// Decodes the next records into `pending`; false at the end.
    fn fill(&mut self) -> Result<bool, String> {
        match self.rows.as_mut().expect("open") {
            Opened::Parquet(r) => match r.next() {
                None => Ok(false),
                Some(Err(e)) => Err(e.to_string()),
                Some(Ok(batch)) => {
                    self.pending.extend(columnar::rows(&batch));
                    Ok(true)
                }
            },
            Opened::Avro(r) => {
                let json_fields = avro_json_fields(r.writer_schema());
                let wanted = match &self.kind {
                    Kind::Avro(c) => c.clone(),
                    Kind::Parquet(_) => None,
                };
                for _ in 0..1024 {
                    match r.next() {
                        None => return Ok(!self.pending.is_empty()),
                        Some(Err(e)) => return Err(e.to_string()),
                        Some(Ok(v)) => {
                            if self.skip > 0 {
                                self.skip -= 1;
                                self.made += 1;
                                continue;
                            }
                            let mut f = match from_avro(v) {
                                Value::Map(m) => m,
                                other => {
                                    let mut m = Fields::default();
                                    m.insert("value".into(), other);
                                    m
                                }
                            };
                            for k in &json_fields {
                                if let Some(Value::String(s)) = f.get(k.as_str())
                                    && let Ok(j) = serde_json::from_str::<serde_json::Value>(s)
                                    && let Ok(v) = rill_core::json::json_to_value(&j)
                                {
                                    f.insert(k.clone(), v);
                                }
                            }
                            if let Some(w) = &wanted {
                                f.retain(|k, _| w.iter().any(|c| c == k.as_str()));
                            }
                            self.pending.push_back(f);
                        }
                    }
                }
                Ok(true)
            }
        }
    }
}

impl FileReader for RowReader {
    fn read(&mut self, max: usize, out: &mut Emitter) -> Result<Step, NodeError> {
        if self.ended {
            return Ok(Step { made: 0, end: true });
        }
        let mut n = 0;
        let stop = |me: &mut RowReader, e: String, n: usize, out: &mut Emitter| {
            me.ended = true;
            me.made += 1;
            out.fail(
                bad_line(&me.name, me.made, ""),
                format!("{}: cannot read record {} on: {e}", me.name, me.made),
            );
            Ok(Step {
                made: n + 1,
                end: true,
            })
        };
        if self.rows.is_none()
            && let Err(e) = self.open()
        {
            return stop(self, e, n, out);
        }
        while n < max {
            let Some(f) = self.pending.pop_front() else {
                match self.fill() {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.ended = true;
                        return Ok(Step { made: n, end: true });
                    }
                    Err(e) => return stop(self, e, n, out),
                }
            };
            self.made += 1;
            n += 1;
            self.stamp
                .emit(f, &format!("{}: record {}", self.name, self.made), out);
        }
        Ok(Step {
            made: n,
            end: false,
        })
    }

    fn position(&self, records: u64, _prev: &FilePos) -> Result<FilePos, NodeError> {
        FilePos::whole(self.input.file(), self.made, records)
            .map_err(|e| NodeError::failed(format!("{}: cannot fingerprint: {e}", self.name)))
    }

    fn check(&mut self, pos: &FilePos, path: &Path) -> Result<(), NodeError> {
        pos.check_whole(self.input.file(), path)
    }

    fn goto(&mut self, pos: &FilePos) -> Result<(), NodeError> {
        self.skip = pos.offset;
        self.rows = None;
        self.pending.clear();
        self.made = 0;
        self.ended = false;
        Ok(())
    }

    fn input(&mut self) -> &mut Growing {
        &mut self.input
    }
}

// ---------------------------------------------------------------------------
// Avro

/// `WriteToAvro`: part files of Avro object container files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToAvro {
    /// `out/events.avro` writes `out/events-000001.avro`, ...
    pub path: PathBuf,
    pub schema: Option<indexmap::IndexMap<String, String>>,
    #[serde(default = "default_part_records")]
    pub part_records: u64,
    #[serde(default = "default_part_bytes")]
    pub part_bytes: ByteSize,
    #[serde(default = "default_part_interval")]
    pub part_interval: Dur,
    /// `deflate` (default) or `none`.
    #[serde(default = "deflate")]
    pub codec: String,
    /// The Avro record's name.
    #[serde(default = "record_name")]
    pub record_name: String,
}

fn record_name() -> String {
    "Record".into()
}

impl WriteToAvro {
    fn roll(&self) -> Roll {
        Roll {
            records: self.part_records,
            bytes: self.part_bytes.0,
            interval: self.part_interval.0,
        }
    }
}

fn avro_codec(s: &str) -> Result<apache_avro::Codec, String> {
    match s {
        "deflate" => Ok(apache_avro::Codec::Deflate(Default::default())),
        "none" | "null" => Ok(apache_avro::Codec::Null),
        other => Err(format!("unknown codec `{other}` (deflate, none)")),
    }
}

impl NodeConfig for WriteToAvro {
    fn kind(&self) -> NodeKind {
        NodeKind::Sink
    }
    fn validate(&self) -> Result<(), ConfigError> {
        super::check_path(&self.path)?;
        check_schema(&self.schema)?;
        self.roll().validate()?;
        avro_codec(&self.codec).map_err(|e| ConfigError::at("codec", e))?;
        check_ext(&self.path, "avro")?;
        for k in self.schema.iter().flat_map(|s| s.keys()) {
            if !avro_name_ok(k) {
                return Err(ConfigError::at_path(
                    ["schema", k.as_str()],
                    format!(
                        "`{k}` is not a valid Avro field name (letters, digits and _, not starting with a digit)"
                    ),
                ));
            }
        }
        if apache_avro::schema::Name::new(&self.record_name).is_err() {
            return Err(ConfigError::at("record_name", "not a valid Avro name"));
        }
        Ok(())
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let format = AvroFormat {
            codec: avro_codec(&self.codec).map_err(NodeError::Failed)?,
            record_name: self.record_name.clone(),
        };
        file_sink(ctx, &self.path, &self.schema, self.roll(), format)
    }
}

struct AvroFormat {
    codec: apache_avro::Codec,
    record_name: String,
}

/// An Avro name for a column: letters, digits and `_`, not starting with a
/// digit. Other names are refused when the schema is made.
fn avro_name_ok(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn avro_type(t: &ColType) -> serde_json::Value {
    use serde_json::json;
    match t {
        ColType::Bool => json!("boolean"),
        ColType::Int => json!("long"),
        ColType::Float => json!("double"),
        ColType::String | ColType::Json => json!("string"),
        ColType::Bytes => json!("bytes"),
        ColType::List(inner) => json!({"type": "array", "items": ["null", avro_type(inner)]}),
        ColType::Other(_) => json!("null"),
    }
}

/// The Avro schema of the columns (as JSON text).
fn avro_schema(cols: &Columns, record: &str) -> Result<apache_avro::Schema, String> {
    let mut fields = Vec::new();
    for c in &cols.cols {
        if !avro_name_ok(&c.name) {
            return Err(format!(
                "`{}` is not a valid Avro field name (letters, digits and _, not starting with a digit): rename it with MapToFields",
                c.name
            ));
        }
        let ty = c.ty.clone().unwrap_or(ColType::Json);
        let mut f = serde_json::json!({
            "name": c.name.as_str(),
            "type": ["null", avro_type(&ty)],
            "default": null,
        });
        if ty == ColType::Json {
            f[TYPE_KEY] = serde_json::json!("json");
        }
        fields.push(f);
    }
    let schema = serde_json::json!({"type": "record", "name": record, "fields": fields});
    apache_avro::Schema::parse_str(&schema.to_string()).map_err(|e| e.to_string())
}

fn to_avro(t: &ColType, v: &Value) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    let inner = match (t, v) {
        (_, Value::Null) => return A::Union(0, Box::new(A::Null)),
        (ColType::Bool, Value::Bool(b)) => A::Boolean(*b),
        (ColType::Int, Value::Int(i)) => A::Long(*i),
        (ColType::Float, Value::Float(f)) => A::Double(*f),
        (ColType::Float, Value::Int(i)) => A::Double(*i as f64),
        (ColType::String, Value::String(s)) => A::String(s.to_string()),
        (ColType::Bytes, Value::Bytes(b)) => A::Bytes(b.clone()),
        (ColType::List(it), Value::List(items)) => {
            A::Array(items.iter().map(|i| to_avro(it, i)).collect())
        }
        (_, other) => A::String(rill_core::json::value_to_json(other).to_string()),
    };
    A::Union(1, Box::new(inner))
}

impl PartFormat for AvroFormat {
    fn ext(&self) -> &'static str {
        "avro"
    }
    fn begin(&self, cols: &Columns, file: File) -> Result<Box<dyn PartWriter>, String> {
        let schema = avro_schema(cols, &self.record_name)?;
        // the container's sync marker: unique enough per file
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        let mut marker = [0u8; 16];
        let mut x = seed | 1;
        for b in &mut marker {
            // xorshift
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        Ok(Box::new(AvroPart {
            schema,
            cols: cols.clone(),
            codec: self.codec,
            file: std::io::BufWriter::with_capacity(1 << 16, file),
            marker,
            started: false,
        }))
    }
}

/// An Avro part. The writer borrows its schema, so each chunk of records is
/// written by a writer of its own, as a block of the same container (same
/// sync marker; the first writes the header).
struct AvroPart {
    schema: apache_avro::Schema,
    cols: Columns,
    codec: apache_avro::Codec,
    file: std::io::BufWriter<File>,
    marker: [u8; 16],
    started: bool,
}

impl PartWriter for AvroPart {
    fn write(&mut self, records: &[Record]) -> Result<(), String> {
        let mut w = if self.started {
            apache_avro::Writer::append_to_with_codec(
                &self.schema,
                &mut self.file,
                self.codec,
                self.marker,
            )
        } else {
            apache_avro::Writer::builder()
                .schema(&self.schema)
                .writer(&mut self.file)
                .codec(self.codec)
                .marker(self.marker)
                .build()
        };
        self.started = true;
        for r in records {
            let fields: Vec<(String, apache_avro::types::Value)> = self
                .cols
                .cols
                .iter()
                .map(|c| {
                    let t = c.ty.clone().unwrap_or(ColType::Json);
                    (
                        c.name.to_string(),
                        to_avro(&t, r.fields.get(c.name.as_str()).unwrap_or(&Value::Null)),
                    )
                })
                .collect();
            w.append(apache_avro::types::Value::Record(fields))
                .map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<File, String> {
        self.file.into_inner().map_err(|e| e.to_string())
    }
}

/// Fields an Avro writer schema marks as JSON text.
fn avro_json_fields(schema: &apache_avro::Schema) -> Vec<Name> {
    match schema {
        apache_avro::Schema::Record(r) => r
            .fields
            .iter()
            .filter(|f| {
                f.custom_attributes
                    .get(TYPE_KEY)
                    .is_some_and(|v| v == "json")
            })
            .map(|f| f.name.as_str().into())
            .collect(),
        _ => Vec::new(),
    }
}

/// An Avro value as a rill value.
fn from_avro(v: apache_avro::types::Value) -> Value {
    use apache_avro::types::Value as A;
    match v {
        A::Null => Value::Null,
        A::Boolean(b) => Value::Bool(b),
        A::Int(i) | A::Date(i) | A::TimeMillis(i) => Value::Int(i.into()),
        A::Long(i) | A::TimeMicros(i) | A::TimestampMillis(i) | A::LocalTimestampMillis(i) => {
            Value::Int(i)
        }
        A::TimestampMicros(i) | A::LocalTimestampMicros(i) => Value::Int(i.div_euclid(1000)),
        A::TimestampNanos(i) | A::LocalTimestampNanos(i) => Value::Int(i.div_euclid(1_000_000)),
        A::Float(f) => Value::Float(f.into()),
        A::Double(f) => Value::Float(f),
        A::Bytes(b) | A::Fixed(_, b) => Value::Bytes(b),
        A::String(s) | A::Enum(_, s) => Value::String(s.into()),
        A::Uuid(u) => Value::String(u.to_string().into()),
        A::Union(_, inner) => from_avro(*inner),
        A::Array(items) => Value::List(items.into_iter().map(from_avro).collect()),
        A::Map(m) => {
            let mut keys: Vec<_> = m.into_iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(
                keys.into_iter()
                    .map(|(k, v)| (Name::from(k), from_avro(v)))
                    .collect(),
            )
        }
        A::Record(fields) => Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Name::from(k), from_avro(v)))
                .collect(),
        ),
        other => Value::String(format!("{other:?}").into()),
    }
}
