"""Every CodeTask and CodeTaskPool in samples/ is valid for the API models and for admission."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from codetask_operator import admission, api, pools
from codetask_operator.settings import Settings

pytestmark = pytest.mark.unit

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.yaml"))
DOCUMENTS = [
    (path.name, i, doc)
    for path in SAMPLES
    for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
    if doc and doc["apiVersion"].startswith(f"{api.GROUP}/")
]


def catalog() -> dict[str, pools.Pool]:
    return {
        doc["metadata"]["name"]: pools.parse(doc["metadata"]["name"], doc["spec"])
        for _, _, doc in DOCUMENTS
        if doc["kind"] == api.POOL_KIND
    }


@pytest.mark.parametrize(
    ("name", "index", "doc"), DOCUMENTS, ids=[f"{n}[{i}]" for n, i, _ in DOCUMENTS]
)
def test_sample_is_valid(name: str, index: int, doc: dict[str, object]) -> None:
    assert doc["apiVersion"] == api.API_VERSION
    meta = doc["metadata"]
    assert isinstance(meta, dict)
    spec = doc["spec"]
    assert isinstance(spec, dict)
    if doc["kind"] == api.POOL_KIND:
        parsed = pools.parse(meta["name"], spec)
        assert parsed.spec is not None, parsed.invalid
        return
    assert doc["kind"] == api.KIND
    namespace = meta.get("namespace", "default")
    assert admission.validate(spec, Settings(), namespace, catalog()) == []
