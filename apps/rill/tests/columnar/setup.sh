#!/usr/bin/env bash
# Makes (or reuses) a Python environment under target/pyenv-io with the
# readers and writers rill's file formats are checked against: pyarrow,
# DuckDB and fastavro from PyPI; prints its python's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
venv="$root/target/pyenv-io"
if ! "$venv/bin/python" -c 'import pyarrow, duckdb, fastavro' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb fastavro >&2
fi
echo "$venv/bin/python"
