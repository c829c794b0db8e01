"""Run every benchmark against its peer in one process; print a table of times and ratios and write it
as JSON and Markdown (by default to benchmarks/out/, which git ignores).

    .venv/bin/python -m benchmarks [--quick] [--only ops|training|memory] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import descent as dc
from benchmarks import memory, ops, training


def _output_file(text: str) -> Path:
    """A file for the results, refused before any case runs where it is a folder, or where a file or a
    folder that cannot be written in stands in place of its folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory; give a file name")
    for place in path.parents:
        if place.exists():
            if not place.is_dir():
                raise argparse.ArgumentTypeError(f"{place} is a file, not a directory")
            if not os.access(place, os.W_OK):
                raise argparse.ArgumentTypeError(f"cannot write in {place}")
            break
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (lavapipe, CI smoke)")
    parser.add_argument("--profile", action="store_true", help="print each training kernel's device time")
    parser.add_argument("--only", choices=["ops", "training", "memory"], help="run one group of cases")
    parser.add_argument("--json", type=_output_file, default="benchmarks/out/results.json",
                        help="where to write the results")
    parser.add_argument("--markdown", type=_output_file, default="benchmarks/out/results.md",
                        help="where to write the table as Markdown (for the README)")
    args = parser.parse_args()

    env = dc.Environment()
    peer = ops.Peer(cuda=env.device.kind == "discrete")
    sizes = [1 << 20] if args.quick else [1 << 20, 1 << 24]
    matmuls = [256, 1024] if args.quick else [1024, 2048, 4096]
    batches = [100] if args.quick else [100, 1000]
    results = []
    if args.only in (None, "ops"):
        results += [ops.elementwise(env, peer, size) for size in sizes]
        results += [ops.matmul(env, peer, n) for n in matmuls]
        for batch in batches:
            results.append(ops.conv(env, peer, "1->16 28x28", batch, 1, 28, 16, 1))
            results.append(ops.conv(env, peer, "16->32 14x14 g2", batch, 16, 14, 32, 2))
    if args.only in (None, "training"):
        for name in ("mlp", "convnet"):
            for batch in batches:
                results.append(training.step(env, peer, name, batch, args.profile))
        samples = 6_000 if args.quick else 60_000
        results += [training.epoch(env, peer, name, batch, samples) for name in ("mlp", "convnet") for batch in batches]
    memories = [memory.training_step(name, batch) for name in ("mlp", "convnet") for batch in batches
                ] if args.only in (None, "memory") else []
    overhead, latency = training.host_overhead(env)
    build = training.warm_build_seconds("convnet")

    print(f"descent on {env.device.name} vs {peer.name}  ({platform.node()}, {datetime.date.today()})")
    print(f"{'case':40s} {'descent':>12s} {'peer':>12s} {'descent rate':>16s} {'peer rate':>16s} {'peer/descent':>12s}")
    for r in results:
        print(f"{r.case:40s} {r.descent_s * 1e3:10.3f}ms {r.peer_s * 1e3:10.3f}ms "
              f"{r.rate(r.descent_s):10.1f} {r.unit:>5s} {r.rate(r.peer_s):10.1f} {r.unit:>5s} {r.ratio:11.2f}x")
    for m in memories:
        print(f"memory of a train step {m['case']:22s} descent {m['descent_bytes'] / 2**20:8.2f} MiB, parameters + "
              f"Adam state + batch + saved activations {m['bound_bytes'] / 2**20:8.2f} MiB: {m['ratio']:.2f}x")
    print(f"replay of a one-kernel graph: {overhead * 1e6:.0f} us in a loop, {latency * 1e6:.0f} us waiting for "
          f"each; ConvNet training graph rebuilt with a warm "
          f"SPIR-V cache: {build:.2f} s")
    record = {
        "replay_overhead_us": overhead * 1e6, "replay_latency_us": latency * 1e6, "warm_build_s": build,
        "memory": memories, "date": str(datetime.date.today()), "device": env.device.name, "peer": peer.name,
        "results": [dict(case=r.case, descent_ms=r.descent_s * 1e3, peer_ms=r.peer_s * 1e3,
                         descent_rate=r.rate(r.descent_s), peer_rate=r.rate(r.peer_s), unit=r.unit,
                         peer_over_descent=r.ratio) for r in results],
    }
    for path, text in ((args.json, json.dumps(record, indent=2)), (args.markdown, markdown(record))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {args.json} and {args.markdown}")


def markdown(record: dict) -> str:
    """The results as a Markdown table: times, rates and the peer/descent ratio (above 1: descent faster)."""
    lines = [f"descent on {record['device']} vs {record['peer']}, {record['date']}", "",
             "| case | descent | peer | descent rate | peer rate | peer/descent |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in record["results"]:
        lines.append(f"| {r['case']} | {r['descent_ms']:.3f} ms | {r['peer_ms']:.3f} ms | {r['descent_rate']:.1f} "
                     f"{r['unit']} | {r['peer_rate']:.1f} {r['unit']} | {r['peer_over_descent']:.2f}x |")
    for m in record["memory"]:
        lines.append(f"| memory of a train step, {m['case']} | {m['descent_bytes'] / 2**20:.2f} MiB | "
                     f"{m['bound_bytes'] / 2**20:.2f} MiB (bound) | | | {m['ratio']:.2f}x of the bound |")
    lines.append(f"| replay of a one-kernel graph | {record['replay_overhead_us']:.0f} us in a loop, "
                 f"{record['replay_latency_us']:.0f} us waiting for each | | | | |")
    lines.append(f"| training graph rebuilt, warm SPIR-V cache | {record['warm_build_s']:.2f} s | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
