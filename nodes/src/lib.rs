//! # rill-nodes
//!
//! The built-in node library, named and configured as Beam YAML names and
//! configures them:
//!
//! | type | kind | config |
//! |------|------|--------|
//! | `Create` | source | `elements` (rows or bare values, which become `{element: v}`), `output_schema` |
//! | `Generate` | source | `count`, `rate`, `keys`, `start_time`, `payload_bytes` |
//! | `ReadFromJson` | source | `path` (a file or a glob), `key`, `event_time`, `filename_column`, `follow`, `watch` |
//! | `ReadFromCsv` | source | the same, and `delimiter`, `header`, `names` |
//! | `ReadFromText` | source | the same as `ReadFromJson`; records `{line: TEXT}` |
//! | `ReadFromZenoh` | source | `key`, `format`, `max_records` |
//! | `Filter` | transform | `keep`, `language` |
//! | `MapToFields` | transform | `fields`, `append`, `drop`, `language` |
//! | `Explode` | transform | `fields`, `cross_product` |
//! | `LogForTesting` | transform | `level`, `prefix` |
//! | `AssignTimestamps` | transform | `timestamp`, `language` |
//! | `WindowInto` | transform | `windowing` |
//! | `Combine` | transform | `group_by`, `combine`, `language`, `late_output`, `state_cache` |
//! | `ExtractWindowingInfo` | transform | `fields` |
//! | `Flatten` | transform | (none) |
//! | `Partition` | transform | `by`, `outputs`, `unknown_output`, `language` |
//! | `Reshuffle` | transform | `num_buckets` (no effect) |
//! | `ValidateWithSchema` | transform | `schema` (JSON Schema) |
//! | `WriteToJson` | sink | `path` |
//! | `WriteToCsv` | sink | `path`, `delimiter` |
//! | `WriteToText` | sink | `path` (records of one field) |
//! | `WriteToZenoh` | sink | `key`, `format` |
//!
//! Every node that can fail a record takes Beam's
//! `error_handling: {output: NAME}` in its `config`.

pub mod audio;
pub mod combine;
pub mod create;
pub mod files;
pub mod generate;
pub mod log;
pub mod mapping;
pub mod mltransform;
pub mod routing;
pub mod schema;
pub mod testing;
pub mod windows;
pub mod zenoh_io;

use rill_core::registry::Registry;

/// Registers every built-in node type.
pub fn register_all(r: &mut Registry) {
    r.register::<create::Create>("Create", "a bounded source of inline elements");
    r.register::<generate::Generate>("Generate", "a synthetic stream: count, rate, keys");
    r.register::<files::ReadFromJson>("ReadFromJson", "reads JSON Lines, one record per line");
    r.register::<files::ReadFromCsv>("ReadFromCsv", "reads CSV with a header row");
    r.register::<files::ReadFromText>("ReadFromText", "reads text, one record per line");
    r.register::<files::WriteToJson>("WriteToJson", "writes JSON Lines");
    r.register::<files::WriteToCsv>("WriteToCsv", "writes CSV with a header row");
    r.register::<files::WriteToText>("WriteToText", "writes text, one line per record");
    r.register::<files::ReadFromParquet>("ReadFromParquet", "reads Parquet files");
    r.register::<files::WriteToParquet>("WriteToParquet", "writes Parquet part files");
    r.register::<files::ReadFromAvro>("ReadFromAvro", "reads Avro container files");
    r.register::<files::WriteToAvro>("WriteToAvro", "writes Avro part files");
    r.register::<files::ReadFromWav>("ReadFromWav", "reads WAV files as frames of audio");
    r.register::<files::WriteToWav>("WriteToWav", "writes a segment of audio per record");
    r.register::<audio::LogMel>("LogMel", "log-mel spectrogram of a frame of audio");
    r.register::<audio::BestWindow>(
        "BestWindow",
        "the best-scoring window of each key, once its sequence is complete",
    );
    r.register::<mapping::Filter>("Filter", "keeps records for which `keep` is true");
    r.register::<mapping::MapToFields>("MapToFields", "computes new fields from expressions");
    r.register::<mapping::Explode>("Explode", "one record per element of list fields");
    r.register::<log::LogForTesting>(
        "LogForTesting",
        "prints each record as a JSON line and passes it on",
    );
    r.register::<zenoh_io::ReadFromZenoh>("ReadFromZenoh", "subscribes to any Zenoh key");
    r.register::<zenoh_io::WriteToZenoh>("WriteToZenoh", "publishes records on any Zenoh key");
    r.register::<combine::Combine>(
        "Combine",
        "aggregates per group and window: sum, count, mean, min, max, top N...",
    );
    r.register::<windows::AssignTimestamps>(
        "AssignTimestamps",
        "sets each record's event time from a field or expression",
    );
    r.register::<windows::WindowInto>("WindowInto", "puts records into windows");
    r.register::<windows::ExtractWindowingInfo>(
        "ExtractWindowingInfo",
        "adds a record's timestamp and window as fields",
    );
    r.register::<mltransform::MLTransform>(
        "MLTransform",
        "learns statistics and vocabularies (artifacts) and applies them",
    );
    r.register::<routing::Flatten>("Flatten", "one stream of the records of all its inputs");
    r.register::<routing::Partition>("Partition", "sends each record to the output it names");
    r.register::<routing::Reshuffle>("Reshuffle", "passes records on (a stage boundary)");
    r.register::<schema::ValidateWithSchema>(
        "ValidateWithSchema",
        "passes rows that satisfy a JSON Schema; the others fail",
    );
}

/// A registry with every built-in node type.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    register_all(&mut r);
    r
}
