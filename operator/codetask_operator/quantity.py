"""Kubernetes resource quantities (`500m`, `1Gi`, `2`, `1e3`), non-negative only, parsed exactly."""

import re
from fractions import Fraction

# Kubernetes' ParseQuantity grammar without the minus sign; RE2-compatible, the CRD uses it too.
PATTERN = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[eE]([+-]?[0-9]{1,3})|[numkMGTPE])?$"

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    **{f"{p}i": Fraction(2 ** (10 * (i + 1))) for i, p in enumerate("KMGTPE")},
}


def parse(text: str) -> Fraction:
    """The exact value of a quantity; ValueError if `text` is not one."""
    match = re.fullmatch(PATTERN, text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 256Mi, 2)")
    number, suffix, exponent = Fraction(match[1]), match[3] or "", match[4]
    if exponent is not None:
        return number * Fraction(10) ** int(exponent)
    return number * _SUFFIXES[suffix]
