#!/usr/bin/env bash
# Makes (or reuses) a Python environment under target/pyenv-zenoh with the
# Python Zenoh client, eclipse-zenoh from PyPI at the version of the Rust
# crate rill is built with, for the test of clients that are not rill;
# prints its python's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
venv="$root/target/pyenv-zenoh"
want=1.10.2
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('eclipse-zenoh') != '$want')" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "eclipse-zenoh==$want" >&2
fi
echo "$venv/bin/python"
