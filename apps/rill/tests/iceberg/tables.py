"""Reads rill's Iceberg table as its users would, and writes one for rill.

usage: python tables.py read DIR TABLE   -> DIR/read.json
       python tables.py write DIR TABLE  -> a table written by pyiceberg, and DIR/expected.json

The catalog is iceberg/catalog.db (SQLite) and the warehouse
iceberg/warehouse under DIR, as rill's defaults put them.
"""
import glob
import json
import os
import sys

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

mode, d, table = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
os.makedirs(f"{d}/iceberg/warehouse", exist_ok=True)
cat = SqlCatalog(
    "rill",
    uri=f"sqlite:///{d}/iceberg/catalog.db",
    warehouse=f"{d}/iceberg/warehouse",
)

if mode == "read":
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_iceberg

    t = cat.load_table(table)
    out = {}
    arrow = t.scan().to_arrow()
    # pyarrow's large and small strings are one type to a user
    out["pyiceberg_types"] = {f.name: str(f.type).replace("large_", "") for f in arrow.schema}
    out["pyiceberg"] = sorted(arrow.to_pylist(), key=lambda r: r["id"])
    out["snapshots"] = [
        {k: v for k, v in s.summary.additional_properties.items() if k.startswith("rill.")}
        for s in t.snapshots()
    ]
    # data files in the table's folder that no snapshot of it names
    named = {task.file.file_path.removeprefix("file://") for task in t.scan().plan_files()}
    data = os.path.join(t.location().removeprefix("file://"), "data")
    out["unreferenced"] = sorted(
        f for f in os.listdir(data) if os.path.join(data, f) not in named and not f.startswith(".")
    ) if os.path.isdir(data) else []
    con = duckdb.connect()
    for pkg in (duckdb_extension_avro, duckdb_extension_iceberg):
        (ext,) = glob.glob(os.path.join(os.path.dirname(pkg.__file__), "extensions", "*", "*.duckdb_extension"))
        con.execute(f"LOAD '{ext}'")
    folder = os.path.dirname(os.path.dirname(t.metadata_location.removeprefix("file://")))
    rel = con.sql(f"SELECT * FROM iceberg_scan('{folder}') ORDER BY id")
    out["duckdb_types"] = {n: str(ty) for n, ty in zip(rel.columns, rel.types)}
    out["duckdb"] = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
    rel = con.sql(f"SELECT count(*) FROM iceberg_scan('{t.metadata_location}')")
    out["duckdb_count_by_metadata_file"] = rel.fetchall()[0][0]
    with open(os.path.join(d, "read.json"), "w") as f:
        json.dump(out, f, default=str)
else:
    cat.create_namespace_if_not_exists(table.split(".")[0])
    data = pa.table(
        {
            "id": pa.array(range(1000), pa.int64()),
            "x": pa.array([i / 8 for i in range(1000)], pa.float64()),
            "name": pa.array([None if i % 5 == 0 else f"p{i}" for i in range(1000)]),
            "n": pa.array([i % 7 for i in range(1000)], pa.int32()),
        }
    )
    t = cat.create_table(table, schema=data.schema)
    t.append(data.slice(0, 600))
    t.append(data.slice(600))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(data.to_pylist(), f)
