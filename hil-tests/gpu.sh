#!/usr/bin/env bash
# CUDA checks on a GPU machine that has no Rust toolchain and no registry
# (like the one the `device` tool lends):
#
#   bash hil-tests/gpu.sh build   # here: release binaries with `cuda`, stripped,
#                                 # into gpu-carry/ (git-ignored, < 64 MiB)
#   bash hil-tests/gpu.sh run     # there, from the repository root: checks
#                                 # libcuda/libnvrtc, runs the CUDA test
#                                 # (hil-tests/tests/cuda.rs) and the
#                                 # inference benchmark
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
    # (cargo's own messages go to cargo-build.log: shown if the build fails)
    exe=$(cargo test --release -p rill-hil-tests --features cuda --test cuda --no-run \
        --message-format=json 2>"$carry/cargo-build.log" |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
    if [ -z "$exe" ]; then
        cat "$carry/cargo-build.log" >&2
        echo "gpu.sh: the CUDA test did not build (see above)" >&2
        exit 1
    fi
    rm -f "$carry/cargo-build.log"
    cp "$exe" "$carry/cuda-parity"
    cargo build --release -p rill-bench --features cuda
    cp target/release/rill-bench "$carry/rill-bench"
    strip "$carry"/*
    du -sh "$carry"/*
    ;;
run)
    echo "== driver and libraries"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    libs=$(ldconfig -p 2>/dev/null || true)
    for lib in libcuda.so libnvrtc.so; do
        if grep -q "$lib" <<<"$libs"; then
            echo "$lib: found"
        else
            echo "$lib: NOT found (CUDA tests will skip)"
        fi
    done
    echo "== CUDA parity test (handlers, instances, keyed models, hot swap)"
    "$carry/cuda-parity"
    echo "== inference benchmark"
    "$carry/rill-bench" inference
    ;;
*)
    echo "usage: bash hil-tests/gpu.sh build|run" >&2
    exit 2
    ;;
esac
