"""Symbolic integer index arithmetic: the divisions and remainders a view chain adds, simplified with
the ranges of the kernel's index variables so that a kernel divides only where it must.

An Index is a sum of atoms times integer coefficients plus a constant. An atom is a variable of
known range, or the quotient or remainder of an Index by a positive constant, with GLSL's meaning
for ints (truncation toward zero). Rules fire only where every numerator they divide is provably
non-negative, where truncation and floor division agree, so a simplified index equals the
original wherever the original's numerators are non-negative (every in-bounds element of a view).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Var:
    """A GLSL int variable that takes the values 0 .. size - 1."""

    name: str
    size: int


@dataclass(frozen=True)
class Div:
    numerator: Index
    divisor: int


@dataclass(frozen=True)
class Mod:
    numerator: Index
    divisor: int


Atom = Var | Div | Mod


@dataclass(frozen=True)
class Index:
    """sum(coefficient * atom) + constant; coefficients are non-zero and atoms distinct."""

    terms: tuple[tuple[Atom, int], ...] = ()
    constant: int = 0

    def __add__(self, other: Index | int) -> Index:
        other = other if isinstance(other, Index) else Index((), other)
        coefficients = dict(self.terms)
        for atom, coefficient in other.terms:
            coefficients[atom] = coefficients.get(atom, 0) + coefficient
        return _recompose(Index(tuple((a, c) for a, c in coefficients.items() if c), self.constant + other.constant))

    def __mul__(self, factor: int) -> Index:
        if factor == 0:
            return Index()
        return Index(tuple((a, c * factor) for a, c in self.terms), self.constant * factor)

    def __floordiv__(self, divisor: int) -> Index:
        return divide(self, divisor)

    def __mod__(self, divisor: int) -> Index:
        return remainder(self, divisor)


def _recompose(index: Index) -> Index:
    """Undo a split of a non-negative n into digits: (n / a) * a + n % a is n, and
    (n / a % b) * a + n % a is n % (a * b), each times any coefficient (a view of a view, such as
    a pooling window's elements, splits an index that its consumer then puts back together)."""
    for low, low_coefficient in index.terms:
        if not isinstance(low, Mod) or bounds(low.numerator)[0] < 0:
            continue
        n, a = low.numerator, low.divisor
        quotient = Index(((Div(n, a), 1),))
        for high, high_coefficient in index.terms:
            if high_coefficient != low_coefficient * a:
                continue
            if high == Div(n, a):
                whole = n
            elif isinstance(high, Mod) and high.numerator == quotient:
                whole = remainder(n, a * high.divisor)
            else:
                continue
            rest = Index(tuple((t, c) for t, c in index.terms if t not in (low, high)), index.constant)
            return rest + whole * low_coefficient
    return index


def split_aligned(index: Index, width: int) -> tuple[Index, int] | None:
    """(q, e) with index = width * q + e and 0 <= e < width, where every coefficient is a multiple of
    `width` (so `width` consecutive values of e share one q); else None."""
    if any(c % width for _, c in index.terms):
        return None
    element = index.constant % width
    return _exact(Index(index.terms, index.constant - element), width), element


def variable(name: str, size: int) -> Index:
    """The index variable `name` over 0 .. size - 1 (a constant 0 where size is 1)."""
    return Index(((Var(name, size), 1),)) if size > 1 else Index()


def _truncate(value: int, divisor: int) -> int:
    return value // divisor if value >= 0 else -(-value // divisor)


@functools.lru_cache(maxsize=1 << 16)  # nested atoms ask again; bounded, as a long session builds many graphs
def bounds(index: Index) -> tuple[int, int]:
    """The least and greatest value `index` takes over its variables' ranges."""
    low = high = index.constant
    for atom, coefficient in index.terms:
        atom_low, atom_high = _atom_bounds(atom)
        if coefficient > 0:
            low, high = low + coefficient * atom_low, high + coefficient * atom_high
        else:
            low, high = low + coefficient * atom_high, high + coefficient * atom_low
    return low, high


def _atom_bounds(atom: Atom) -> tuple[int, int]:
    if isinstance(atom, Var):
        return 0, atom.size - 1
    low, high = bounds(atom.numerator)
    if isinstance(atom, Div):
        return _truncate(low, atom.divisor), _truncate(high, atom.divisor)
    if low >= 0:
        return (low, high) if high < atom.divisor else (0, atom.divisor - 1)
    return -(atom.divisor - 1), (0 if high <= 0 else atom.divisor - 1)


def _split(index: Index, factor: int) -> tuple[Index, Index]:
    """(large, small) summing to `index`: the terms whose coefficients `factor` divides and the
    constant's multiple of `factor`, and the rest."""
    large = tuple((a, c) for a, c in index.terms if c % factor == 0)
    small = tuple((a, c) for a, c in index.terms if c % factor)
    multiple = index.constant // factor * factor
    return Index(large, multiple), Index(small, index.constant - multiple)


def _factors(index: Index, divisor: int) -> list[int]:
    """Common factors of `divisor` and some coefficient, largest first, each above 1."""
    found = {math.gcd(divisor, c) for _, c in index.terms} | {math.gcd(divisor, index.constant)}
    return sorted((f for f in found if f > 1), reverse=True)


def _exact(index: Index, divisor: int) -> Index:
    return Index(tuple((a, c // divisor) for a, c in index.terms), index.constant // divisor)


def divide(index: Index, divisor: int) -> Index:
    """index / divisor (GLSL int division), simplified."""
    if divisor == 1:
        return index
    low, high = bounds(index)
    if low >= 0:
        if high < divisor:
            return Index()
        large, small = _split(index, divisor)
        if large != Index() and bounds(small)[0] >= 0:
            return _exact(large, divisor) + divide(small, divisor)
        for factor in _factors(index, divisor):
            large, small = _split(index, factor)
            small_low, small_high = bounds(small)
            if factor < divisor and small_low >= 0 and small_high < factor:
                return divide(_exact(large, factor), divisor // factor)
        if len(index.terms) == 1 and index.constant == 0:
            ((atom, coefficient),) = index.terms
            if coefficient == 1 and isinstance(atom, Div) and bounds(atom.numerator)[0] >= 0:
                return divide(atom.numerator, atom.divisor * divisor)
    return Index(((Div(index, divisor), 1),))


def remainder(index: Index, divisor: int) -> Index:
    """index % divisor (GLSL int remainder), simplified."""
    if divisor == 1:
        return Index()
    low, high = bounds(index)
    if low >= 0:
        if high < divisor:
            return index
        large, small = _split(index, divisor)
        if large != Index() and bounds(small)[0] >= 0:
            return remainder(small, divisor)
        reduced = Index(tuple((a, c % divisor) for a, c in index.terms if c % divisor), index.constant % divisor)
        if reduced != index and bounds(reduced)[0] >= 0:
            return remainder(reduced, divisor)
        for factor in _factors(index, divisor):
            large, small = _split(index, factor)
            small_low, small_high = bounds(small)
            if factor < divisor and small_low >= 0 and small_high < factor:
                return remainder(_exact(large, factor), divisor // factor) * factor + small
    return Index(((Mod(index, divisor), 1),))


def render(index: Index, names: dict[Index, str] | None = None) -> str:
    """GLSL for `index`; a sub-index with an entry in `names` is read from that variable."""
    names = names or {}
    if index in names:
        return names[index]
    terms = []
    for atom, coefficient in index.terms:
        text = _render_atom(atom, names)
        if coefficient != 1:
            grouped = text if isinstance(atom, Var) else f"({text})"
            text = f"{grouped} * {coefficient if coefficient > 0 else f'({coefficient})'}"
        terms.append(text)
    if index.constant or not terms:
        terms.append(str(index.constant) if index.constant >= 0 or not terms else f"({index.constant})")
    return " + ".join(terms)


def _render_atom(atom: Atom, names: dict[Index, str]) -> str:
    if isinstance(atom, Var):
        return atom.name
    numerator = atom.numerator
    text = render(numerator, names)
    simple = numerator in names or (len(numerator.terms) == 1 and numerator.terms[0][1] == 1
                                    and numerator.constant == 0)
    operator = "/" if isinstance(atom, Div) else "%"
    return f"{text if simple else f'({text})'} {operator} {atom.divisor}"
