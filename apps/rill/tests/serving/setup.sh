#!/usr/bin/env bash
# Makes (or reuses) a Python environment under target/pyenv-triton with
# Triton's own HTTP client (tritonclient[http], from PyPI, with numpy), for
# the serving test to query rill as a Triton user would; prints its
# python's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
venv="$root/target/pyenv-triton"
want=2.73.0
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys, tritonclient.http; sys.exit(m.version('tritonclient') != '$want')" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "tritonclient[http]==$want" numpy >&2
fi
echo "$venv/bin/python"
