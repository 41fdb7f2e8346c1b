//! # rill-iceberg
//!
//! `WriteToIceberg` and `ReadFromIceberg`: Apache Iceberg tables in a SQL
//! catalog on SQLite, with the warehouse on the local filesystem (the
//! catalog pyiceberg's `SqlCatalog` reads too). See `docs/io.md`.
//!
//! ```yaml
//! - type: WriteToIceberg
//!   config:
//!     table: rill.events
//!     catalog_name: rill                 # default
//!     catalog_properties:
//!       uri: iceberg/catalog.db          # a SQLite file (default)
//!       warehouse: iceberg/warehouse     # a folder (default)
//!     triggering_frequency_seconds: 60   # a commit at least this often
//! ```
//!
//! The sink stages records as the Parquet sinks do, and at the first stage
//! commit after `part_records` / `part_bytes` / the triggering frequency
//! (or at the end of the input) writes them as data files and commits
//! them to the table in two phases: the files are written, and named in
//! the stage's state, in its checkpoint; the Iceberg commit follows once
//! the stage's commit is durable, with rill's part number in the
//! snapshot's summary, so a restarted sink knows whether it landed and
//! commits it if not. Data files are named with the stage, the part and
//! the attempt; a restarted sink deletes those a killed attempt wrote and
//! no snapshot names.

mod catalog;
mod rt;
mod sink;
mod source;

pub use catalog::CatalogProps;
pub use sink::WriteToIceberg;
pub use source::ReadFromIceberg;

/// Registers the Iceberg nodes.
pub fn register(r: &mut rill_core::registry::Registry) {
    r.register::<WriteToIceberg>(
        "WriteToIceberg",
        "writes to an Apache Iceberg table (SQL catalog on SQLite)",
    );
    r.register::<ReadFromIceberg>(
        "ReadFromIceberg",
        "reads a snapshot of an Apache Iceberg table (SQL catalog on SQLite)",
    );
}
