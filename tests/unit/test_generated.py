"""Generated files are up to date: `make crds` after changing api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from codetask_operator import crd, reference

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_reference_page_is_not_stale() -> None:
    assert (REPO / "docs/reference.md").read_text() == reference.render(), "run `make crds`"


@pytest.mark.parametrize("name", list(crd.DEFINITIONS))
def test_chart_crds_are_identical_to_crds_dir(name: str) -> None:
    chart = REPO / "charts/codetask-operator/crds" / name
    assert chart.read_text() == (REPO / "crds" / name).read_text()
    assert chart.read_text() == crd.render(name), "run `make crds`"


def test_crds_dir_holds_only_generated_files() -> None:
    assert sorted(p.name for p in (REPO / "crds").iterdir()) == sorted(crd.DEFINITIONS)
    chart = REPO / "charts/codetask-operator/crds"
    assert sorted(p.name for p in chart.iterdir()) == sorted(crd.DEFINITIONS)
