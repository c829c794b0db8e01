"""Op builders: each checks shapes and types at build time and records nodes in the scope."""

from __future__ import annotations

import builtins
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from descent.arguments import is_integer
from descent.errors import DTypeError, GraphError, ShapeError, at_user_line
from descent.graph import view as views
from descent.graph.array import Array, array_argument, takes_array
from descent.graph.dtype import (
    DType,
    as_dtype,
    bool_,
    check_scalar,
    data_dtype,
    float32,
    int32,
    outside,
    promote,
    uint32,
)
from descent.graph.node import ViewOp
from descent.graph.optable import ELEMENTWISE
from descent.graph.view import Shape, broadcast_shapes, numel

if TYPE_CHECKING:
    from descent.graph.scope import Scope

Operand = Array | float | int | bool


def _scope_of(op: str, operands: Sequence[Any]):
    scopes = {id(x.scope): x.scope for x in operands if isinstance(x, Array)}
    if not scopes:
        raise GraphError(at_user_line(f"{op}: needs at least one Array operand"))
    if len(scopes) > 1:
        raise GraphError(at_user_line(f"{op}: operands come from different graphs"))
    return next(iter(scopes.values()))


def as_array(value: Operand, scope: Scope, dtype: DType | None = None) -> Array:
    """An Array of `scope` for `value`; Python scalars become inlined constants."""
    if isinstance(value, Array):
        if value.scope is not scope:
            raise GraphError(at_user_line("an Array from another graph was used in this one"))
        return value
    if isinstance(value, bool | int | float):
        return scope.constant(value, dtype)
    raise DTypeError(at_user_line(f"cannot use {type(value).__name__} as an Array operand"))


def _scalar_or_array(op: str, value: Any) -> Operand:
    """An operand as elementwise takes it: numpy scalars become Python scalars (weak, as those)."""
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, Array | bool | int | float):
        return value
    return array_argument(op, value)


def _check_signedness(op: str, dtypes: Sequence[DType]) -> None:
    """int32 with uint32 needs int64 to be exact (numpy's promotion), which descent lacks: refused
    rather than wrapped."""
    if int32 in dtypes and uint32 in dtypes:
        raise DTypeError(at_user_line(
            f"{op}: int32 and uint32 operands would need int64 to combine exactly (numpy promotes to it); "
            "cast one with astype first"))


def _check_weak_integers(op: str, operands: Sequence[Any], target: DType) -> None:
    """A Python integer must fit the integer type it takes (numpy 2 raises OverflowError too)."""
    for x in operands:
        if outside(x, target):
            check_scalar(op, x, target)


def _compared_outside(op: str, operands: Sequence[Any], target: DType) -> bool | None:
    """numpy 2's answer to comparing an integer Array with a Python integer its type cannot hold: the
    same for every element (`a < 2**40` is all true), or None where that is not the case."""
    if op not in _MIRRORED:
        return None
    for position, x in enumerate(operands):
        if outside(x, target):
            left_smaller = (position == 1) == (x > 0)
            return {"lt": left_smaller, "le": left_smaller, "gt": not left_smaller, "ge": not left_smaller,
                    "eq": False, "ne": True}[op]
    return None


_MIRRORED = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}
_BEYOND = 2**40  # beyond int32's and uint32's range, so compared as numpy does (_compared_outside)


def _integer_comparison(op: str, operands: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """numpy compares an integer Array with a Python float exactly (in float64), where float32 would
    round (16777217 == 16777216.0): the float becomes an integer that gives the same answers, one
    beyond the type's range where none within it does (NaN, infinities, eq with 2.5)."""
    if op not in _MIRRORED:
        return op, operands
    array, value, compared = *operands, op
    if isinstance(array, float):
        value, array, compared = array, value, _MIRRORED[op]
    if not (isinstance(array, Array) and array.dtype in (int32, uint32) and isinstance(value, float)):
        return op, operands
    if math.isnan(value):
        bound = -_BEYOND if compared in ("lt", "le") else _BEYOND
    elif math.isinf(value):
        bound = _BEYOND if value > 0 else -_BEYOND
    elif compared in ("eq", "ne"):
        bound = int(value) if value.is_integer() else _BEYOND
    else:
        bound = math.ceil(value) if compared in ("lt", "ge") else math.floor(value)
    return compared, (array, bound)


def _operand_dtype(op: str, operands: Sequence[Any]) -> DType:
    """numpy-2 style promotion where Python scalars are weak: they never widen an Array's type."""
    strong = [x.dtype for x in operands if isinstance(x, Array)]
    weak = [data_dtype(type(x)) for x in operands if not isinstance(x, Array)]
    _check_signedness(op, strong)
    target = promote(*strong) if strong else promote(*weak)
    if any(d.is_float for d in weak) and not target.is_float:
        target = float32
    if any(d == int32 for d in weak) and target == bool_:
        target = int32
    definition = ELEMENTWISE[op]
    if op in ("logical_and", "logical_or", "logical_not"):
        return bool_
    if target == bool_ and not definition.keeps_bool:
        target = int32
    if definition.float_only:
        target = float32
    if definition.integer_only and target.is_float:
        raise DTypeError(at_user_line(f"{op}: needs integer or bool operands, got {target.name}"))
    return target


# ops on bools alone as numpy: + maximum | are or, * minimum & are and, ^ is !=, ~ is not, - is refused
_ON_BOOLS = {"add": "logical_or", "mul": "logical_and", "maximum": "logical_or", "minimum": "logical_and",
             "bitwise_or": "logical_or", "bitwise_and": "logical_and", "bitwise_xor": "ne",
             "bitwise_not": "logical_not", "sub": None, "neg": None}


def elementwise(op: str, *operands: Operand) -> Array:
    """Apply the table's op `op` with numpy broadcasting and type promotion."""
    if len(operands) != ELEMENTWISE[op].arity:
        raise TypeError(f"{op} takes {ELEMENTWISE[op].arity} operands, got {len(operands)}")
    operands = tuple(_scalar_or_array(op, x) for x in operands)
    op, operands = _integer_comparison(op, operands)
    if op in _ON_BOOLS and all(x.dtype == bool_ if isinstance(x, Array) else isinstance(x, bool) for x in operands):
        if _ON_BOOLS[op] is None:
            raise DTypeError(at_user_line(f"{op} is not defined on bools (as numpy); use ^ or ~, or astype(int32)"))
        op = _ON_BOOLS[op]
    definition = ELEMENTWISE[op]
    scope = _scope_of(op, operands)
    if op == "where":
        condition = astype(as_array(operands[0], scope), bool_)
        target = _operand_dtype(op, operands[1:])
        _check_weak_integers(op, operands[1:], target)
        arrays = [condition] + [astype(as_array(x, scope, target), target) for x in operands[1:]]
    else:
        target = _operand_dtype(op, operands)
        if (known := _compared_outside(op, operands, target)) is not None:
            array = next(x for x in operands if isinstance(x, Array))
            return broadcast_to(scope.constant(known), array.shape)
        _check_weak_integers(op, operands, target)
        arrays = [astype(as_array(x, scope, target), target) for x in operands]
    shape = broadcast_shapes(*(a.shape for a in arrays))
    if shape is None:
        shapes = " and ".join(str(a.shape) for a in arrays)
        raise ShapeError(at_user_line(f"{op}: shapes {shapes} do not broadcast"))
    arrays = [a if a.shape == shape or a.node.op == "const" else broadcast_to(a, shape) for a in arrays]
    result = {"bool": bool_, "float": float32}.get(definition.result, arrays[-1].dtype)
    return scope.add(op, shape, result, tuple(a.node_id for a in arrays))


def _unary(op: str, doc: str) -> Callable[[Array], Array]:
    def apply(x: Array) -> Array:
        return elementwise(op, x)

    apply.__name__ = op
    apply.__doc__ = doc
    return apply


def _binary(op: str, doc: str) -> Callable[[Operand, Operand], Array]:
    def apply(a: Operand, b: Operand) -> Array:
        return elementwise(op, a, b)

    apply.__name__ = op
    apply.__doc__ = doc
    return apply


add = _binary("add", "a + b")
sub = _binary("sub", "a - b")
mul = _binary("mul", "a * b")
div = _binary("div", "a / b, always in float32")
floor_divide = _binary("floor_divide", "a // b, rounded toward minus infinity as numpy (integer a // 0 gives 0)")
remainder = _binary("remainder", "a % b with the sign of b, as numpy (an integer modulo 0 gives 0)")


def pow(a: Operand, b: Operand) -> Array:  # noqa: A001
    """a ** b as numpy: negative float bases allowed for integral exponents; integers stay integers
    (wrapping on overflow). A negative integer exponent is refused when it is a Python number; in an
    array it gives the truncated 1 / a ** -b (0 unless a is 1 or -1)."""
    exponent = _scalar_or_array("pow", b)
    if isinstance(exponent, int) and not isinstance(exponent, bool) and exponent < 0:
        base = _scalar_or_array("pow", a)
        if isinstance(base, int) or isinstance(base, Array) and not base.dtype.is_float:
            raise ValueError(at_user_line(
                f"pow: integers to the negative power {exponent} are not allowed (as numpy); use a float base"))
    return elementwise("pow", a, b)


maximum = _binary("maximum", "Elementwise larger of a and b")
minimum = _binary("minimum", "Elementwise smaller of a and b")
lt = _binary("lt", "a < b")
le = _binary("le", "a <= b")
gt = _binary("gt", "a > b")
ge = _binary("ge", "a >= b")
eq = _binary("eq", "a == b")
ne = _binary("ne", "a != b")
logical_and = _binary("logical_and", "a and b, elementwise")
logical_or = _binary("logical_or", "a or b, elementwise")
logical_not = _unary("logical_not", "not a, elementwise")


def _float_test(op: str, doc: str, integers: bool) -> Callable[[Operand], Array | bool]:
    """A test of float values; integers and bools give `integers` everywhere, as in numpy. A Python
    number gives a Python bool."""
    def apply(x: Operand) -> Array | bool:
        x = _scalar_or_array(op, x)
        if not isinstance(x, Array):
            return bool(getattr(np, op)(x))
        if not x.dtype.is_float:
            return eq(x, x) if integers else ne(x, x)
        return elementwise(op, x)

    apply.__name__ = op
    apply.__doc__ = doc
    return apply


isnan = _float_test("isnan", "True where x is NaN", integers=False)
isinf = _float_test("isinf", "True where x is infinite", integers=False)
isfinite = _float_test("isfinite", "True where x is neither NaN nor infinite", integers=True)


bitwise_and = _binary("bitwise_and", "a & b: bit by bit on integers, logical on bools (as numpy); floats are refused")
bitwise_or = _binary("bitwise_or", "a | b: bit by bit on integers, logical on bools (as numpy); floats are refused")
bitwise_xor = _binary("bitwise_xor", "a ^ b: bit by bit on integers, a != b on bools (as numpy); floats are refused")
bitwise_not = _unary("bitwise_not", "~x: every bit flipped on integers (-x - 1 for int32, as numpy), not x on bools")


neg = _unary("neg", "-x")
stop_gradient = _unary("stop_gradient", "x, through which no gradient flows")
contiguous = _unary("contiguous", "x, computed once into a buffer when it is a fused expression (for operands a "
                    "kernel reads many times, such as a convolution's input)")
exp = _unary("exp", "e ** x")
log = _unary("log", "Natural logarithm")
log1p = _unary("log1p", "log(1 + x), accurate for small x")
sqrt = _unary("sqrt", "Square root")
rsqrt = _unary("rsqrt", "1 / sqrt(x)")
sin = _unary("sin", "Sine")
cos = _unary("cos", "Cosine")
tan = _unary("tan", "Tangent")
tanh = _unary("tanh", "Hyperbolic tangent")
exp2 = _unary("exp2", "2 ** x")
expm1 = _unary("expm1", "e ** x - 1, accurate for small x")
log2 = _unary("log2", "Base-2 logarithm")
log10 = _unary("log10", "Base-10 logarithm")
sinh = _unary("sinh", "Hyperbolic sine, accurate for small x")
cosh = _unary("cosh", "Hyperbolic cosine")
asin = _unary("asin", "Inverse sine, in [-pi/2, pi/2]; NaN outside [-1, 1]")
acos = _unary("acos", "Inverse cosine, in [0, pi]; NaN outside [-1, 1]")
atan = _unary("atan", "Inverse tangent, in [-pi/2, pi/2]")
atan2 = _binary("atan2", "atan(a / b) in the quadrant of the point (b, a), in [-pi, pi]; numpy's signed zeros and "
                "infinities")
arcsin, arccos, arctan, arctan2 = asin, acos, atan, atan2  # numpy's names
erf = _unary("erf", "The error function, 2 / sqrt(pi) * integral of exp(-t * t) from 0 to x")
sigmoid = _unary("sigmoid", "1 / (1 + exp(-x))")


def _integral(x: Any) -> bool:
    """An int or bool Array, which floor, ceil, trunc and round return as it is (anything else goes to
    `elementwise`, which names what it cannot take)."""
    return isinstance(x, Array) and not x.dtype.is_float


def floor(x: Array) -> Array:
    """Largest integer not above x; integers are their own floor (and keep their type, as numpy)."""
    return x if _integral(x) else elementwise("floor", x)


def ceil(x: Array) -> Array:
    """Smallest integer not below x; integers are their own ceiling (as numpy)."""
    return x if _integral(x) else elementwise("ceil", x)


def trunc(x: Array) -> Array:
    """x rounded toward zero; integers are returned as they are (as numpy)."""
    return x if _integral(x) else elementwise("trunc", x)


def round(x: Array) -> Array:  # noqa: A001
    """Nearest integer, halves to even (as numpy); integers are returned as they are."""
    return x if _integral(x) else elementwise("round", x)


def where(condition: Operand, a: Operand, b: Operand) -> Array:
    """a where condition holds, else b (numpy.where)."""
    return elementwise("where", condition, a, b)


select = where


def relu(x: Array) -> Array:
    """max(x, 0), NaN kept; its gradient is 0 at 0 and passes at NaN, as PyTorch's. Unsigned values are their own."""
    return x if x.dtype.name == "uint32" else elementwise("relu", x)


def abs(x: Array) -> Array:  # noqa: A001
    """|x|; unsigned values are their own magnitude."""
    return x if x.dtype.name in ("uint32", "bool") else elementwise("abs", x)


@takes_array
def log1p_exp(x: Array) -> Array:
    """log(1 + exp(x)) (softplus) as max(x, 0) + log1p(exp(-|x|)), which neither overflows nor cancels;
    its gradient is sigmoid(x), so its second derivative at 0 is sigmoid's (|x|'s gradient there is 0)."""
    value = maximum(x, 0.0) + log1p(exp(-abs(x)))
    return x.scope.custom_gradient(value, [x], lambda g: [g * sigmoid(x)])


def sign(x: Array) -> Array:
    """-1, 0 or 1 by the sign of x."""
    if x.dtype.name in ("uint32", "bool"):
        return astype(ne(x, 0), x.dtype)
    return elementwise("sign", x)


def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """x where x > 0, else negative_slope * x."""
    return where(x > 0, x, x * negative_slope)


@takes_array
def clip(x: Array, lo: Operand | None = None, hi: Operand | None = None) -> Array:
    """Limit x to [lo, hi] (hi where lo > hi); either bound may be None. As PyTorch's clamp, x takes
    the gradient on the bounds themselves, and a lower bound only below a higher upper one; NaN in x or in
    a bound gives NaN, as numpy (tested apart, since GPU compilers fold `x < lo ? lo : x` into a max that
    drops it)."""
    if outside(lo, x.dtype) and lo < 0:
        lo = None  # below every value of x's integer type: no bound, as numpy's clip (where cannot hold it)
    if outside(hi, x.dtype) and hi > 0:
        hi = None
    clipped = x
    if lo is not None:
        floor = where(lo < hi, lo, stop_gradient(lo)) if isinstance(lo, Array) and hi is not None else lo
        clipped = where(clipped < lo, floor, clipped)
    if hi is not None:
        clipped = where(clipped > hi, hi, clipped)
    if not clipped.dtype.is_float:
        return clipped
    # a bound that is a number other than NaN cannot make NaN: only x and the others are tested
    given = [x] + [bound for bound in (lo, hi) if isinstance(bound, Array) or bound is not None and isnan(bound)]
    nan = functools.reduce(logical_or, [isnan(value) for value in given])
    return where(nan, stop_gradient(functools.reduce(add, given)), clipped)  # no gradient there, as torch


@takes_array
def astype(x: Array, dtype: DType | str) -> Array:
    """Convert to `dtype` (float to int truncates toward zero, as numpy)."""
    target = as_dtype(dtype)
    if x.dtype == target:
        return x
    node = x.node
    value = node.attrs
    if node.op == "const" and (target.is_float or target == bool_ or not x.dtype.is_float
                               or np.isfinite(value) and not outside(int(value), target)):
        # a float beyond the integer type is left to the device's cast, as a parameter's would be
        if target == bool_:
            converted = bool(value)
        elif target.is_float:
            converted = float(value)
        else:  # wraps as numpy's astype does (int32 -1 is uint32 2**32 - 1)
            converted = int(value) % 2**32
            converted -= 2**32 if target == int32 and converted >= 2**31 else 0
        return broadcast_to(x.scope.constant(converted, target), x.shape)
    return x.scope.add("cast", x.shape, target, (x.node_id,))


# ---- views: zero-copy, they only change how the source is indexed --------------------------


def _view(x: Array, shape: Shape, kind: str, args: tuple,
          transform: Callable[[views.ViewChain], views.ViewChain]) -> Array:
    """A view of x; chained views compose into one index map onto the first non-view node. It is a
    node of its own also where it changes nothing, so a gradient with respect to it is its own, as torch's."""
    node = x.node
    if node.op == "view":
        source, chain = node.inputs[0], node.attrs.chain
    else:
        source, chain = x.node_id, ()
    chain = transform(chain)
    return x.scope.add("view", shape, node.dtype, (source,), ViewOp(chain, x.node_id, kind, args))


@takes_array
def reshape(x: Array, shape: Sequence[int]) -> Array:
    """Same elements in row-major order, new shape; one axis may be -1."""
    shape = views.as_shape(shape, "reshape")
    if shape.count(-1) > 1:
        raise ShapeError(at_user_line(f"reshape: at most one -1 in {shape}"))
    if -1 in shape:
        known = numel(tuple(s for s in shape if s != -1))
        if known == 0 or x.size % known:
            raise ShapeError(at_user_line(f"reshape: cannot reshape {x.shape} into {shape}"))
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    if numel(shape) != x.size or any(s < 0 for s in shape):
        raise ShapeError(at_user_line(f"reshape: cannot reshape {x.shape} ({x.size} elements) into {shape}"))
    return _view(x, shape, "reshape", (), lambda chain: views.reshape(chain, x.shape, shape))


def _axis(axis: int, ndim: int, op: str) -> int:
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise ShapeError(at_user_line(f"{op}: axis {axis} is out of range for {ndim} dimensions"))
    return axis % ndim


def axis_tuple(axis: int | Sequence[int]) -> tuple[int, ...]:
    """An axis argument as a tuple: one integer (a numpy integer too) or a sequence of them."""
    return (operator.index(axis),) if hasattr(axis, "__index__") else tuple(operator.index(a) for a in axis)


@takes_array
def transpose(x: Array, axes: Sequence[int] | None = None) -> Array:
    """Permute the axes (reverse them by default); `.T` is transpose(x)."""
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(_axis(a, x.ndim, "transpose") for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(at_user_line(f"transpose: {axes} is not a permutation of the axes of {x.shape}"))
    shape = tuple(x.shape[a] for a in axes)
    return _view(x, shape, "permute", axes, lambda chain: views.permute(chain, x.shape, axes))


@takes_array
def broadcast_to(x: Array, shape: Sequence[int]) -> Array:
    """Repeat size-1 and missing leading axes to `shape` without copying."""
    shape = views.as_shape(shape, "broadcast_to")
    if any(size < 0 for size in shape):
        raise ShapeError(at_user_line(f"broadcast_to: a shape cannot have a negative size, got {shape}"))
    if len(shape) < x.ndim or broadcast_shapes(x.shape, shape) != shape:
        raise ShapeError(at_user_line(f"broadcast_to: cannot broadcast {x.shape} to {shape}"))
    return _view(x, shape, "expand", (), lambda chain: views.expand(chain, x.shape, shape))


@takes_array
def expand_dims(x: Array, axis: int | Sequence[int]) -> Array:
    """Insert size-1 axes at the given positions of the result."""
    axes = axis_tuple(axis)
    ndim = x.ndim + len(axes)
    positions = sorted(_axis(a, ndim, "expand_dims") for a in axes)
    if len(set(positions)) != len(positions):
        raise ShapeError(at_user_line(f"expand_dims: repeated axis in {axes}"))
    dims = iter(x.shape)
    shape = tuple(1 if k in positions else next(dims) for k in range(ndim))
    return reshape(x, shape)


@takes_array
def squeeze(x: Array, axis: int | Sequence[int] | None = None) -> Array:
    """Remove size-1 axes (all of them, or those given)."""
    if axis is None:
        axes = tuple(k for k, s in enumerate(x.shape) if s == 1)
    else:
        axes = tuple(_axis(a, x.ndim, "squeeze") for a in axis_tuple(axis))
        if len(set(axes)) != len(axes):
            raise ShapeError(at_user_line(f"squeeze: repeated axis in {axis}"))
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(at_user_line(f"squeeze: axis {a} of {x.shape} has size {x.shape[a]}, not 1"))
    return reshape(x, tuple(s for k, s in enumerate(x.shape) if k not in axes))


_NO_ELEMENTS = object()  # x[False]: a new axis of size 0, as numpy


@takes_array
def getitem(x: Array, index: Any) -> Array:
    """numpy indexing: integers, slices (any step), None, True, False and Ellipsis, and one array of
    integer indices (an int Array, a list or numpy array, or a numpy bool mask) among slices, which
    takes along its axis as `take` does."""
    index = index if isinstance(index, tuple) else (index,)
    index = tuple(i[()] if isinstance(i, np.ndarray) and i.ndim == 0 else i for i in index)  # numpy's scalars
    arrays = [k for k, i in enumerate(index) if isinstance(i, Array | list | np.ndarray)]
    if arrays:
        return _with_array(x, index, arrays)
    if builtins.sum(1 for i in index if i is Ellipsis) > 1:
        raise IndexError(at_user_line("an index can only have a single ellipsis ('...')"))
    if builtins.sum(1 for i in index if _is_scalar_index(i)) > 1 and any(isinstance(i, bool | np.bool_) for i in index):
        return _with_bools(x, index)
    index = tuple((None if i else _NO_ELEMENTS) if isinstance(i, bool | np.bool_) else i for i in index)
    consumed = builtins.sum(1 for i in index if i is not None and i is not _NO_ELEMENTS and i is not Ellipsis)
    if consumed > x.ndim:
        raise IndexError(at_user_line(f"too many indices ({consumed}) for an Array of shape {x.shape}"))
    if any(i is Ellipsis for i in index):
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (x.ndim - consumed) + index[at + 1 :]
    else:
        index = index + (slice(None),) * (x.ndim - consumed)
    starts, steps, sizes, keep, inserted = [], [], [], [], []
    axis = 0
    for item in index:
        if item is None or item is _NO_ELEMENTS:
            inserted.append(len(keep))
            keep.append(item)
            continue
        size = x.shape[axis]
        if isinstance(item, slice):
            if item.step == 0:
                raise ValueError(at_user_line(f"slice step cannot be zero (axis {axis})"))
            start, stop, step = item.indices(size)
            starts.append(start)
            steps.append(step)
            sizes.append(len(range(start, stop, step)))
            keep.append(axis)
        elif isinstance(item, int) or hasattr(item, "__index__"):
            position = int(item)
            if not -size <= position < size:
                raise IndexError(at_user_line(f"index {position} is out of bounds for axis {axis} with size {size}"))
            starts.append(position % size)
            steps.append(1)
            sizes.append(1)
        else:
            raise IndexError(at_user_line(f"unsupported index {item!r}: use integers, slices, None or ..."))
        axis += 1
    sliced = tuple(sizes)
    shape = tuple(1 if k is None else 0 if k is _NO_ELEMENTS else sizes[k] for k in keep)
    if numel(shape) == 0 and x.size:  # no element to read: a view of none has no index arithmetic
        return broadcast_to(x.scope.constant(0, x.dtype), shape)
    if any(sizes[k] != x.shape[k] or starts[k] != 0 or steps[k] != 1 for k in range(x.ndim)):
        x = _view(x, sliced, "window", (tuple(starts), tuple(steps)),
                  lambda chain: views.window(chain, x.shape, tuple(starts), tuple(steps), sliced))
        if shape == x.shape:
            return x
    return reshape(x, shape)  # a node of its own also where it selects everything, the gradient's path to it


def _with_array(x: Array, index: tuple, arrays: list[int]) -> Array:
    """x[index] where index holds one array among slices, None and Ellipsis: `take` along the axis the
    array stands for, then the rest of the index, with the array's axes kept where it stood (numpy's
    rule for a single array index). Masks known only when the graph runs have no static shape."""
    from descent.graph import indexing

    item = index[arrays[0]]
    if len(arrays) > 1 or any(_is_scalar_index(i) for k, i in enumerate(index) if k not in arrays):
        raise IndexError(at_user_line(
            "indexing with an array together with other arrays or integers (numpy's advanced indexing, "
            "which moves axes) is not supported: index one axis at a time with dc.take(x, indices, axis)"))
    if isinstance(item, Array) and item.dtype == bool_:
        raise IndexError(at_user_line(
            "indexing with a bool Array: how many elements it selects is known only when the graph runs, and "
            "a graph's shapes are fixed when it is built; use dc.where(mask, x, 0) or weight a sum by the mask"))
    consuming = [k for k, i in enumerate(index) if i is not None and i is not Ellipsis]
    if len(consuming) > x.ndim:
        raise IndexError(at_user_line(f"too many indices ({len(consuming)}) for an Array of shape {x.shape}"))
    after = builtins.sum(1 for k in consuming if k > arrays[0])
    ellipsis_before = any(i is Ellipsis for i in index[: arrays[0]])
    axis = x.ndim - 1 - after if ellipsis_before else builtins.sum(1 for k in consuming if k < arrays[0])
    if not isinstance(item, Array):
        given = np.asarray(item)
        if given.dtype == np.bool_:
            if given.shape != (x.shape[axis],):
                raise IndexError(at_user_line(f"a bool mask of shape {given.shape} does not match axis {axis} "
                                              f"of {x.shape} (a mask indexes one axis here)"))
            given = np.flatnonzero(given)
        elif given.size == 0:
            given = given.astype(np.int32)
        if given.dtype.kind not in "iu":
            raise IndexError(at_user_line(f"array indices must be integers or bools, not {given.dtype}"))
        if given.size and not (-x.shape[axis] <= given.min() and given.max() < x.shape[axis]):
            bad = given[(given < -x.shape[axis]) | (given >= x.shape[axis])][0]
            raise IndexError(at_user_line(f"index {bad} is out of bounds for axis {axis} with size {x.shape[axis]}"))
        item = x.scope.constant(given.astype(np.int32))
    taken = indexing.take(x, item, axis)
    rest = index[: arrays[0]] + (slice(None),) * item.ndim + index[arrays[0] + 1 :]
    return getitem(taken, rest)


def _is_scalar_index(item: Any) -> bool:
    """A bool or an integer: numpy's advanced indices among basic ones, once a bool is among them."""
    return isinstance(item, bool | np.bool_ | int) or (hasattr(item, "__index__") and not isinstance(item, Array))


def _with_bools(x: Array, index: tuple) -> Array:
    """numpy's indexing where a bool meets other bools or integers: together they index one axis, of
    one element (or none, if a bool is False), in place of the first of them where they stand side by
    side and first otherwise; each integer still takes its element of its axis."""
    scalars = [k for k, item in enumerate(index) if _is_scalar_index(item)]
    bools = [item for item in index if isinstance(item, bool | np.bool_)]
    rest = tuple(item for item in index if not isinstance(item, bool | np.bool_))
    selected = getitem(x, rest)
    position = 0
    if scalars == list(range(scalars[0], scalars[-1] + 1)):  # side by side
        consumed = builtins.sum(1 for item in index if item is not None and item is not Ellipsis
                                and not isinstance(item, bool | np.bool_))
        position = builtins.sum(x.ndim - consumed if item is Ellipsis else 1 for item in index[: scalars[0]])
    result = expand_dims(selected, position)
    if not all(bools):
        result = getitem(result, (slice(None),) * position + (slice(0, 0),))
    return result


@takes_array
def pad(x: Array, widths: Sequence[tuple[int, int]] | int, value: float = 0.0, mode: str = "constant") -> Array:
    """Pad each axis by (before, after) elements: `value` for mode "constant", mirrored interior
    elements for "reflect" (as numpy.pad). Negative widths crop. A view: nothing is copied."""
    widths = _pad_widths(widths, x.shape)
    check_scalar("pad", value, x.dtype)
    if mode == "reflect" and value != 0:
        raise ValueError(at_user_line(f"pad: value {value} is for mode 'constant'; 'reflect' pads with x's elements"))
    for axis, ((lo, hi), size) in enumerate(zip(widths, x.shape)):
        if max(-lo, 0) + max(-hi, 0) > size:
            raise ShapeError(at_user_line(f"pad: widths {(lo, hi)} crop more than the {size} elements of axis {axis}"))
    crop = tuple(slice(max(-lo, 0), size - max(-hi, 0)) for (lo, hi), size in zip(widths, x.shape))
    x = getitem(x, crop)
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    if mode == "reflect":
        for axis, (lo, hi) in enumerate(widths):
            if (lo or hi) and (lo >= x.shape[axis] or hi >= x.shape[axis]):
                raise ShapeError(at_user_line(f"pad: reflect width {(lo, hi)} must be below the size {x.shape[axis]}"))
            if x.size == 0:  # nothing to mirror: the (empty) result is the constant pad's
                continue
            lead = (slice(None),) * axis
            before = [getitem(x, lead + (slice(lo, 0, -1),))] if lo else []
            after = [getitem(x, lead + (slice(-2, -hi - 2, -1),))] if hi else []
            if before or after:
                x = concat(before + [x] + after, axis)
        if x.size:
            return x
    elif mode != "constant":
        raise ValueError(at_user_line(f"pad: mode must be 'constant' or 'reflect', not {mode!r}"))
    if not any(lo or hi for lo, hi in widths):
        return x
    shape = tuple(size + lo + hi for size, (lo, hi) in zip(x.shape, widths))
    return _view(x, shape, "pad", (tuple(widths), value), lambda chain: views.pad(chain, x.shape, tuple(widths), value))


def _pad_widths(widths: Any, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """numpy.pad's forms of widths: n, (n,), (before, after) or ((before, after),) for every axis, or
    one (before, after) pair per axis."""
    ndim = len(shape)
    try:
        if is_integer(widths):
            pairs = [(widths, widths)] * ndim
        elif len(widths) in (1, 2) and all(is_integer(w) for w in widths):
            pairs = [(widths[0], widths[-1])] * ndim
        elif len(widths) == 1:
            pairs = [tuple(widths[0])] * ndim
        else:
            pairs = [tuple(pair) for pair in widths]
        ok = all(len(pair) == 2 and all(is_integer(w) for w in pair) for pair in pairs) and len(pairs) == ndim
    except TypeError:
        ok = False
    if not ok:
        raise ShapeError(at_user_line(f"pad: widths must be an int, a (before, after) pair or one pair per axis of "
                                      f"{shape}, got {widths!r}"))
    return [(int(lo), int(hi)) for lo, hi in pairs]


def concat(arrays: Sequence[Array], axis: int | None = 0) -> Array:
    """Join arrays along an existing axis (numpy.concatenate; axis None joins them flattened); each
    part is a padded view, selected where it lies."""
    _check_sequence("concat", arrays)
    if not arrays:
        raise ShapeError(at_user_line("concat: needs at least one array"))
    scope = _scope_of("concat", arrays)
    arrays = [as_array(a, scope) for a in arrays]
    if axis is None:
        arrays, axis = [reshape(a, (a.size,)) for a in arrays], 0
    _check_signedness("concat", [a.dtype for a in arrays])
    dtype = promote(*(a.dtype for a in arrays))
    ndim = arrays[0].ndim
    axis = _axis(axis, ndim, "concat")
    for a in arrays:
        if a.ndim != ndim or any(a.shape[k] != arrays[0].shape[k] for k in range(ndim) if k != axis):
            shapes = ", ".join(str(b.shape) for b in arrays)
            raise ShapeError(at_user_line(f"concat: shapes {shapes} differ outside axis {axis}"))
    total = builtins.sum(a.shape[axis] for a in arrays)
    result, start = None, 0
    for a in arrays:
        widths = [(0, 0)] * ndim
        widths[axis] = (start, total - start - a.shape[axis])
        part = pad(astype(a, dtype), widths)
        if result is None:
            result = part
        else:  # selected where it lies, not added: -0.0 stays
            result = where(pad(broadcast_to(scope.constant(True), a.shape), widths), part, result)
        start += a.shape[axis]
    return result


def _check_sequence(op: str, arrays: Any) -> None:
    if isinstance(arrays, Array) or not isinstance(arrays, Sequence):
        raise TypeError(at_user_line(f"{op}: takes a list or tuple of arrays, as dc.{op}([a, b]), got {arrays!r}"))


def stack(arrays: Sequence[Array], axis: int = 0) -> Array:
    """Join arrays along a new axis (numpy.stack)."""
    _check_sequence("stack", arrays)
    if not arrays:
        raise ShapeError(at_user_line("stack: needs at least one array"))
    shapes = [tuple(getattr(a, "shape", np.shape(a))) for a in arrays]
    if len(set(shapes)) > 1:
        raise ShapeError(at_user_line(f"stack: the arrays must all have one shape, as numpy's; got "
                                      f"{', '.join(map(str, shapes))}"))
    ndim = arrays[0].ndim + 1
    return concat([expand_dims(a, _axis(axis, ndim, "stack")) for a in arrays], axis)


def windows(x: Array, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> Array:
    """Sliding windows over the trailing len(kernel) axes, as a zero-copy view (..., O..., K...)."""
    kernel, stride, dilation = tuple(kernel), tuple(stride), tuple(dilation)
    spatial = x.shape[x.ndim - len(kernel):]
    outputs = tuple(views.window_count(size, k, s, d) for size, k, s, d in zip(spatial, kernel, stride, dilation))
    if any(o <= 0 for o in outputs) or any(s <= 0 for s in stride + dilation + kernel):
        raise ShapeError(at_user_line(
            f"windows: kernel {kernel} (stride {stride}, dilation {dilation}) does not fit input {x.shape}"))
    shape = x.shape[: x.ndim - len(kernel)] + outputs + kernel
    return _view(x, shape, "windows", (kernel, stride, dilation),
                 lambda chain: views.windows(chain, x.shape, kernel, stride, dilation))
