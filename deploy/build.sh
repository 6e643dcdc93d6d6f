#!/usr/bin/env bash
# Configures and builds Troupe (Release) into build/ at the repository's root.
# Extra arguments go to cmake's configure step, e.g. -DTROUPE_CUDA=OFF.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${TROUPE_BUILD_DIR:-$root/build}
jobs=${TROUPE_JOBS:-$(nproc)}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
elif (($#)); then
  cmake -S "$root" -B "$build_dir" "$@"
fi
echo "build: compiling with $jobs job(s) into $build_dir"
cmake --build "$build_dir" -j "$jobs"
