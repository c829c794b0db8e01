"""A CPU driver's direct convolution, for the products conv2d makes (stride and dilation 1)."""

from __future__ import annotations

from descent.codegen.builder import (
    DeviceShape,
    KernelBuilder,
    KernelSource,
    element_trips,
    fits_loops,
    grid,
    require_loops,
)
from descent.codegen.matmul import operand_axes
from descent.graph.dtype import float32
from descent.schedule.fuse import node_of

CONV_ACCUMULATORS = 448  # outputs a thread of the direct convolution sums in registers (lavapipe, ConvNet's
# conv 16->32 at batch 100: 16 channels x 2 rows x 14 columns was the fastest of the hand-written blocks tried)
CONV_BLOCK_M = 8  # output channels a block keeps while it narrows for the limits, before it takes one row
CONV_UNROLLED_TRIPS = 32  # longest loop Mesa unrolls on lavapipe (its max_unroll_iterations): a
# longer one leaves the thread's blocks in memory (conv 1->16 over 28 x 28 at batch 100, 56 trips: 2.3x slower)
CONV_UNROLLED = 4608  # multiply-adds of one channel's step: the driver compiles them unrolled at first dispatch


def conv_tile(parts: KernelBuilder, core, operands, device: DeviceShape) -> tuple[int, int] | None:
    """(BLOCK_M, ROWS) of conv_direct.comp for a matmul conv2d made, or None where the matmul is
    faster or the threads would not fit. With one input channel the matmul was faster (the
    ConvNet's conv 1->16 over 28 x 28 at batch 100 on lavapipe: 2.60 ms, direct 2.67-3.37 ms over
    six blocks from 2 x 2 to 16 x 1; a channel loop of one trip reuses nothing). A block holds at
    most CONV_ACCUMULATORS outputs and unrolls at most CONV_UNROLLED multiply-adds a channel, its
    output rows always whole, each of its loops at most CONV_UNROLLED_TRIPS long (an image too
    wide or a kernel too tall goes to the matmul), and a thread's loop trips fit the driver's
    limit."""
    windows = core.attrs
    *_, m, n = core.shape
    kh, kw = windows.kernel
    oh, ow = windows.output
    channels = windows.channels
    (a_id, chain_a), (b_id, chain_b) = operands
    a, b = node_of(parts.graph, a_id), node_of(parts.graph, b_id)
    if a.shape[-1] != channels * kh * kw or b.shape[-1] != n or n != oh * ow:
        return None
    if channels == 1 or max(ow + kw - 1, kh + 1) > CONV_UNROLLED_TRIPS:
        return None
    blocks, rows = -(-m // 16), min(2, oh)

    def fits(block_m: int, rows: int) -> bool:
        outputs = block_m * rows * ow
        return outputs <= CONV_ACCUMULATORS and outputs * kh * kw <= CONV_UNROLLED

    while not fits(-(-m // blocks), rows):
        if -(-m // blocks) > CONV_BLOCK_M or rows == 1:
            if blocks >= m:
                return None
            blocks *= 2
        else:
            rows = 1
    block_m = -(-m // blocks)
    batch = parts.kernel.size // (m * n)
    load_a = element_trips(parts, a_id, chain_a, operand_axes(batch, m, a.shape[-1]))
    load_b = element_trips(parts, b_id, chain_b, operand_axes(batch, a.shape[-1], n))
    trips = channels * (1 + block_m * kh * kw * load_a + (rows + kh - 1) * (ow + kw - 1) * load_b)
    return (block_m, rows) if fits_loops(trips, device) else None


def conv_direct(parts: KernelBuilder, core, operands, device: DeviceShape, tile: tuple[int, int]) -> KernelSource:
    """A CPU driver's matmul that conv2d made (stride and dilation 1), in conv_direct.comp: the left
    operand (the weights) loaded element by element, the right one (the windows over the padded
    input) at (batch, channel, ky, kx, y, x), whose ranges reduce its index to the input's row and
    column, each input element loaded once a thread."""
    kernel = parts.kernel
    windows = core.attrs
    block_m, rows = tile
    (a, chain_a), (b, chain_b) = operands
    *_, m, n = core.shape
    k = node_of(parts.graph, a).shape[-1]
    batch = kernel.size // (m * n)
    kh, kw = windows.kernel
    oh, ow = windows.output
    input_axes = (("batch", batch), ("channel", windows.channels), ("ky", kh), ("kx", kw), ("y", oh), ("x", ow))
    functions = parts.load_function("load_a", a, chain_a, float32, operand_axes(batch, m, k))
    functions += "\n" + parts.load_function("load_b", b, chain_b, float32, input_axes)
    store_quads = n % 4 == 0 and rows * ow % 4 == 0  # every block's outputs start at a multiple of 4
    if store_quads:
        functions = parts.quad_store_function(kernel.core) + "\n" + functions
    else:
        functions = parts.store_function("float acc", {kernel.core: "acc"}, hoist=True) + "\n" + functions
    stores = block_m * rows * ow // (4 if store_quads else 1) * parts.call_trips[
        "store_quad" if store_quads else "store_output"]
    loads = block_m * kh * kw * parts.call_trips["load_a"]
    loads += (rows + kh - 1) * (ow + kw - 1) * parts.call_trips["load_b"]
    require_loops(parts, f"a convolution over {windows.channels} channels", windows.channels * (1 + loads) + stores,
                   device)
    parts.ops.append("matmul")
    parts.locations.append(core.location)
    lanes = batch * -(-m // block_m) * -(-oh // rows)
    workgroups = grid(-(-lanes // device.subgroup_size), device.max_groups)
    return parts.fill("conv_direct", workgroups, BATCH=batch, M=m, N=n, K=k, CHANNELS=windows.channels, KH=kh,
                      KW=kw, OUT_H=oh, OUT_W=ow, BLOCK_M=block_m, ROWS=rows, LOCAL_SIZE=device.subgroup_size,
                      STORE_QUADS=int(store_quads), FUNCTIONS=functions)
