"""Reads what rill wrote, as a user's tools would: the Parquet parts with
pyarrow and with DuckDB, the Avro parts with fastavro. Writes read.json in
the folder given: the rows each tool read (ordered by id) and the column
types it saw.

usage: python read.py DIR   (DIR holds out/events-*.parquet, out/events-*.avro)
"""
import glob
import json
import os
import sys

import duckdb
import fastavro
import pyarrow.dataset as ds

d = sys.argv[1]
out = {}

parts = sorted(glob.glob(os.path.join(d, "out", "events-*.parquet")))
table = ds.dataset(parts, format="parquet").to_table()
out["parquet_files"] = len(parts)
out["pyarrow_types"] = {f.name: str(f.type) for f in table.schema}
out["pyarrow"] = sorted(table.to_pylist(), key=lambda r: r["id"])

con = duckdb.connect()
rel = con.sql(
    f"SELECT * FROM read_parquet('{os.path.join(d, 'out', 'events-*.parquet')}') ORDER BY id"
)
out["duckdb_types"] = {n: str(t) for n, t in zip(rel.columns, rel.types)}
cols = rel.columns
out["duckdb"] = [dict(zip(cols, row)) for row in rel.fetchall()]

rows = []
types = None
avro_parts = sorted(glob.glob(os.path.join(d, "out", "events-*.avro")))
for p in avro_parts:
    with open(p, "rb") as f:
        r = fastavro.reader(f)
        types = {
            fld["name"]: fld["type"] for fld in r.writer_schema["fields"]
        }
        rows.extend(r)
out["avro_files"] = len(avro_parts)
out["fastavro_types"] = types
out["fastavro"] = sorted(rows, key=lambda r: r["id"])

with open(os.path.join(d, "read.json"), "w") as f:
    json.dump(out, f, default=str)
