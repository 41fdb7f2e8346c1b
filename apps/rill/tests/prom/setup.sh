#!/usr/bin/env bash
# Makes a Python environment with prometheus_client (from PyPI) under
# target/pyenv-prom, for the metrics endpoint test to parse a scrape with
# Prometheus' own parser; prints its python's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
venv="$root/target/pyenv-prom"
if ! "$venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check prometheus_client >&2
fi
echo "$venv/bin/python"
