"""Queries an Iceberg table with DuckDB's iceberg_scan.

usage: python configs/iceberg/query.py TABLE_FOLDER [SQL]

TABLE_FOLDER is the table's folder in the warehouse (rill keeps its
metadata/version-hint.text current); in SQL the table is `t`. Needs
duckdb and its iceberg and avro extensions from PyPI, at the same version:
  pip install duckdb==1.5.5 duckdb-extension-iceberg==1.5.5 duckdb-extension-avro==1.5.5
"""
import glob
import os
import sys

import duckdb
import duckdb_extension_avro
import duckdb_extension_iceberg

folder = os.path.abspath(sys.argv[1])
sql = sys.argv[2] if len(sys.argv) > 2 else (
    "SELECT device, count(*) AS readings, round(avg(temp_c), 2) AS avg_temp_c "
    "FROM t GROUP BY device ORDER BY device"
)
con = duckdb.connect()
for pkg in (duckdb_extension_avro, duckdb_extension_iceberg):
    # the extensions' files come with the packages: nothing is downloaded
    (ext,) = glob.glob(os.path.join(os.path.dirname(pkg.__file__), "extensions", "*", "*.duckdb_extension"))
    con.execute(f"LOAD '{ext}'")
con.execute(f"CREATE VIEW t AS SELECT * FROM iceberg_scan('{folder}')")
con.sql(sql).show(max_rows=50)
