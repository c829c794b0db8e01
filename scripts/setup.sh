#!/usr/bin/env bash
# Idempotent set-up of descent on Debian: system packages, .venv, kp (built once, cached), descent editable.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CACHE=${DESCENT_CACHE:-$HOME/.cache/descent}
KP_VERSION=0.9.0
KP_BUILD=descent8  # bump with scripts/kp-0.9.0-descent.patch so cached wheels are rebuilt
DEBS="python3 python3-dev python3-venv g++ make patch mesa-vulkan-drivers glslang-tools libvulkan-dev libfmt-dev pybind11-dev cmake dataset-fashion-mnist vulkan-validationlayers"

missing=""
for pkg in $DEBS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "descent setup: installing Debian packages:$missing"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
  else
    echo "descent setup: missing Debian packages:$missing" >&2
    echo "run:  sudo apt-get install -y$missing   then run this again" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "descent setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python

if ! $VPY -c "import kp, importlib.metadata as m; assert m.version('kp') == '$KP_VERSION+$KP_BUILD'" 2>/dev/null; then
  tag=$($VPY -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
  wheel=$(ls "$CACHE"/kp-$KP_VERSION+$KP_BUILD-$tag-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    $VPY -m pip install -q --upgrade pip setuptools wheel "pybind11>=3" "numpy>=1.24"
    echo "descent setup: building kp $KP_VERSION from its sdist (once, a few minutes)"
    mkdir -p "$CACHE"
    work=$(mktemp -d)
    $VPY -m pip download -q --no-deps --no-binary :all: -d "$work" "kp==$KP_VERSION"
    tar xzf "$work/kp-$KP_VERSION.tar.gz" -C "$work"
    # adds OpMemoryBarrier, device limits, uniform texel-buffer bindings and a non-blocking completion
    # check to the bindings, makes eval_async() asynchronous, reuses one fence per sequence, lets
    # copies use storage buffers, resets timestamp queries and lets command buffers be recorded again
    # (as Vulkan requires), reports a failed buffer or memory allocation as an error (it crashed),
    # fixes setup.py's cmake arguments
    patch -s -p1 -d "$work/kp-$KP_VERSION" < scripts/kp-$KP_VERSION-descent.patch
    export KOMPUTE_OPT_INSTALL=OFF KOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF \
      KOMPUTE_OPT_USE_BUILT_IN_FMT=OFF KOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF \
      KOMPUTE_OPT_DISABLE_VULKAN_VERSION_CHECK=ON
    pybind11_DIR=$($VPY -m pybind11 --cmakedir)
    export pybind11_DIR
    $VPY -m pip wheel -q --no-build-isolation --no-deps -w "$CACHE" "$work/kp-$KP_VERSION"
    rm -rf "$work"
    wheel=$(ls "$CACHE"/kp-$KP_VERSION+$KP_BUILD-$tag-*.whl | head -n 1)
  fi
  $VPY -m pip install -q --no-deps --force-reinstall "$wheel"
fi

stamp=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.descent-setup 2>/dev/null)" != "$stamp" ]; then
  $VPY -m pip install -q -e ".[test,examples]"
  echo "$stamp" > .venv/.descent-setup
  echo "descent setup: ready (.venv)"
fi
