"""The one table of elementwise ops: arity, GLSL expression and result-type rule.

`{index}` in an expression is the element's flat index in the op's own shape (random numbers
are a hash of the seed and that index, so they fuse like any other elementwise op).

Every elementwise op the graph can hold is a row here; codegen reads the GLSL from it and the
op builders read arity and typing from it. Adding an op is adding a row, its builder in ops.py
(`_unary` or `_binary` for most), its gradient rule in autodiff/vjp.py (or an entry in
NO_GRADIENT) and its export in descent/__init__.py; tests/test_autodiff.py checks the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ElementwiseOp:
    """An elementwise op: `glsl` formats operand expressions {0}, {1}, {2} into one expression."""

    name: str
    arity: int
    glsl: str
    result: str = "same"  # "same": the promoted operand type; "bool": a predicate; "float": float32
    float_only: bool = False  # integer operands are cast to float32 first
    integer_only: bool = False  # float operands are refused (bitwise ops)
    keeps_bool: bool = False  # bool operands stay bool (equality, selection, identities), not int32 as arithmetic's
    helpers: tuple[str, ...] = ()  # GLSL functions (from HELPERS) the expression calls, in dependency order
    # the most iterations the helpers' loops run in one call, for (integer, float) operands: a driver's
    # loop limit (lavapipe's) counts them with the kernel's own loops
    loop_trips: tuple[int, int] = (0, 0)
    # the expression for float operands where it differs: NaN propagates. Tested with isnan and kept
    # apart from the comparison: NVIDIA's compiler turned `a > b || isnan(a)` into one unordered test
    float_glsl: str | None = None


def _horner(name: str, variable: str, coefficients: list[str], indent: int) -> str:
    """GLSL lines summing a polynomial in `variable` into float `name` by Horner's rule, the highest
    power's coefficient first (a leading '-' subtracts that coefficient)."""
    pad = " " * indent
    lines = [f"{pad}float {name} = {coefficients[0]};"]
    for coefficient in coefficients[1:]:
        sign, magnitude = ("-", coefficient[1:]) if coefficient.startswith("-") else ("+", coefficient)
        lines.append(f"{pad}{name} = {name} * {variable} {sign} {magnitude};")
    return "\n".join(lines) + "\n"


def _reciprocals(denominators: list[int]) -> list[str]:
    """'1.0 / d' for each d, '-1.0 / |d|' for a negative one."""
    return [f"{'-' if d < 0 else ''}1.0 / {abs(d)}.0" for d in denominators]


HELPERS = {}
HELPERS["descent_log1p"] = """float descent_log1p(float x) {
    if (abs(x) < 0.1) {
""" + _horner("series", "x", _reciprocals([-8, 7, -6, 5, -4, 3, -2]), 8) + """\
        return x + x * x * series;
    }
    return log(1.0 + x);
}"""
HELPERS["descent_log"] = """float descent_log(float x) {
    return abs(x - 1.0) < 0.1 ? descent_log1p(x - 1.0) : log(x);
}"""
HELPERS["descent_log2"] = """float descent_log2(float x) {
    return abs(x - 1.0) < 0.1 ? descent_log1p(x - 1.0) * 1.4426950408889634 : log2(x);
}"""
HELPERS["descent_pow"] = """float descent_pow(float base, float exponent) {
    if (exponent == 0.0 || base == 1.0 || (base == -1.0 && isinf(exponent))) {
        return 1.0;
    }
    if (isnan(base) || isnan(exponent)) {
        return uintBitsToFloat(0x7fc00000u);
    }
    if (exponent == floor(exponent) && abs(exponent) <= 64.0) {
        float result = 1.0;
        float power = base;
        int remaining = int(abs(exponent));
        while (remaining > 0) {
            if ((remaining & 1) == 1) {
                result *= power;
            }
            power *= power;
            remaining >>= 1;
        }
        return exponent < 0.0 ? 1.0 / result : result;
    }
    float magnitude = base == 0.0 && exponent < 0.0 ? uintBitsToFloat(0x7f800000u) : pow(abs(base), exponent);
    if (abs(abs(base) - 1.0) < 0.1) {
        magnitude = exp2(exponent * descent_log2(abs(base)));
    }
    if (base < 0.0 && exponent != floor(exponent) && !isinf(base)) {
        return uintBitsToFloat(0x7fc00000u);
    }
    bool odd_integer = exponent == floor(exponent) && mod(exponent, 2.0) == 1.0;
    bool negative = floatBitsToInt(base) < 0;
    return negative && odd_integer ? -magnitude : magnitude;
}"""
HELPERS["descent_ipow"] = """int descent_ipow(int base, int exponent) {
    if (exponent < 0) {
        return base == 1 ? 1 : (base == -1 ? 1 - 2 * (exponent & 1) : 0);
    }
    int result = 1;
    while (exponent > 0) {
        if ((exponent & 1) == 1) {
            result *= base;
        }
        base *= base;
        exponent >>= 1;
    }
    return result;
}

uint descent_ipow(uint base, uint exponent) {
    uint result = 1u;
    while (exponent > 0u) {
        if ((exponent & 1u) == 1u) {
            result *= base;
        }
        base *= base;
        exponent >>= 1u;
    }
    return result;
}"""
HELPERS["descent_floor_divide"] = """int descent_floor_divide(int a, int b) {
    if (b == 0) {
        return 0;
    }
    int quotient = a / b;
    bool inexact = quotient * b != a;
    return inexact && (a < 0) != (b < 0) ? quotient - 1 : quotient;
}

uint descent_floor_divide(uint a, uint b) {
    return b == 0u ? 0u : a / b;
}

float descent_rest(float a, float b, float quotient) {
    precise float product = b * quotient;
    if (abs(b) > 1e34) {
        return a - product;
    }
    precise float b_split = 4097.0 * b;
    precise float b_high = b_split - (b_split - b);
    precise float b_low = b - b_high;
    precise float q_split = 4097.0 * quotient;
    precise float q_high = q_split - (q_split - quotient);
    precise float q_low = quotient - q_high;
    precise float error = ((b_high * q_high - product) + b_high * q_low + b_low * q_high) + b_low * q_low;
    precise float rest = (a - product) - error;
    return rest;
}

float descent_fmod_wide(float a, float b) {
    int a_exponent;
    int b_exponent;
    float a_mantissa = frexp(abs(a), a_exponent);
    float b_mantissa = frexp(abs(b), b_exponent);
    uint divisor = uint(b_mantissa * 16777216.0);
    uint rest = uint(a_mantissa * 16777216.0) % divisor;
    int shift = a_exponent - b_exponent;
    while (shift > 0) {
        int step = min(shift, 8);
        rest = (rest << uint(step)) % divisor;
        shift -= step;
    }
    float magnitude = ldexp(float(rest), b_exponent - 24);
    return a < 0.0 ? -magnitude : magnitude;
}

float descent_divmod(float a, float b, out float rest) {
    if (b == 0.0 || isinf(a) || isnan(a) || isnan(b)) {
        rest = uintBitsToFloat(0x7fc00000u);
        return b == 0.0 ? a / b : rest;
    }
    if (isinf(b)) {
        bool opposite = a != 0.0 && (a < 0.0) != (b < 0.0);
        rest = opposite ? b : a;
        return opposite ? -1.0 : a / b;
    }
    float quotient = floor(a / b);
    if (abs(quotient) > 16777216.0) {
        float wide = descent_fmod_wide(a, b);
        rest = wide != 0.0 && (wide < 0.0) != (b < 0.0) ? wide + b : wide;
        return quotient;
    }
    rest = descent_rest(a, b, quotient);
    if (rest != 0.0 && (rest < 0.0) != (b < 0.0)) {
        quotient -= 1.0;
        rest = descent_rest(a, b, quotient);
    } else if (abs(rest) >= abs(b)) {
        float next = descent_rest(a, b, quotient + 1.0);
        if (next == 0.0 || (next < 0.0) == (b < 0.0)) {
            quotient += 1.0;
            rest = next;
        }
    }
    return quotient;
}

float descent_floor_divide(float a, float b) {
    float rest;
    return descent_divmod(a, b, rest);
}"""
HELPERS["descent_remainder"] = """int descent_remainder(int a, int b) {
    return b == 0 ? 0 : a - b * descent_floor_divide(a, b);
}

uint descent_remainder(uint a, uint b) {
    return b == 0u ? 0u : a % b;
}

float descent_remainder(float a, float b) {
    float rest;
    descent_divmod(a, b, rest);
    return rest == 0.0 ? uintBitsToFloat(floatBitsToUint(b) & 0x80000000u) : rest;
}"""
HELPERS["descent_tanh"] = """float descent_tanh(float x) {
    if (isnan(x)) {
        return x;
    }
    if (abs(x) < 0.125) {
        float square = x * x;
""" + _horner("series", "square", ["62.0 / 2835.0", "-17.0 / 315.0", "2.0 / 15.0", "-1.0 / 3.0"], 8) + """\
        return x == 0.0 ? x : x + x * square * series;
    }
    return tanh(clamp(x, -15.0, 15.0));
}"""
HELPERS["descent_erf"] = """float descent_erf(float x) {
    if (abs(x) < 0.5) {
        float square = x * x;
""" + _horner("series", "square", ["-1.0 / 1320.0", "1.0 / 216.0", "-1.0 / 42.0", "1.0 / 10.0", "-1.0 / 3.0"], 8) + """\
        return x == 0.0 ? x : 1.1283791670955126 * (x + x * square * series);
    }
    float t = 1.0 / (1.0 + 0.5 * abs(x));
""" + _horner("poly", "t", ["0.17087277", "-0.82215223", "1.48851587", "-1.13520398", "0.27886807", "-0.18628806",
                             "0.09678418", "0.37409196", "1.00002368"], 4) + """\
    float complement = t * exp(poly * t - 1.26551223 - x * x);
    return x >= 0.0 ? 1.0 - complement : complement - 1.0;
}"""
HELPERS["descent_expm1"] = """float descent_expm1(float x) {
    if (abs(x) < 1.0) {
""" + _horner("series", "x", _reciprocals([math.factorial(k) for k in range(12, 1, -1)]), 8) + """\
        return x * (1.0 + x * series);
    }
    return exp(x) - 1.0;
}"""
HELPERS["descent_sinh"] = """float descent_sinh(float x) {
    if (abs(x) < 1.0) {
        float square = x * x;
""" + _horner("series", "square", _reciprocals([math.factorial(k) for k in range(13, 2, -2)]), 8) + """\
        return x + x * square * series;
    }
    float half_exp = exp(abs(x) - 0.6931471805599453);
    return sign(x) * (half_exp - 0.25 / half_exp);
}"""
HELPERS["descent_cosh"] = """float descent_cosh(float x) {
    float half_exp = exp(abs(x) - 0.6931471805599453);
    return half_exp + 0.25 / half_exp;
}"""
HELPERS["descent_atan"] = """float descent_atan(float x) {
    if (isnan(x) || x == 0.0) {
        return x;
    }
    float reduced = abs(x);
    float offset = 0.0;
    if (reduced > 2.414213562373095) {
        offset = 1.5707963267948966;
        reduced = -1.0 / reduced;
    } else if (reduced > 0.41421356237309503) {
        offset = 0.7853981633974483;
        reduced = (reduced - 1.0) / (reduced + 1.0);
    }
    float square = reduced * reduced;
""" + _horner("series", "square", ["0.0805374449538", "-0.138776856032", "0.199777106478", "-0.333329491539"], 4) + """\
    return sign(x) * (offset + (reduced + reduced * square * series));
}"""
HELPERS["descent_asin"] = """float descent_asin(float x) {
    return abs(x) > 1.0 ? uintBitsToFloat(0x7fc00000u) : descent_atan(x / sqrt((1.0 - x) * (1.0 + x)));
}"""
HELPERS["descent_acos"] = """float descent_acos(float x) {
    return abs(x) > 1.0 ? uintBitsToFloat(0x7fc00000u) : 2.0 * descent_atan(sqrt((1.0 - x) / (1.0 + x)));
}"""
HELPERS["descent_atan2"] = """float descent_atan2(float y, float x) {
    if (isnan(y) || isnan(x)) {
        return y + x;
    }
    bool x_negative = floatBitsToInt(x) < 0;
    float pi = 3.1415927410125732;
    if (y == 0.0) {
        return x_negative ? (floatBitsToInt(y) < 0 ? -pi : pi) : y;
    }
    if (isinf(x) && isinf(y)) {
        return sign(y) * (x_negative ? 0.75 * pi : 0.25 * pi);
    }
    if (x == 0.0 || isinf(y)) {
        return sign(y) * 0.5 * pi;
    }
    float angle = descent_atan(y / x);
    return x_negative ? angle + sign(y) * pi : angle;
}"""
HELPERS["descent_hash"] = """uint descent_hash(uint value) {
    uint state = value * 747796405u + 2891336453u;
    uint word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}"""
HELPERS["descent_uniform"] = """float descent_uniform(uint seed, int index) {
    uint bits = descent_hash(seed ^ descent_hash(uint(index)));
    return float(bits >> 8u) * (1.0 / 16777216.0);
}"""
HELPERS["descent_normal"] = """float descent_normal(uint seed, int index) {
    float radius = sqrt(-2.0 * log(1.0 - descent_uniform(seed, 2 * index)));
    return radius * cos(6.2831853 * descent_uniform(seed, 2 * index + 1));
}"""

_OPS = [
    ElementwiseOp("add", 2, "{0} + {1}"),
    ElementwiseOp("sub", 2, "{0} - {1}"),
    ElementwiseOp("mul", 2, "{0} * {1}"),
    ElementwiseOp("div", 2, "{0} / {1}", float_only=True),
    ElementwiseOp("pow", 2, "descent_ipow({0}, {1})", float_glsl="descent_pow({0}, {1})",
                  helpers=("descent_log1p", "descent_log2", "descent_pow", "descent_ipow"), loop_trips=(32, 7)),
    # float a / b may be off by an ulp (NVIDIA divides by a reciprocal): descent_divmod mends the quotient by its
    # exact remainder, which % returns
    # descent_fmod_wide shifts by at most 8 bits a step, over the 276 between float32's exponents
    ElementwiseOp("floor_divide", 2, "descent_floor_divide({0}, {1})", helpers=("descent_floor_divide",),
                  loop_trips=(0, 35)),
    ElementwiseOp("remainder", 2, "descent_remainder({0}, {1})", helpers=("descent_floor_divide", "descent_remainder"),
                  loop_trips=(0, 35)),
    ElementwiseOp("maximum", 2, "max({0}, {1})", float_glsl="isnan({0}) ? {0} : isnan({1}) ? {1} : max({0}, {1})"),
    ElementwiseOp("minimum", 2, "min({0}, {1})", float_glsl="isnan({0}) ? {0} : isnan({1}) ? {1} : min({0}, {1})"),
    ElementwiseOp("lt", 2, "{0} < {1}", result="bool"),
    ElementwiseOp("le", 2, "{0} <= {1}", result="bool"),
    ElementwiseOp("gt", 2, "{0} > {1}", result="bool"),
    ElementwiseOp("ge", 2, "{0} >= {1}", result="bool"),
    ElementwiseOp("eq", 2, "{0} == {1}", result="bool", keeps_bool=True),
    ElementwiseOp("ne", 2, "{0} != {1}", result="bool", keeps_bool=True),
    ElementwiseOp("isnan", 1, "isnan({0})", result="bool", float_only=True),
    ElementwiseOp("isinf", 1, "isinf({0})", result="bool", float_only=True),
    ElementwiseOp("isfinite", 1, "!isnan({0}) && !isinf({0})", result="bool", float_only=True),
    ElementwiseOp("logical_and", 2, "{0} && {1}", result="bool"),
    ElementwiseOp("logical_or", 2, "{0} || {1}", result="bool"),
    ElementwiseOp("logical_not", 1, "!{0}", result="bool"),
    ElementwiseOp("bitwise_and", 2, "{0} & {1}", integer_only=True),
    ElementwiseOp("bitwise_or", 2, "{0} | {1}", integer_only=True),
    ElementwiseOp("bitwise_xor", 2, "{0} ^ {1}", integer_only=True),
    ElementwiseOp("bitwise_not", 1, "~{0}", integer_only=True),
    ElementwiseOp("where", 3, "{0} ? {1} : {2}", keeps_bool=True),
    ElementwiseOp("neg", 1, "-{0}"),
    ElementwiseOp("stop_gradient", 1, "{0}", keeps_bool=True),
    ElementwiseOp("contiguous", 1, "{0}", keeps_bool=True),
    ElementwiseOp("abs", 1, "abs({0})"),
    ElementwiseOp("sign", 1, "sign({0})", float_glsl="isnan({0}) ? {0} : sign({0})"),
    ElementwiseOp("exp", 1, "exp({0})", float_only=True),
    # GLSL's log and log2 are only 2^-21 off in absolute terms near 1, where the result is small
    ElementwiseOp("log", 1, "descent_log({0})", float_only=True, helpers=("descent_log1p", "descent_log")),
    ElementwiseOp("log1p", 1, "descent_log1p({0})", float_only=True, helpers=("descent_log1p",)),
    ElementwiseOp("sqrt", 1, "sqrt({0})", float_only=True),
    ElementwiseOp("rsqrt", 1, "inversesqrt({0})", float_only=True),
    ElementwiseOp("sin", 1, "sin({0})", float_only=True),
    ElementwiseOp("cos", 1, "cos({0})", float_only=True),
    ElementwiseOp("tan", 1, "tan({0})", float_only=True),
    ElementwiseOp("tanh", 1, "descent_tanh({0})", float_only=True, helpers=("descent_tanh",)),
    ElementwiseOp("relu", 1, "max({0}, 0)", float_glsl="isnan({0}) ? {0} : max({0}, 0.0)"),
    ElementwiseOp("erf", 1, "descent_erf({0})", float_only=True, helpers=("descent_erf",)),
    ElementwiseOp("sigmoid", 1, "1.0 / (1.0 + exp(-{0}))", float_only=True),
    ElementwiseOp("exp2", 1, "exp2({0})", float_only=True),
    ElementwiseOp("expm1", 1, "descent_expm1({0})", float_only=True, helpers=("descent_expm1",)),
    ElementwiseOp("log2", 1, "descent_log2({0})", float_only=True, helpers=("descent_log1p", "descent_log2")),
    ElementwiseOp("log10", 1, "descent_log2({0}) * 0.3010299956639812", float_only=True,
                  helpers=("descent_log1p", "descent_log2")),
    ElementwiseOp("sinh", 1, "descent_sinh({0})", float_only=True, helpers=("descent_sinh",)),
    ElementwiseOp("cosh", 1, "descent_cosh({0})", float_only=True, helpers=("descent_cosh",)),
    # Vulkan lets GLSL's asin, acos and atan be 4096 ulp off (lavapipe's asin(0.5) is 4e-4 off): descent_atan
    # reduces to [-0.414, 0.414] and sums a series (Cephes' atanf), the others are built on it
    ElementwiseOp("asin", 1, "descent_asin({0})", float_only=True, helpers=("descent_atan", "descent_asin")),
    ElementwiseOp("acos", 1, "descent_acos({0})", float_only=True, helpers=("descent_atan", "descent_acos")),
    ElementwiseOp("atan", 1, "descent_atan({0})", float_only=True, helpers=("descent_atan",)),
    ElementwiseOp("atan2", 2, "descent_atan2({0}, {1})", float_only=True, helpers=("descent_atan", "descent_atan2")),
    ElementwiseOp("floor", 1, "floor({0})", float_only=True),
    ElementwiseOp("ceil", 1, "ceil({0})", float_only=True),
    ElementwiseOp("trunc", 1, "trunc({0})", float_only=True),
    ElementwiseOp("round", 1, "roundEven({0})", float_only=True),
    ElementwiseOp("uniform", 1, "descent_uniform({0}, {index})", result="float",
                  helpers=("descent_hash", "descent_uniform")),
    ElementwiseOp("normal", 1, "descent_normal({0}, {index})", result="float",
                  helpers=("descent_hash", "descent_uniform", "descent_normal")),
]

ELEMENTWISE: dict[str, ElementwiseOp] = {op.name: op for op in _OPS}
