"""Kubernetes quantity parsing."""

from fractions import Fraction

import pytest

from codetask_operator import quantity

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Fraction(0)),
        ("2", Fraction(2)),
        ("+2", Fraction(2)),
        ("500m", Fraction(1, 2)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("100n", Fraction(1, 10**7)),
        ("1k", Fraction(1000)),
        ("1Ki", Fraction(1024)),
        ("256Mi", Fraction(256 * 2**20)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1E", Fraction(10**18)),
        ("1Ei", Fraction(2**60)),
        ("1e3", Fraction(1000)),
        ("5E-1", Fraction(1, 2)),
    ],
)
def test_parses_kubernetes_quantities_exactly(text: str, value: Fraction) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1x", "Mi", "1 Mi", "1mi", "1e", "1.2.3", "1Gi\n"])
def test_rejects_what_kubernetes_would_not_accept_as_a_resource_amount(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity.parse(text)


def test_binary_and_decimal_suffixes_compare_by_value() -> None:
    assert quantity.parse("1Gi") > quantity.parse("1G") > quantity.parse("953Mi")
