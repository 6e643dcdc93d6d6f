#!/usr/bin/env bash
# Installs dependencies, builds everything (CUDA too when nvcc is present) and runs the
# whole test suite through ctest. Extra arguments go to ctest (e.g. -L unit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/deploy/install-deps.sh"
"$root/deploy/build.sh"
build_dir=${TROUPE_BUILD_DIR:-$root/build}
cd "$build_dir"
ctest --output-on-failure -j "${TROUPE_JOBS:-$(nproc)}" --timeout 900 "$@"
