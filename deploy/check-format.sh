#!/usr/bin/env bash
# Fails when a C++ or CUDA source differs from .clang-format (clang-format 14).
# With --fix, rewrites the files instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cf=$(command -v clang-format-14 || command -v clang-format || true)
[[ -n "$cf" ]] || { echo "check-format: clang-format not found (deploy/install-deps.sh installs it)" >&2; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.cpp' '*.h' '*.cu' '*.cuh' '*.hpp' | while read -r f; do [[ -f "$f" ]] && echo "$f"; done)
else
  mapfile -t files < <(find include src kernels actors sim cli tests bench -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
fi
if [[ "${1:-}" == "--fix" ]]; then
  "$cf" -i "${files[@]}"
  echo "check-format: formatted ${#files[@]} files"
else
  "$cf" --dry-run --Werror "${files[@]}"
  echo "check-format: ${#files[@]} files clean"
fi
