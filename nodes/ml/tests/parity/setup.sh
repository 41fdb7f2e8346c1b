#!/usr/bin/env bash
# Makes a Python environment with numpy and safetensors (from PyPI) for the
# parity test, under target/pyenv, and prints its python's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
venv="$root/target/pyenv"
if ! "$venv/bin/python" -c 'import numpy, safetensors' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy safetensors >&2
fi
echo "$venv/bin/python"
