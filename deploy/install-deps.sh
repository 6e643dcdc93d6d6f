#!/usr/bin/env bash
# Installs every build and test dependency of Troupe from Debian's packages.
# Idempotent and non-interactive: packages already present are left alone.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkgconf ccache git clang-format-14
  libcaf-dev                      # actors (CAF 0.17)
  libzmq3-dev cppzmq-dev          # ZeroMQ + C++ bindings
  capnproto libcapnp-dev          # Cap'n Proto compiler + library
  libgloo-dev                     # CPU collectives
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libboost1.81-dev                # Boost.Beast + Asio: the HTTP API
  prometheus-cpp-dev libssl-dev
  iproute2 python3
)

if [[ ! -r /etc/os-release ]]; then
  echo "install-deps: cannot read /etc/os-release; Troupe supports Debian 12 (bookworm)." >&2
  exit 1
fi
# shellcheck disable=SC1091
. /etc/os-release
if [[ "${ID:-}" != "debian" || "${VERSION_ID:-}" != "12" ]]; then
  echo "install-deps: unsupported system '${PRETTY_NAME:-unknown}'; Troupe's script supports Debian 12 (bookworm) only." >&2
  echo "install-deps: on other systems install the packages listed in deploy/install-deps.sh by hand." >&2
  exit 1
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then sudo_cmd=(sudo); else
    echo "install-deps: run as root or install sudo." >&2; exit 1
  fi
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: done"
else
  echo "install-deps: all ${#packages[@]} packages already installed"
fi

if [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null; then
  nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  echo "install-deps: CUDA toolkit found: $("$nvcc_bin" --version | tail -n 2 | head -n 1)"
else
  echo "install-deps: CUDA toolkit not found: Troupe builds the CPU backend only (TROUPE_CUDA=AUTO)."
fi
