"""Two-stage folds: a sum or a matrix product with few outputs and a long fold becomes partial
results over chunks plus a short sum, so a GPU gets enough workgroups to fill it."""

from __future__ import annotations

REDUCE_OUTPUTS = 4096  # partial sums a long reduction should offer (one workgroup each)
REDUCE_MIN_CHUNK = 1024  # elements per partial sum, at least
MATMUL_SPLIT_BELOW = 1 << 14  # output elements below which 16 x 16 tiles give too few workgroups
MATMUL_OUTPUTS = 1 << 18  # output elements (with chunks) a split matrix product should offer
MATMUL_MIN_CHUNK = 128  # depth per partial product, at least
MATMUL_MIN_WORK = 1 << 22  # multiply-adds below which one kernel is fast enough
MATMUL_LONG_FOLD = 1 << 15  # depth split whatever the size: longer loops starve a GPU and outrun lavapipe's


def chunks(outputs: int, extent: int, target: int, min_chunk: int, unit: int = 1) -> int:
    """How many equal chunks to fold `extent` elements per output in: enough to bring outputs x chunks
    towards `target` with at least `min_chunk` elements each; the count divides `extent`; 1 = no split.
    Where `unit` (a divisor of `extent`) is given, a chunk is whole runs of `unit` consecutive elements
    or an equal part of one (a convolution's images: a fold that straddles them computes its indices
    the long way), unless that leaves fewer than half as many chunks as splitting anywhere."""
    if unit < 1 or extent % unit:
        raise ValueError(f"chunks: unit {unit} does not divide the fold of {extent} elements")
    want = min(-(-target // max(outputs, 1)), extent // min_chunk)
    counts = [count for count in range(want, 1, -1) if extent % count == 0]
    anywhere = counts[0] if counts else 1
    aligned = next((count for count in counts if (extent // count) % unit == 0 or unit % (extent // count) == 0), 1)
    return aligned if 2 * aligned >= anywhere else anywhere
