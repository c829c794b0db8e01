"""Two-stage folds: a sum or a matrix product with few outputs and a long fold becomes partial
results over chunks plus a short sum, so a GPU gets enough workgroups to fill it."""

from __future__ import annotations

REDUCE_OUTPUTS = 4096  # partial sums a long reduction should offer (one workgroup each)
REDUCE_MIN_CHUNK = 1024  # elements per partial sum, at least
MATMUL_SPLIT_BELOW = 1 << 14  # output elements below which 16 x 16 tiles give too few workgroups
MATMUL_OUTPUTS = 1 << 18  # output elements (with chunks) a split matrix product should offer
MATMUL_MIN_CHUNK = 128  # depth per partial product, at least
MATMUL_MIN_WORK = 1 << 22  # multiply-adds below which one kernel is fast enough


def chunks(outputs: int, extent: int, target: int, min_chunk: int, unit: int = 1) -> int:
    """How many equal chunks to fold `extent` elements per output in: enough to bring outputs x chunks
    towards `target` with at least `min_chunk` elements each; the count divides `extent`; 1 = no split.
    Each chunk holds whole `unit`s of consecutive elements (a convolution's images): a fold that
    straddles them computes its indices the long way."""
    units = extent // unit
    want = min(-(-target // max(outputs, 1)), units // -(-min_chunk // unit))
    for count in range(want, 1, -1):
        if units % count == 0:
            return count
    return 1
