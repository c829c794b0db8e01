#!/usr/bin/env bash
# descent's entry point: ./run.sh demo | test | setup | bench. Each sets everything up first if needed.
set -euo pipefail
cd "$(dirname "$0")"
command=${1:-demo}
shift || true
bash scripts/setup.sh
case "$command" in
  setup) ;;
  demo)
    .venv/bin/python examples/fashion_mnist.py --network mlp --epochs 1 "$@" ;;  # an option given again wins
  test)
    .venv/bin/ruff check .
    .venv/bin/python -m pytest -q "$@" ;;
  bench) .venv/bin/python -m benchmarks "$@" ;;
  *) echo "usage: ./run.sh [demo|test|setup|bench] [args...]" >&2; exit 2 ;;
esac
