//! `ReadFromJson`, `ReadFromCsv` and `ReadFromText`: file sources that
//! resume by position.
//!
//! `path` is one file or a glob (`data/*.jsonl`, `out.csv*`). Each source
//! counts the bytes it has read, and at every commit of the stage puts a
//! [`FilePos`](super::FilePos) (and the file it is in, and the files it has
//! finished) into its keyed state. A rebuilt source (after a crash or a
//! restart) checks that the file still holds what it read, seeks to the
//! committed offset and goes on from the next line: it does not read the
//! file again from its start. See `docs/runtime-semantics.md` and
//! `docs/io.md`.

use std::path::{Path, PathBuf};

use rill_core::node::{
    BuildContext, ConfigError, Emitter, Node, NodeConfig, NodeError, NodeKind, Source, SourceStatus,
};
use rill_core::units::Dur;
use serde::Deserialize;

use super::Rows;
use super::growing::Growing;
use super::readers::{Columns, CsvReader, FileReader, LineKind, LineReader, Stamp};
use super::set::{FileOpts, FileSource, Opener};
use super::{comma, delimiter_byte};

impl Source for FileSource {
    fn seek(&mut self, made: u64) -> bool {
        FileSource::seek(self, made)
    }

    fn poll(&mut self, max: usize, out: &mut Emitter) -> Result<SourceStatus, NodeError> {
        FileSource::poll(self, max, out)
    }

    fn checkpoint(&mut self) -> Result<(), NodeError> {
        FileSource::checkpoint(self)
    }
}

fn opts(
    path: &Path,
    key: &Option<String>,
    event_time: &Option<String>,
    filename_column: &Option<String>,
    follow: bool,
    watch: &Option<Dur>,
) -> FileOpts {
    FileOpts {
        path: path.to_owned(),
        key: key.clone(),
        event_time: event_time.clone(),
        filename_column: filename_column.clone(),
        follow,
        watch: watch.map(|d| d.0),
    }
}

fn lines(kind: LineKind) -> Opener {
    Box::new(move |_: &Path, name: &str, input: Growing, stamp: Stamp| {
        Ok(Box::new(LineReader::new(name.to_owned(), input, kind, stamp)) as Box<dyn FileReader>)
    })
}

/// `ReadFromJson`: JSON Lines, one object per line; blank lines are skipped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromJson {
    /// A file or a glob.
    pub path: PathBuf,
    /// Field whose value becomes the record key.
    pub key: Option<String>,
    /// Field holding the event time (ms since the epoch).
    pub event_time: Option<String>,
    /// A field to add with the path of the file each record came from.
    pub filename_column: Option<String>,
    /// Tail the file as it grows (like `tail -F`).
    #[serde(default)]
    pub follow: bool,
    /// Look for new files matching the glob this often (`5s`).
    pub watch: Option<Dur>,
}

impl ReadFromJson {
    fn opts(&self) -> FileOpts {
        opts(
            &self.path,
            &self.key,
            &self.event_time,
            &self.filename_column,
            self.follow,
            &self.watch,
        )
    }
}

impl NodeConfig for ReadFromJson {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.opts().validate()
    }
    fn unbounded(&self) -> bool {
        self.opts().unbounded()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let src = FileSource::build(ctx, &self.opts(), Rows::Lines, lines(LineKind::Json))?;
        Ok(Node::Source(Box::new(src)))
    }
}

/// `ReadFromText`: every line of the file is a record with one string
/// field, `line` (Beam's `ReadFromText`). Empty lines are records too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromText {
    pub path: PathBuf,
    pub key: Option<String>,
    pub event_time: Option<String>,
    pub filename_column: Option<String>,
    #[serde(default)]
    pub follow: bool,
    pub watch: Option<Dur>,
}

impl NodeConfig for ReadFromText {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.opts().validate()
    }
    fn unbounded(&self) -> bool {
        self.opts().unbounded()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let src = FileSource::build(ctx, &self.opts(), Rows::Lines, lines(LineKind::Text))?;
        Ok(Node::Source(Box::new(src)))
    }
}

impl ReadFromText {
    fn opts(&self) -> FileOpts {
        opts(
            &self.path,
            &self.key,
            &self.event_time,
            &self.filename_column,
            self.follow,
            &self.watch,
        )
    }
}

/// `ReadFromCsv`: a header row, then one record per row. Values that read as
/// integers become ints, then floats, `true`/`false` bools; empty cells are
/// null; everything else stays a string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFromCsv {
    pub path: PathBuf,
    #[serde(default = "comma")]
    pub delimiter: String,
    /// Whether the first row names the columns (`false`: every row is
    /// data, and `names` names the columns).
    #[serde(default = "yes")]
    pub header: bool,
    /// Column names, for files without a header row.
    pub names: Option<Vec<String>>,
    pub key: Option<String>,
    pub event_time: Option<String>,
    pub filename_column: Option<String>,
    #[serde(default)]
    pub follow: bool,
    pub watch: Option<Dur>,
}

fn yes() -> bool {
    true
}

impl ReadFromCsv {
    fn opts(&self) -> FileOpts {
        opts(
            &self.path,
            &self.key,
            &self.event_time,
            &self.filename_column,
            self.follow,
            &self.watch,
        )
    }

    fn columns(&self) -> Columns {
        match &self.names {
            Some(n) if !self.header => Columns::Named(n.clone()),
            _ => Columns::Header,
        }
    }
}

impl NodeConfig for ReadFromCsv {
    fn kind(&self) -> NodeKind {
        NodeKind::Source
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.opts().validate()?;
        delimiter_byte(&self.delimiter).map_err(|m| ConfigError::at("delimiter", m))?;
        match (&self.names, self.header) {
            (None, false) => Err(ConfigError::at(
                "header",
                "a file without a header row needs `names`, the names of its columns",
            )),
            (Some(_), true) => Err(ConfigError::at(
                "names",
                "`names` is for files without a header row: add `header: false`",
            )),
            (Some(n), false) => {
                for (i, h) in n.iter().enumerate() {
                    if n[..i].contains(h) {
                        return Err(ConfigError::at_path(
                            ["names"],
                            format!("`{h}` is named twice"),
                        ));
                    }
                }
                Ok(())
            }
            (None, true) => Ok(()),
        }
    }
    fn unbounded(&self) -> bool {
        self.opts().unbounded()
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Node, NodeError> {
        let delimiter = delimiter_byte(&self.delimiter).map_err(NodeError::Failed)?;
        let columns = self.columns();
        let open: Opener = Box::new(move |_: &Path, name: &str, input: Growing, stamp: Stamp| {
            let mut r = CsvReader::new(name.to_owned(), input, delimiter, columns.clone(), stamp);
            r.begin()?;
            Ok(Box::new(r) as Box<dyn FileReader>)
        });
        let src = FileSource::build(ctx, &self.opts(), Rows::Csv, open)?;
        Ok(Node::Source(Box::new(src)))
    }
}
