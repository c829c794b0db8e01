"""Convolution over NCHW arrays, built from views (padding, sliding windows) feeding a matmul: no
im2col buffer is ever materialised. The 1-D forms (NCL) are the 2-D ones over a height of one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from descent.arguments import Pair, Single, natural, pair, single
from descent.errors import ShapeError, at_user_line
from descent.graph import ops
from descent.graph.array import Array, array_argument, takes_array
from descent.graph.dtype import float32
from descent.graph.linalg import matmul_in_units
from descent.graph.node import ConvWindows


def padding_mode(op: str, padding: str, stride: tuple[int, ...]) -> None:
    """PyTorch's string paddings: 'valid' (none) and 'same' (the output keeps the input's size), which
    it takes for a stride of 1 only."""
    if padding not in ("valid", "same"):
        raise ValueError(at_user_line(f"{op}: padding must be a number, one per axis, 'valid' or 'same', "
                                      f"got {padding!r}"))
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError(at_user_line(f"{op}: padding='same' needs a stride of 1, as PyTorch's, got stride {stride}"))


def _same(x: Array, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[Array, tuple[int, ...]]:
    """padding='same' as PyTorch pads: d * (k - 1) in all on each axis, half before; where that is odd,
    the extra one after, padded into x here. Returns x and the padding left for both sides."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    extra = [(0, 0)] * (x.ndim - len(kernel)) + [(0, total % 2) for total in totals]
    return ops.pad(x, extra) if any(after for _, after in extra) else x, tuple(total // 2 for total in totals)


def _unbatched(function: Callable[..., Array], x: Array, *args: Any) -> Array:
    """`function` of one unbatched input: of x[None], without the batch axis."""
    return ops.squeeze(function(ops.expand_dims(x, 0), *args), 0)


def _check_operands(op: str, w: Any, bias: Any) -> None:
    """A convolution's weight and bias (if any) are Arrays."""
    for value in (w,) if bias is None else (w, bias):
        array_argument(op, value)


def _check_conv(op: str, x: Array, w: Array, bias: Array | None, groups: int, spatial: int) -> None:
    """Shapes of a convolution's operands: x (N, C, *S), w (O, C // groups, *K), bias (O,)."""
    if w.ndim == 2 + spatial and min(w.shape[2:]) < 1:
        raise ShapeError(at_user_line(f"{op}: weight {w.shape} has a kernel size of 0; each must be at least 1"))
    layout = "NCL, OIK" if spatial == 1 else "NCHW, OIHW"
    natural(op, "groups", groups, least=1)
    if x.ndim != 2 + spatial or w.ndim != 2 + spatial:
        raise ShapeError(at_user_line(
            f"{op}: input {x.shape} and weight {w.shape} must both be {2 + spatial}-D ({layout})"))
    c, (o, cg) = x.shape[1], w.shape[:2]
    if c != cg * groups or o % groups:
        kernel = "K" if spatial == 1 else "KH, KW"
        raise ShapeError(at_user_line(
            f"{op}: input {x.shape} with {groups} group(s) needs weight (O, {c // groups}, {kernel}) "
            f"with O divisible by {groups}; got weight {w.shape}"))
    _check_bias(op, bias, o)


def _check_bias(op: str, bias: Array | None, outputs: int) -> None:
    if bias is not None and bias.shape != (outputs,):
        raise ShapeError(at_user_line(f"{op}: bias {bias.shape} must have shape ({outputs},)"))


def check_fits(op: str, x: Array, kernel: tuple[int, ...], padding: tuple[int, ...],
                dilation: tuple[int, ...]) -> None:
    """Each window (kernel sizes over the last axes, dilated) fits inside the padded input."""
    if x.ndim < len(kernel):
        axes = "an array with a last axis" if len(kernel) == 1 else f"at least {len(kernel)} axes"
        raise ShapeError(at_user_line(f"{op}: needs {axes} to slide along, got shape {x.shape}"))
    sizes = x.shape[x.ndim - len(kernel):]
    for size, k, p, d in zip(sizes, kernel, padding, dilation):
        if d * (k - 1) + 1 > size + 2 * p:
            shown = kernel[0] if len(kernel) == 1 else kernel
            raise ShapeError(at_user_line(f"{op}: kernel {shown} (dilation {d}, padding {p}) does not fit input "
                                          f"{x.shape}"))


def _check_transpose_settings(op: str, groups: int, output_padding: tuple[int, ...], stride: tuple[int, ...],
                              dilation: tuple[int, ...]) -> None:
    """Groups of at least one, and output padding below the stride or the dilation, as PyTorch."""
    natural(op, "groups", groups, least=1)
    if any(p >= max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
        raise ShapeError(at_user_line(f"{op}: output_padding {output_padding} must be smaller than the stride "
                                      f"{stride} or the dilation {dilation}"))


def _check_transpose_output(op: str, sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                            padding: tuple[int, ...], output_padding: tuple[int, ...],
                            dilation: tuple[int, ...]) -> None:
    """Every output size of a transposed convolution is at least 1 (PyTorch: "Output size is too small")."""
    out = tuple((n - 1) * s - 2 * p + d * (k - 1) + q + 1
                for n, k, s, p, q, d in zip(sizes, kernel, stride, padding, output_padding, dilation))
    if min(out) < 1:
        raise ShapeError(at_user_line(f"{op}: given input size per channel {sizes}, the calculated output size per "
                                      f"channel {out} is too small (padding {padding})"))


def height_of_one(a: Array, op: str) -> Array:
    """(..., L) as (..., 1, L): the 1-D operations are the 2-D ones over a height of one."""
    if a.ndim == 0:
        raise ShapeError(at_user_line(f"{op}: needs an array with a last axis to slide along, got a scalar"))
    return ops.reshape(a, a.shape[:-1] + (1, a.shape[-1]))


@takes_array
def conv2d(x: Array, w: Array, bias: Array | None = None, stride: Pair = 1, padding: Pair | str = 0,
           dilation: Pair = 1, groups: int = 1) -> Array:
    """2-D cross-correlation as PyTorch: x (N, C, H, W) or unbatched (C, H, W), w (O, C // groups, KH, KW),
    bias (O,); padding a number, a pair, 'valid' or 'same'."""
    _check_operands("conv2d", w, bias)
    if x.ndim == 3 and w.ndim == 4:  # unbatched (C, H, W), as PyTorch's
        return _unbatched(conv2d, x, w, bias, stride, padding, dilation, groups)
    stride, dilation = pair(stride, "conv2d: stride"), pair(dilation, "conv2d: dilation")
    _check_conv("conv2d", x, w, bias, groups, 2)
    if isinstance(padding, str):
        padding_mode("conv2d", padding, stride)
        x, padding = _same(x, w.shape[2:], dilation) if padding == "same" else (x, (0, 0))
    padding = pair(padding, "conv2d: padding", 0)
    check_fits("conv2d", x, w.shape[2:], padding, dilation)
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    padded = ops.pad(ops.astype(x, float32), [(0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])])
    patches = ops.windows(padded, (kh, kw), stride, dilation)  # (N, C, OH, OW, KH, KW)
    oh, ow = patches.shape[2], patches.shape[3]
    columns = patches.transpose(0, 1, 4, 5, 2, 3).reshape(n, groups, cg * kh * kw, oh * ow)
    kernels = w.reshape(groups, o // groups, cg * kh * kw)
    windows = ConvWindows(groups, cg, (kh, kw), (oh, ow)) if stride == dilation == (1, 1) else None
    out = matmul_in_units(kernels, columns, 1, windows).reshape(n, o, oh, ow)

    def gradients(cotangent: Array) -> tuple[Array, Array]:
        """The input's gradient as a transposed convolution (no window-sized intermediate); the weight's
        as one product over every batch element and position, split where long between whole
        images. Both read the cotangent many times, so it is computed once."""
        cotangent = ops.contiguous(cotangent)
        extra = [x.shape[2 + k] - ((out.shape[2 + k] - 1) * stride[k] - 2 * padding[k]
                                   + dilation[k] * ((kh, kw)[k] - 1) + 1) for k in range(2)]
        dx = conv_transpose2d(cotangent, w, None, stride, padding, tuple(extra), groups, dilation)
        flat = cotangent.reshape(n, groups, o // groups, oh * ow).transpose(1, 2, 0, 3)
        rows = columns.transpose(1, 0, 3, 2).reshape(groups, n * oh * ow, cg * kh * kw)
        dw = matmul_in_units(flat.reshape(groups, o // groups, n * oh * ow), rows, oh * ow).reshape(o, cg, kh, kw)
        return dx, dw

    out = out.scope.custom_gradient(out, (x, w), gradients)
    if bias is not None:
        out = out + bias.reshape(o, 1, 1)
    return out


@takes_array
def conv1d(x: Array, w: Array, bias: Array | None = None, stride: Single = 1, padding: Single | str = 0,
           dilation: Single = 1, groups: int = 1) -> Array:
    """1-D cross-correlation as PyTorch: x (N, C, L) or unbatched (C, L), w (O, C // groups, K), bias (O,);
    padding a number, 'valid' or 'same'."""
    _check_operands("conv1d", w, bias)
    if x.ndim == 2 and w.ndim == 3:  # unbatched (C, L), as PyTorch's
        return _unbatched(conv1d, x, w, bias, stride, padding, dilation, groups)
    stride, dilation = single(stride, "conv1d: stride"), single(dilation, "conv1d: dilation")
    _check_conv("conv1d", x, w, bias, groups, 1)
    if isinstance(padding, str):
        padding_mode("conv1d", padding, (stride,))
        x, (padding,) = _same(x, w.shape[2:], (dilation,)) if padding == "same" else (x, (0,))
    padding = single(padding, "conv1d: padding", 0)
    check_fits("conv1d", x, w.shape[2:], (padding,), (dilation,))
    x, w = height_of_one(x, "conv1d"), height_of_one(w, "conv1d")
    out = conv2d(x, w, bias, (1, stride), (0, padding), (1, dilation), groups)
    return ops.reshape(out, out.shape[:2] + out.shape[3:])


@takes_array
def conv_transpose1d(x: Array, w: Array, bias: Array | None = None, stride: Single = 1, padding: Single = 0,
                     output_padding: Single = 0, groups: int = 1, dilation: Single = 1) -> Array:
    """The transpose (gradient) of conv1d, as PyTorch (its argument order too: groups before dilation):
    x (N, C, L) or (C, L), w (C, O // groups, K)."""
    _check_operands("conv_transpose1d", w, bias)
    if x.ndim == 2 and w.ndim == 3:  # unbatched (C, L), as PyTorch's
        return _unbatched(conv_transpose1d, x, w, bias, stride, padding, output_padding, groups, dilation)
    stride, padding = single(stride, "conv_transpose1d: stride"), single(padding, "conv_transpose1d: padding", 0)
    output_padding = single(output_padding, "conv_transpose1d: output_padding", 0)
    dilation = single(dilation, "conv_transpose1d: dilation")
    _check_transpose_settings("conv_transpose1d", groups, (output_padding,), (stride,), (dilation,))
    if x.ndim != 3 or w.ndim != 3 or w.shape[0] != x.shape[1] or x.shape[1] % groups:
        raise ShapeError(at_user_line(f"conv_transpose1d: weight {w.shape} (C, O // groups, K) does not fit "
                                      f"input {x.shape} (N, C, L) with {groups} group(s)"))
    _check_bias("conv_transpose1d", bias, w.shape[1] * groups)
    _check_transpose_output("conv_transpose1d", x.shape[2:], w.shape[2:], (stride,), (padding,), (output_padding,),
                            (dilation,))
    x, w = height_of_one(x, "conv_transpose1d"), height_of_one(w, "conv_transpose1d")
    out = conv_transpose2d(x, w, bias, (1, stride), (0, padding), (0, output_padding), groups, (1, dilation))
    return ops.reshape(out, out.shape[:2] + out.shape[3:])


@takes_array
def conv_transpose2d(x: Array, w: Array, bias: Array | None = None, stride: Pair = 1, padding: Pair = 0,
                     output_padding: Pair = 0, groups: int = 1, dilation: Pair = 1) -> Array:
    """The transpose (gradient) of conv2d, as PyTorch (its argument order too: groups before dilation):
    x (N, C, H, W) or (C, H, W), w (C, O // groups, KH, KW).
    Computed as conv2d over the input with zeros inserted between its elements (a masked view)."""
    _check_operands("conv_transpose2d", w, bias)
    if x.ndim == 3 and w.ndim == 4:  # unbatched (C, H, W), as PyTorch's
        return _unbatched(conv_transpose2d, x, w, bias, stride, padding, output_padding, groups, dilation)
    stride, padding = pair(stride, "conv_transpose2d: stride"), pair(padding, "conv_transpose2d: padding", 0)
    output_padding = pair(output_padding, "conv_transpose2d: output_padding", 0)
    dilation = pair(dilation, "conv_transpose2d: dilation")
    _check_transpose_settings("conv_transpose2d", groups, output_padding, stride, dilation)
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(at_user_line(f"conv_transpose2d: input {x.shape} and weight {w.shape} must be 4-D"))
    n, c, h, wd = x.shape
    ci, og, kh, kw = w.shape
    if ci != c or c % groups:
        raise ShapeError(at_user_line(f"conv_transpose2d: weight {w.shape} does not fit input {x.shape} "
                                      f"with {groups} group(s)"))
    _check_bias("conv_transpose2d", bias, og * groups)
    _check_transpose_output("conv_transpose2d", (h, wd), (kh, kw), stride, padding, output_padding, dilation)
    dilated = x
    if stride != (1, 1) and x.size == 0:  # no elements to space out (slicing to an empty view is refused)
        spaced = (n, c, (h - 1) * stride[0] + 1 if h else 0, (wd - 1) * stride[1] + 1 if wd else 0)
        dilated = ops.broadcast_to(x.scope.constant(0, x.dtype), spaced)
    elif stride != (1, 1):  # zeros between the elements; a longer index chain, so only when needed
        dilated = x.reshape(n, c, h, 1, wd, 1)
        dilated = ops.pad(dilated, [(0, 0), (0, 0), (0, 0), (0, stride[0] - 1), (0, 0), (0, stride[1] - 1)])
        dilated = dilated.reshape(n, c, h * stride[0], wd * stride[1])
        dilated = dilated[:, :, : (h - 1) * stride[0] + 1, : (wd - 1) * stride[1] + 1]
    edge = [dilation[k] * ((kh, kw)[k] - 1) - padding[k] for k in range(2)]
    widths = [(0, 0), (0, 0), (edge[0], edge[0] + output_padding[0]), (edge[1], edge[1] + output_padding[1])]
    flipped = w.reshape(groups, c // groups, og, kh, kw).transpose(0, 2, 1, 3, 4)
    # reversed, the weights cannot be read as vec4s: a CPU driver's matmul gets them copied (a few
    # KiB; conv 16->32's input gradient on lavapipe 1.15-1.2x faster), a GPU's reads them in place
    flipped = ops.contiguous(flipped.reshape(groups * og, c // groups, kh, kw)[:, :, ::-1, ::-1])
    return conv2d(ops.pad(dilated, widths), flipped, bias, 1, 0, dilation, groups)


