"""Matrix products: shared-memory tiles on a GPU; register blocks, or subgroup shuffles, on a CPU driver."""

from __future__ import annotations

from descent.codegen.builder import (
    DeviceShape,
    KernelBuilder,
    KernelSource,
    fits_loops,
    function,
    grid,
    require_loops,
    row_major,
)
from descent.codegen.index import Index, Var, render, split_aligned
from descent.graph.dtype import float32
from descent.graph.view import is_masked
from descent.schedule.fuse import input_contexts, node_of

CPU_BLOCKS = ((16, 16), (8, 8), (4, 4))  # register blocks (rows, columns) of the CPU matmul: plain large,
# fused large, small products; columns in fours, so that where N is a multiple of 4 so is every block
MATMUL_DEPTH = 8  # depth of the shared slices of A and B
SUBGROUP_TILES_PER_GROUP = 16  # a CPU driver pays per workgroup: with a short K, 16 tiles a workgroup
# were 1.2-1.25x one on lavapipe
CPU_MIN_WORKGROUPS = 64  # ... while leaving this many workgroups to share among the cores
# tiles go down the rows first where a strip of B (K x 4 * LANES floats) is at most this many bytes; on
# lavapipe that was 1.1x faster for 100x784x300 and 1000x784x300, and 1.3x slower for 2048^3 and 4096^3
SUBGROUP_ROWS_FIRST_STRIP = 128 * 1024
MIN_MATMUL_WORKGROUPS = 256  # below this, smaller tiles: more workgroups beat more reuse per workgroup


def _tiles(m: int, n: int, batch: int) -> tuple[int, int]:
    """Output tile of one workgroup: up to 128 x 128, halved while the grid would leave a GPU idle."""
    tile_m, tile_n = (128 if e > 64 else 64 if e > 32 else 32 if e > 16 else 16 for e in (m, n))
    while -(-m // tile_m) * -(-n // tile_n) * batch < MIN_MATMUL_WORKGROUPS and max(tile_m, tile_n) > 16:
        if tile_m >= tile_n:
            tile_m //= 2
        else:
            tile_n //= 2
    return tile_m, tile_n


def matmul(parts: KernelBuilder, core, operands, device: DeviceShape) -> KernelSource:
    """A batched product of the kernel's two operands ((node, view chain) each), in the template
    the device suits."""
    kernel = parts.kernel
    (a, chain_a), (b, chain_b) = operands
    *_, m, n = core.shape
    k = node_of(parts.graph, a).shape[-1]
    batch = kernel.size // (m * n)
    a_axes, b_axes = operand_axes(batch, m, k), operand_axes(batch, k, n)
    # the operands' element loads, defined below only where a kernel calls them (vector reads do not)
    load_a = parts.load_function("load_a", a, chain_a, float32, a_axes)
    load_b = parts.load_function("load_b", b, chain_b, float32, b_axes)
    lanes = device.subgroup_size
    vector_b = None
    if device.cpu and device.shuffle and lanes % 4 == 0 and n >= 2 * lanes and n % 4 == 0:
        # measured on lavapipe: 1.2-1.5x the direct kernel where B is a plain buffer, slower where
        # B is computed (four loads a lane per step of K then cost more than the shuffles save)
        # B is read as vec4s along its rows or, transposed (a dense layer's input gradient), along K
        vector_b = next(((read, along) for along in ("col", "row")
                         if (read := _vector_read(parts, b, chain_b, b_axes, along))), None)
    store_quads = device.cpu and n % 4 == 0  # a lane's four adjacent outputs stored together
    if store_quads:
        functions = parts.quad_store_function(kernel.core)
    else:
        functions = parts.store_function("float acc", {kernel.core: "acc"}, hoist=True)
    fused = any(op != "contiguous" for op in parts.ops)  # computes more than it loads
    parts.ops.append("matmul")
    parts.locations.append(core.location)
    if vector_b:
        return _subgroup_matmul(parts, (a, chain_a), load_a, vector_b, (batch, m, k, n), device, functions)
    if device.cpu:
        # lavapipe compiles at first dispatch: a 16 x 16 block with fused loads or an optimiser
        # update in its stores unrolls into code LLVM needs ~50 s for; 8 x 8 takes ~3 s
        block = CPU_BLOCKS[2] if m * n * k < 1 << 12 else CPU_BLOCKS[1] if fused else CPU_BLOCKS[0]
        return _direct_matmul(parts, operands, (load_a, load_b), (batch, m, k, n), block, store_quads, device,
                              functions)
    return _tiled_matmul(parts, operands, (load_a, load_b), (batch, m, k, n), device, functions)


def _direct_matmul(parts: KernelBuilder, operands, loads: tuple[str, str], sizes: tuple[int, int, int, int],
                   block: tuple[int, int], store_quads: bool, device: DeviceShape, functions: str) -> KernelSource:
    """A CPU driver's matmul in register blocks of up to `block` outputs a thread: matmul_direct_vec4
    where an operand is read as vec4s along its rows, else matmul_direct, element by element."""
    (a, chain_a), (b, chain_b) = operands
    load_a, load_b = loads
    batch, m, k, n = sizes
    a_axes, b_axes = operand_axes(batch, m, k), operand_axes(batch, k, n)
    read_a, read_b = _vector_read(parts, a, chain_a, a_axes, "col"), _vector_read(parts, b, chain_b, b_axes, "col")
    vector = bool(read_a or read_b)
    block_m, block_n = min(block[0], m), min(block[1], -(-n // 4) * 4 if vector else n)
    if vector:
        functions += "\n" + _fetch_function("fetch_a", "load_a", load_a, read_a, (m, k), (block_m, 4), 4)
        functions += "\n" + _fetch_function("fetch_b", "load_b", load_b, read_b, (k, n), (4, block_n), 4)
    else:
        functions += "\n" + load_a + "\n" + load_b
    depth = 4 if vector else 2  # matmul_direct_vec4's steps of K, matmul_direct's (DEPTH)
    load_trips = depth * (block_m * parts.call_trips["load_a"] + block_n * parts.call_trips["load_b"])
    stores = block_m * block_n // (4 if store_quads else 1) * parts.call_trips[
        "store_quad" if store_quads else "store_output"]
    require_loops(parts, f"a matmul over K = {k}", -(-k // depth) * (1 + load_trips) + stores, device)
    blocks = batch * -(-m // block_m) * -(-n // block_n)
    # one subgroup (a CPU driver's SIMD width) per workgroup: the most workgroups to share among cores
    workgroups = grid(-(-blocks // device.subgroup_size), device.max_groups)
    return parts.fill("matmul_direct_vec4" if vector else "matmul_direct", workgroups, BATCH=batch, M=m, N=n,
                      K=k, BLOCK_M=block_m, BLOCK_N=block_n, LOCAL_SIZE=device.subgroup_size,
                      STORE_QUADS=int(store_quads), FUNCTIONS=functions)


def _tiled_matmul(parts: KernelBuilder, operands, loads: tuple[str, str], sizes: tuple[int, int, int, int],
                  device: DeviceShape, functions: str) -> KernelSource:
    """A GPU's matmul in matmul.comp: a workgroup stages tiles of A and B in shared memory, as vectors
    where they are read along rows."""
    (a, chain_a), (b, chain_b) = operands
    load_a, load_b = loads
    batch, m, k, n = sizes
    a_axes, b_axes = operand_axes(batch, m, k), operand_axes(batch, k, n)
    tile_m, tile_n = _tiles(m, n, batch)
    width = min(4, tile_m // 16, tile_n // 16)
    shallowest = max(256 * width // tile_m, 256 * width // tile_n)  # each thread stages whole vectors
    tile_k = max(MATMUL_DEPTH, shallowest)
    while (tile_m + width + tile_n) * tile_k * 4 > device.shared_memory and tile_k > shallowest:
        tile_k //= 2
    workgroups = (-(-n // tile_n), -(-m // tile_m), batch)
    require_loops(parts, f"a matmul over K = {k}", -(-k // tile_k) * (tile_k + 4), device)
    read_a = _vector_read(parts, a, chain_a, a_axes, "col", width)
    read_b = _vector_read(parts, b, chain_b, b_axes, "col", width)
    functions += "\n" + _fetch_function("fetch_a", "load_a", load_a, read_a, (m, k), (tile_m, tile_k), width)
    functions += "\n" + _fetch_function("fetch_b", "load_b", load_b, read_b, (k, n), (tile_k, tile_n), width)
    return parts.fill("matmul", workgroups, BATCH=batch, M=m, N=n, K=k, TILE_M=tile_m, TILE_N=tile_n,
                      TILE_K=tile_k, WIDTH=width, VEC=_vector(width), PART="v" if width == 1 else "v[c]",
                      FUNCTIONS=functions)


def operand_axes(batch: int, rows: int, cols: int) -> tuple[tuple[str, int], ...]:
    """The index variables a matmul operand is loaded at: (batch, row, col)."""
    return ("batch", batch), ("row", rows), ("col", cols)


def _subgroup_matmul(parts: KernelBuilder, a, load_a: str, vector_b: tuple[str, str], sizes: tuple[int, int, int, int],
                     device: DeviceShape, functions: str) -> KernelSource:
    """A CPU driver's matmul in matmul_subgroup.comp: `fetch_part` loads a lane's share of each
    LANES x LANES slice of A, as vec4s along K or along rows where `_vector_read` finds them, else
    element by element; `fetch_slice` fetches the lane's four columns of B over the slice: a vec4
    along a row of B per step of K, or along K per column where B is transposed (`vector_b`: the
    read and its axis). Only the last slice (`tail`) checks the end of K."""
    batch, m, k, n = sizes
    lanes = device.subgroup_size
    a_axes = operand_axes(batch, m, k)
    along_k = _vector_read(parts, *a, a_axes, "col")
    along_rows = None if along_k else _vector_read(parts, *a, a_axes, "row")
    # rows past M and columns past N are read clamped to the last one, not branched around: their
    # sums are never stored. Steps past K must add zero, and only the tail slice checks for them.
    rows = [f"row = min(row, {m - (4 if along_rows else 1)});"] if m % lanes else []
    a_tail = f"tail && col >= {k}" if k % lanes else ""
    if along_k:  # the lane's row, LANES steps of K as PARTS vec4s
        shared = "part[(j) / 4][(j) % 4], uint(r)"
        lines = ["int row = row0 + lane;", *rows, "int col = k0 + 4 * q;", *_zero_outside(a_tail), f"return {along_k};"]
    elif along_rows:  # the LANES rows, at the lane's step of K
        shared = "part[(r) / 4][(r) % 4], uint(j)"
        lines = ["int row = row0 + 4 * q;", *rows, "int col = k0 + lane;", *_zero_outside(a_tail),
                 f"return {along_rows};"]
    else:
        shared = "part[(r) / 4][(r) % 4], uint(j)"
        functions += "\n" + load_a
        value = f"{a_tail} ? 0.0 : load_a(batch, row, col)" if a_tail else "load_a(batch, row, col)"
        lines = ["vec4 part;", "int col = k0 + lane;", "for (int c = 0; c < 4; c++) {",
                 "    int row = row0 + 4 * q + c;", *(f"    {line}" for line in rows), f"    part[c] = {value};", "}",
                 "return part;"]
    functions += "\n" + function("vec4 fetch_part(int batch, int row0, int k0, int lane, int q, bool tail)", lines)
    functions += f"\n#define A_VALUE(part, r, j) subgroupShuffle({shared})\n"
    b_tail = f"tail && row >= {k}" if k % lanes else ""
    read, along = vector_b
    if along == "col":  # a row of B: the lane's four columns at one step of K
        columns = [f"col = min(col, {n - 4});"] if n % (4 * lanes) else []
        slice_lines = ["for (int j = 0; j < LANES; j++) {", "    b[j] = fetch_b(batch, k0 + j, col, tail);", "}"]
    else:  # a column of B: four steps of K at one of the lane's columns
        columns = [f"col = min(col, {n - 1});"] if n % (4 * lanes) else []
        slice_lines = ["for (int c = 0; c < 4; c++) {", "    for (int h = 0; h < PARTS; h++) {",
                       "        vec4 steps = fetch_b(batch, k0 + 4 * h, col + c, tail);",
                       "        for (int e = 0; e < 4; e++) {", "            b[4 * h + e][c] = steps[e];", "        }",
                       "    }", "}"]
    lines = [*columns, *_zero_outside(b_tail), f"return {read};"]
    functions += "\n" + function("vec4 fetch_b(int batch, int row, int col, bool tail)", lines)
    functions += "\n" + function("void fetch_slice(int batch, int k0, int col, bool tail, out vec4 b[LANES])",
                                  slice_lines)
    tiles = batch * -(-m // lanes) * -(-n // (4 * lanes))
    per_group = max(1, min(SUBGROUP_TILES_PER_GROUP, tiles // CPU_MIN_WORKGROUPS))
    tile_trips = (k // lanes + 1) * (1 + lanes * parts.call_trips["load_a"]) + lanes * parts.call_trips["store_quad"]
    while per_group > 1 and not fits_loops(per_group * tile_trips, device):  # each tile loops over K
        per_group //= 2
    require_loops(parts, f"a matmul over K = {k}", per_group * tile_trips, device)
    rows_first = k * 4 * lanes * 4 <= SUBGROUP_ROWS_FIRST_STRIP
    return parts.fill("matmul_subgroup", grid(-(-tiles // per_group), device.max_groups), BATCH=batch, M=m, N=n, K=k,
                      LANES=lanes, PER_GROUP=per_group, ROWS_FIRST=int(rows_first), FUNCTIONS=functions)


def _zero_outside(condition: str, vector: str = "vec4") -> list[str]:
    """Lines returning a zero `vector` where the condition (if any) holds."""
    return [f"if ({condition}) {{", f"    return {vector}(0.0);", "}"] if condition else []


def _vector_read(parts: KernelBuilder, operand: int, chain, axes: tuple[tuple[str, int], ...], along: str,
                 width: int = 4) -> str | None:
    """A read of `width` of the operand's elements from axis `along` (at a multiple of `width`) on,
    where it is a float buffer read through views that place them next to each other at an aligned
    offset: a vec4 texel fetch where the device reads texel buffers, else a vector view of the
    storage buffer; None where it is not."""
    sizes = dict(axes)
    if width == 1 or sizes[along] % width or (parts.texel_elements and width != 4):
        return None
    while operand not in parts.kernel.loads and node_of(parts.graph, operand).op in ("view", "contiguous"):
        ((operand, chain),) = input_contexts(node_of(parts.graph, operand), chain)
    buffer = parts.kernel.loads.get(operand)
    if buffer is None or is_masked(chain) or parts.table[buffer][1] != float32:
        return None
    index = parts.emitter(row_major(axes)).expression(chain)
    step = Var(along, sizes[along])
    if (step, 1) not in index.terms or any(step in _atoms(atom) for atom, _ in index.terms if atom != step):
        return None
    split = split_aligned(index + Index(((step, -1),)), width)  # the rest: whole vectors
    if split is None or split[1]:
        return None
    if not parts.texel_elements:
        return f"{parts.vector_view(buffer, _vector(width))}[({render(index)}) / {width}]"
    texels = parts.vector_texels(buffer)
    return texels and f"texelFetch({texels}, ({render(index)}) / 4)"


def _atoms(atom) -> set:
    """The variables an index atom depends on."""
    if isinstance(atom, Var):
        return {atom}
    return set().union(*(_atoms(inner) for inner, _ in atom.numerator.terms))


def _fetch_function(name: str, load: str, definition: str, read: str | None, shape: tuple[int, int],
                    tile: tuple[int, int], width: int) -> str:
    """`name(batch, row, col)`: `width` elements from (row, col) along a row of an operand's rows x
    cols matrices, zero past its edges: one vector `read` (from `_vector_read`) where there is one,
    else element by element through the function `load`, whose `definition` then comes first."""
    rows, cols = shape
    vector = _vector(width)
    if read:
        outside = [f"row >= {rows}"] * bool(rows % tile[0]) + [f"col >= {cols}"] * bool(cols % tile[1])
        lines = [*_zero_outside(" || ".join(outside), vector), f"return {read};"]
    else:
        inside = [f"row < {rows}"] * bool(rows % tile[0]) + [f"column < {cols}"] * bool(cols % tile[1] or cols % width)
        element = f"{load}(batch, row, column)"
        value = f"{' && '.join(inside)} ? {element} : 0.0" if inside else element
        lines = [f"{vector} group;", f"for (int j = 0; j < {width}; j++) {{", "    int column = col + j;",
                 f"    PART(group, j) = {value};", "}", "return group;"]
    fetch = function(f"{vector} {name}(int batch, int row, int col)", lines)
    return fetch if read else definition + "\n" + fetch


def _vector(width: int) -> str:
    return "float" if width == 1 else f"vec{width}"
