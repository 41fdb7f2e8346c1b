#!/usr/bin/env bash
# Makes (or reuses) a Python environment under target/pyenv-iceberg with
# the readers rill's Iceberg tables are checked against: pyiceberg (its SQL
# catalog on the same SQLite file) and DuckDB with its iceberg and avro
# extensions, all from PyPI (the extensions are loaded from the installed
# packages' files: nothing is downloaded at run time); prints its python.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
venv="$root/target/pyenv-iceberg"
duck=1.5.5
if ! "$venv/bin/python" -c 'import pyiceberg, duckdb, duckdb_extension_iceberg, duckdb_extension_avro, sqlalchemy, pyarrow' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "pyiceberg[sql-sqlite,pyarrow]==0.12.*" "duckdb==$duck" \
        "duckdb-extension-iceberg==$duck" "duckdb-extension-avro==$duck" >&2
fi
echo "$venv/bin/python"
