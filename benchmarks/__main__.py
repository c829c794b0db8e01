"""Run every benchmark against its peer in one process; print a table of times and ratios and write JSON.

    .venv/bin/python -m benchmarks [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform

import descent as dc
from benchmarks import ops, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (lavapipe, CI smoke)")
    parser.add_argument("--profile", action="store_true", help="print each training kernel's device time")
    parser.add_argument("--only", choices=["ops", "training"], help="run one group of cases")
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write the results")
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
    overhead, latency = training.host_overhead(env)
    build = training.warm_build_seconds("convnet")

    print(f"descent on {env.device.name} vs {peer.name}  ({platform.node()}, {datetime.date.today()})")
    print(f"{'case':40s} {'descent':>12s} {'peer':>12s} {'descent rate':>16s} {'peer rate':>16s} {'peer/descent':>12s}")
    for r in results:
        print(f"{r.case:40s} {r.descent_s * 1e3:10.3f}ms {r.peer_s * 1e3:10.3f}ms "
              f"{r.rate(r.descent_s):10.1f} {r.unit:>5s} {r.rate(r.peer_s):10.1f} {r.unit:>5s} {r.ratio:11.2f}x")
    print(f"replay of a one-kernel graph: {overhead * 1e6:.0f} us in a loop, {latency * 1e6:.0f} us waiting for "
          f"each; ConvNet training graph rebuilt with a warm "
          f"SPIR-V cache: {build:.2f} s")
    record = {
        "replay_overhead_us": overhead * 1e6, "replay_latency_us": latency * 1e6, "warm_build_s": build,
        "date": str(datetime.date.today()), "device": env.device.name, "peer": peer.name,
        "results": [dict(case=r.case, descent_ms=r.descent_s * 1e3, peer_ms=r.peer_s * 1e3,
                         descent_rate=r.rate(r.descent_s), peer_rate=r.rate(r.peer_s), unit=r.unit,
                         peer_over_descent=r.ratio) for r in results],
    }
    with open(args.json, "w") as handle:
        json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
