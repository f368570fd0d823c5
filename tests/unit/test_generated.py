"""Generated files are up to date: `make crds` after changing api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from codetask_operator import crd, reference

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_reference_page_is_not_stale() -> None:
    assert (REPO / "docs/reference.md").read_text() == reference.render(), "run `make crds`"


def test_chart_crd_is_identical_to_crds_dir() -> None:
    chart = REPO / "charts/codetask-operator/crds/codetask.dev_codetasks.yaml"
    assert chart.read_text() == (REPO / "crds/codetask.dev_codetasks.yaml").read_text()
    assert chart.read_text() == crd.render(), "run `make crds`"
