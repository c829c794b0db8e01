"""Where a CPU driver's JIT code spends its time: `perf` samples a training step or a matmul running
on lavapipe, and the hottest machine code is disassembled from this process's memory (the driver
registers no symbols for it) with the samples of each instruction.

    .venv/bin/python -m benchmarks.jit_profile convnet        # or: mlp, 100x784x300 (a matmul M x K x N)

Needs Linux `perf` (Debian: linux-perf) and `objdump` (binutils); prints the share of samples per
instruction mnemonic and writes each hot code region's annotated disassembly. A sample lands on the
instruction after the one that held it up: the samples of a slow gather (`vpgatherdd`) show on the
instruction that follows it.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import descent as dc
from benchmarks.training import network
from descent import nn, optim


def workload(env: dc.Environment, case: str):
    """A function running `case` once and waiting for it: a training step of an example network, or
    a matmul given as MxKxN."""
    rng = np.random.default_rng(0)
    if case in ("mlp", "convnet"):
        x = rng.uniform(size=(100, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 100).astype(np.int32)
        trainer = nn.Trainer(env, network(case).build(env), optimizer=optim.Adam(1e-3))
        graph, x_parameter, y_parameter, _ = trainer._graph("train", x, y)
        inputs = {x_parameter: x, y_parameter: y}
    else:
        m, k, n = (int(size) for size in case.split("x"))
        a = env.parameter("profile_a", (m, k), init=rng.normal(size=(m, k)).astype(np.float32))
        b = env.parameter("profile_b", (k, n), init=rng.normal(size=(k, n)).astype(np.float32))
        c = env.parameter("profile_c", (m, n))
        graph, inputs = env.build_graph(lambda s: s.write(c, s.read(a) @ s.read(b))), {}
    return lambda: (env.run(graph, inputs), env.synchronize())


def samples(run, seconds: float, folder: Path) -> collections.Counter:
    """Instruction addresses sampled (cpu-clock) in this process's anonymous executable memory while
    `run` repeats on another thread."""
    done = threading.Event()

    def repeat() -> None:
        while not done.is_set():
            run()

    worker = threading.Thread(target=repeat)
    worker.start()
    try:
        time.sleep(0.3)
        threads = ",".join(os.listdir(f"/proc/{os.getpid()}/task"))
        data = folder / "perf.data"
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "5000", "-t", threads, "-o", str(data),
                        "--", "sleep", str(seconds)], check=True, capture_output=True)
        script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,dso"], check=True,
                                capture_output=True, text=True).stdout
    finally:
        done.set()
        worker.join()
    addresses = collections.Counter()
    for line in script.splitlines():
        fields = line.split()
        if len(fields) == 2 and ("perf-" in fields[1] or "unknown" in fields[1]):
            addresses[int(fields[0], 16)] += 1
    return addresses


def regions(addresses: collections.Counter) -> collections.Counter:
    """Samples per executable mapping of this process that holds sampled addresses."""
    counts = collections.Counter()
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, permissions = line.split()[:2]
            low, high = (int(bound, 16) for bound in span.split("-"))
            if "x" in permissions:
                hits = sum(count for address, count in addresses.items() if low <= address < high)
                if hits:
                    counts[(low, high)] = hits
    return counts


def disassemble(low: int, high: int, addresses: collections.Counter, folder: Path) -> list[tuple[int, str, str]]:
    """(samples, mnemonic, line) for each instruction of the mapping [low, high)."""
    with open("/proc/self/mem", "rb") as memory:
        memory.seek(low)
        code = memory.read(high - low)
    binary = folder / f"{low:x}.bin"
    binary.write_bytes(code)
    listing = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", f"--adjust-vma={low:#x}",
                              str(binary)], check=True, capture_output=True, text=True).stdout
    instructions = []
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[2].split():
            address = int(fields[0].strip().rstrip(":"), 16)
            instructions.append((addresses.get(address, 0), fields[2].split()[0], line))
    return instructions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", help="mlp, convnet, or a matmul as MxKxN")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long perf samples")
    parser.add_argument("--out", default="benchmarks/out/jit_profile", help="where the annotated code goes")
    args = parser.parse_args()
    missing = [tool for tool in ("perf", "objdump") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"jit_profile needs {' and '.join(missing)} on PATH (Debian: linux-perf, binutils)")
    env = dc.Environment()
    if env.device.kind != "cpu":
        sys.exit(f"jit_profile reads a CPU driver's JIT code; this device is {env.device.name}")
    run = workload(env, args.case)
    run()
    with tempfile.TemporaryDirectory() as scratch:
        addresses = samples(run, args.seconds, Path(scratch))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        mnemonics = collections.Counter()
        for number, ((low, high), hits) in enumerate(regions(addresses).most_common(4)):
            instructions = disassemble(low, high, addresses, Path(scratch))
            for count, mnemonic, _ in instructions:
                mnemonics[mnemonic] += count
            path = out / f"region{number}.s"
            path.write_text("".join(f"{count:6d} {line}\n" for count, _, line in instructions))
            print(f"{path}: {hits} samples, {high - low} bytes of code")
    total = sum(mnemonics.values()) or 1
    print(f"samples of JIT code by instruction ({args.case} on {env.device.name}):")
    for mnemonic, count in mnemonics.most_common(15):
        print(f"  {mnemonic:14s} {100 * count / total:5.1f}%")


if __name__ == "__main__":
    main()
