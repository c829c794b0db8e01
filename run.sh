#!/usr/bin/env bash
# descent's entry point: ./run.sh demo | test | setup | bench. Each sets everything up first if needed.
set -euo pipefail
cd "$(dirname "$0")"
command=${1:-demo}
shift || true
case "$command" in
  demo|test|setup|bench) ;;
  -h|--help) echo "usage: ./run.sh [demo|test|setup|bench] [args...]"; exit 0 ;;
  *) echo "usage: ./run.sh [demo|test|setup|bench] [args...]" >&2; exit 2 ;;
esac
bash scripts/setup.sh
case "$command" in
  demo)  # in its own --out, a demo run replaces the last one unless it is resumed; an option given again wins
    overwrite=--overwrite
    for argument in "$@"; do
      if [[ $argument == --resume ]]; then overwrite=; fi
    done
    .venv/bin/python examples/fashion_mnist.py --network mlp --epochs 1 --out examples/out/demo $overwrite "$@" ;;
  test)
    .venv/bin/ruff check .
    .venv/bin/python -m pytest -q "$@" ;;
  bench) .venv/bin/python -m benchmarks "$@" ;;
esac
