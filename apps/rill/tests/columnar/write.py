"""Writes files as other tools do, for rill to read: a Parquet file with
pyarrow (narrow ints, float32, timestamps, a struct, a map, lists, nulls, a
dictionary column), one with DuckDB, and an Avro file with fastavro. Writes
expected.json: the rows as rill should read them.

usage: python write.py DIR
"""
import base64
import datetime
import json
import os
import sys

import duckdb
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

d = sys.argv[1]
n = 3000
ts0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
table = pa.table(
    {
        "id": pa.array(range(n), pa.int32()),
        "small": pa.array([i % 100 for i in range(n)], pa.uint8()),
        "x": pa.array([i / 4 for i in range(n)], pa.float32()),
        "name": pa.array([None if i % 7 == 0 else f"n{i}é" for i in range(n)]),
        "at": pa.array(
            [ts0 + datetime.timedelta(milliseconds=i) for i in range(n)],
            pa.timestamp("ms", tz="UTC"),
        ),
        "tags": pa.array([[f"t{i % 3}", "x"] if i % 5 else [] for i in range(n)]),
        "point": pa.array(
            [{"a": i, "b": str(i)} for i in range(n)],
            pa.struct([("a", pa.int64()), ("b", pa.string())]),
        ),
        "kind": pa.array([["red", "green"][i % 2] for i in range(n)]).dictionary_encode(),
        "counts": pa.array(
            [[("a", i), ("b", 2 * i)] for i in range(n)], pa.map_(pa.string(), pa.int64())
        ),
    }
)
os.makedirs(os.path.join(d, "in"), exist_ok=True)
pq.write_table(table, os.path.join(d, "in", "a.parquet"), row_group_size=1000)

epoch_ms = int(ts0.timestamp() * 1000)
expected = []
for i in range(n):
    expected.append(
        {
            "id": i,
            "small": i % 100,
            "x": i / 4,
            "name": None if i % 7 == 0 else f"n{i}é",
            "at": epoch_ms + i,
            "tags": [f"t{i % 3}", "x"] if i % 5 else [],
            "point": {"a": i, "b": str(i)},
            "kind": ["red", "green"][i % 2],
            "counts": {"a": i, "b": 2 * i},
        }
    )

# a second file, by DuckDB (ids after the first's)
con = duckdb.connect()
dpath = os.path.join(d, "in", "b.parquet")
con.sql(
    f"COPY (SELECT (i + {n})::BIGINT AS id, (i * 1.5)::DOUBLE AS v, 'd' || i::VARCHAR AS s "
    f"FROM range(500) t(i)) TO '{dpath}' (FORMAT parquet, COMPRESSION zstd)"
)
duck = [{"id": i + n, "v": i * 1.5, "s": f"d{i}"} for i in range(500)]

schema = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "temp", "type": ["null", "double"]},
        {"name": "unit", "type": {"type": "enum", "name": "Unit", "symbols": ["C", "F"]}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "labels", "type": {"type": "map", "values": "string"}},
        {"name": "raw", "type": "bytes"},
    ],
}
recs = [
    {
        "id": i,
        "temp": None if i % 4 == 0 else 20.0 + i / 8,
        "unit": "CF"[i % 2],
        "at": ts0 + datetime.timedelta(milliseconds=i),
        "labels": {"site": f"s{i % 3}"},
        "raw": bytes([i % 256, 1]),
    }
    for i in range(2000)
]
with open(os.path.join(d, "in", "r.avro"), "wb") as f:
    fastavro.writer(f, fastavro.parse_schema(schema), recs, codec="deflate", sync_interval=4000)
avro = [
    {
        "id": i,
        "temp": None if i % 4 == 0 else 20.0 + i / 8,
        "unit": "CF"[i % 2],
        "at": epoch_ms + i,
        "labels": {"site": f"s{i % 3}"},
        "raw": {"$bytes": base64.b64encode(bytes([i % 256, 1])).decode()},
    }
    for i in range(2000)
]

with open(os.path.join(d, "expected.json"), "w") as f:
    json.dump({"parquet": expected, "duckdb": duck, "avro": avro}, f)
