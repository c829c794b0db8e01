"""What one memory access and one FMA cost per invocation on the current device, and what one more
dispatch costs in a recorded sequence: the numbers that decide kernel design there (on lavapipe
every storage-buffer access is emulated lane by lane, so loads, not arithmetic, set the speed of
every kernel; a texel fetch is one vector gather).

    .venv/bin/python -m benchmarks.access_costs
"""

from __future__ import annotations

import numpy as np

import descent as dc
from benchmarks.timing import best_of
from descent.compile.spirv import compile_glsl
from descent.runtime import vulkan
from descent.runtime.vulkan import TEXEL_FORMATS

ELEMENTS = 1 << 20
REPEATS = 64  # accesses or FMAs per invocation in each kernel
LOCAL = 64
HEADER = f"""#version 450
layout(local_size_x = {LOCAL}) in;
layout(std430, binding = 0) readonly buffer Source {{ float source[]; }};
layout(std430, binding = 0) readonly buffer SourceVectors {{ vec4 source_vectors[]; }};
layout(std430, binding = 1) writeonly buffer Result {{ float result[]; }};
layout(binding = 2) uniform samplerBuffer source_texels;
shared float tile[{LOCAL}];
"""
BODIES = {
    "no access (baseline)": "",
    "storage float, address per invocation": f"value += source[(i + k * 64) % {ELEMENTS}];",
    "storage float, address per workgroup": f"value += source[(group + k * 64) % {ELEMENTS}];",
    "texel buffer float, address per invocation": f"value += texelFetch(source_texels, (i + k * 64) % {ELEMENTS}).r;",
    "storage vec4, address per invocation": f"value += dot(source_vectors[(i + k * 64) % {ELEMENTS // 4}], vec4(1.0));",
    "shared float": f"value += tile[(lane + k) % {LOCAL}];",
    "fma": "value = value * 0.999 + 0.5;",
}


def _kernel(body: str) -> str:
    return HEADER + f"""void main() {{
    int i = int(gl_GlobalInvocationID.x);
    int group = int(gl_WorkGroupID.x);
    int lane = int(gl_LocalInvocationID.x);
    tile[lane] = float(lane);
    barrier();
    float value = float(i);
    for (int k = 0; k < {REPEATS}; k++) {{
        {body}
    }}
    result[i] = value;
}}
"""


def costs(env: dc.Environment, invocations: int = ELEMENTS // 16) -> dict[str, float]:
    """Nanoseconds per access (or FMA) per invocation, over the no-access baseline kernel."""
    source = env.parameter("access_costs_source", (ELEMENTS,), init=np.ones(ELEMENTS, np.float32))
    result = env.parameter("access_costs_result", (ELEMENTS,))
    tensors = [env.tensor(source.name), env.tensor(result.name), env.tensor(source.name)]
    formats = (0, 0, TEXEL_FORMATS["float", 1])
    seconds = {}
    for name, body in BODIES.items():
        spirv = compile_glsl(_kernel(body), "access_costs")
        _, algorithm = env.algorithm(tensors, spirv, (invocations // LOCAL, 1, 1), formats)
        sequence = env.device.manager.sequence()
        sequence.record(env.kp.OpAlgoDispatch(algorithm))
        seconds[name] = best_of(sequence.eval, repeats=3, min_time=0.1)
    baseline = seconds.pop("no access (baseline)")
    return {name: (s - baseline) / invocations / REPEATS * 1e9 for name, s in seconds.items()}


TINY = """#version 450
layout(local_size_x = 8) in;
layout(std430, binding = 0) buffer Values { float values[]; };
void main() {
    values[gl_GlobalInvocationID.x] += 1.0;
}
"""


def dispatch_costs(env: dc.Environment, counts: tuple[int, ...] = (1, 14, 56)) -> dict[int, float]:
    """Microseconds to replay a recorded sequence of `count` tiny dependent dispatches (barriers
    between), submission and wait included, per count."""
    values = env.parameter("access_costs_tiny", (64,))
    tensor = env.tensor(values.name)
    _, algorithm = env.algorithm([tensor], compile_glsl(TINY, "access_costs_tiny"), (1, 1, 1), (0,))
    barrier = env.kp.OpMemoryBarrier([tensor], vulkan.ACCESS_SHADER_WRITE,
                                     vulkan.ACCESS_SHADER_READ | vulkan.ACCESS_SHADER_WRITE,
                                     vulkan.STAGE_COMPUTE_SHADER, vulkan.STAGE_COMPUTE_SHADER)
    micros = {}
    for count in counts:
        sequence = env.device.manager.sequence()
        for k in range(count):
            if k:
                sequence.record(barrier)
            sequence.record(env.kp.OpAlgoDispatch(algorithm))
        micros[count] = best_of(sequence.eval, repeats=5, min_time=0.1) * 1e6
    return micros


def main() -> None:
    env = dc.Environment()
    print(f"cost per invocation on {env.device.name} ({REPEATS} per invocation, {ELEMENTS // 16:,} invocations)")
    for name, nanoseconds in costs(env).items():
        print(f"  {name:46s} {nanoseconds:8.3f} ns")
    micros = dispatch_costs(env)
    (fewest, alone), (most, longest) = list(micros.items())[0], list(micros.items())[-1]
    listed = ", ".join(f"{count}: {us:.0f} us" for count, us in micros.items())
    print(f"replay of a sequence of tiny dispatches: {listed}; "
          f"{(longest - alone) / (most - fewest):.1f} us per dispatch beyond the first")


if __name__ == "__main__":
    main()
