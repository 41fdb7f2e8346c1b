#!/usr/bin/env bash
# Makes (or reuses) the Python environment under target/pyenv with numpy and
# scikit-learn from PyPI, for the MLTransform reference test, and prints its
# python's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="$root/target/pyenv"
if ! "$venv/bin/python" -c 'import numpy, sklearn' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy scikit-learn >&2
fi
echo "$venv/bin/python"
