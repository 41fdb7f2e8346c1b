#!/usr/bin/env bash
# CUDA checks on a GPU machine that has no Rust toolchain and no registry
# (like the one the `device` tool lends):
#
#   bash hil-tests/gpu.sh build   # here: release binaries with `cuda`, stripped,
#                                 # into gpu-carry/ (git-ignored, < 64 MiB)
#   bash hil-tests/gpu.sh run     # there, from the repository root: checks
#                                 # libcuda/libnvrtc, runs the CUDA parity test
#                                 # and the inference benchmark
#
# With the device tool: build here, then
#   run(command="bash hil-tests/gpu.sh run", carry=["gpu-carry"])
set -euo pipefail
cd "$(dirname "$0")/.."
carry=gpu-carry

case "${1:-}" in
build)
    rm -rf "$carry" && mkdir -p "$carry"
    # the test binary's path comes from cargo's JSON messages
    exe=$(cargo test --release -p rill-hil-tests --features cuda --test cuda --no-run \
        --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
    cp "$exe" "$carry/cuda-parity"
    cargo build --release -p rill-bench --features cuda
    cp target/release/rill-bench "$carry/rill-bench"
    strip "$carry"/*
    du -sh "$carry"/*
    ;;
run)
    echo "== driver and libraries"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    for lib in libcuda.so libnvrtc.so; do
        if ldconfig -p | grep -q "$lib"; then
            echo "$lib: found"
        else
            echo "$lib: NOT found (CUDA tests will skip)"
        fi
    done
    echo "== CUDA parity test"
    "$carry/cuda-parity" --nocapture
    echo "== inference benchmark"
    "$carry/rill-bench" inference
    ;;
*)
    echo "usage: bash hil-tests/gpu.sh build|run" >&2
    exit 2
    ;;
esac
