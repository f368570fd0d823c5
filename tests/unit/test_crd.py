"""The generated CRD: structural, complete, and what is committed in crds/."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from codetask_operator import api, crd

pytestmark = pytest.mark.unit

COMMITTED = Path(__file__).parents[2] / "crds" / crd.FILE_NAME
FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const", "uniqueItems"}


def schema() -> dict[str, Any]:
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, depth first."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}[*]")


@pytest.mark.parametrize("name", list(crd.DEFINITIONS))
def test_crds_directory_is_not_stale(name: str) -> None:
    committed = COMMITTED.parent / name
    assert committed.read_text(encoding="utf-8") == crd.render(name), (
        "crds/ is stale: run `python -m codetask_operator.crd --write crds/`"
    )


def test_every_schema_node_has_a_type_or_an_explicit_exception() -> None:
    for path, node in nodes(schema()):
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), path


def test_no_json_schema_keyword_kubernetes_refuses_is_left() -> None:
    for path, node in nodes(schema()):
        assert not FORBIDDEN & node.keys(), path
        assert not ("properties" in node and "additionalProperties" in node), path


def test_defaults_and_enums_match_the_declared_type() -> None:
    python_type: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
    }
    for path, node in nodes(schema()):
        kind = python_type.get(node.get("type", ""))
        if kind is None:
            continue
        for value in node.get("enum", []) + (
            [node["default"]] if "default" in node and node["type"] != "array" else []
        ):
            assert isinstance(value, kind), path


def test_preserve_unknown_fields_only_on_status_kopf() -> None:
    preserved = [p for p, n in nodes(schema()) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".status.kopf"]


def pool_schema() -> dict[str, Any]:
    version = crd.pool_resource_definition()["spec"]["versions"][0]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def test_pool_schema_is_structural_and_explained() -> None:
    for path, node in nodes(pool_schema()):
        assert not FORBIDDEN & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if path.startswith(".spec") and not path.endswith(("[]", "[*]")):
            assert node.get("description"), f"kubectl explain codetaskpool{path} would be empty"


def test_pool_affinity_alone_keeps_unknown_fields() -> None:
    preserved = [
        p for p, n in nodes(pool_schema()) if n.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserved == [".spec.affinity"]
    assert (
        "additionalProperties" not in pool_schema()["properties"]["spec"]["properties"]["affinity"]
    )


def test_pools_are_cluster_scoped_with_status_and_scale_for_their_warm_pods() -> None:
    spec = crd.pool_resource_definition()["spec"]
    assert spec["scope"] == "Cluster" and spec["names"]["shortNames"] == ["ctp"]
    subresources = spec["versions"][0]["subresources"]
    assert subresources["scale"] == {
        "specReplicasPath": ".spec.warm.minReady",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in subresources
    assert pool_schema()["properties"]["spec"]["required"] == ["namespaces"]
    warm = pool_schema()["properties"]["spec"]["properties"]["warm"]
    assert warm["required"] == ["namespaces"]
    assert warm["properties"]["minReady"]["default"] == 1


def test_every_spec_and_status_field_is_explained() -> None:
    for path, node in nodes(schema()):
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "[*]")):
            assert node.get("description"), f"kubectl explain codetask{path} would be empty"


def test_spec_keeps_defaults_and_bounds_from_the_models() -> None:
    timeout = schema()["properties"]["spec"]["properties"]["timeoutSeconds"]
    assert (timeout["default"], timeout["minimum"], timeout["maximum"]) == (300, 1, 86400)
    retry_policy = schema()["properties"]["spec"]["properties"]["retryPolicy"]
    assert "default" not in retry_policy  # unset: lifecycle.DEFAULT_RETRY_POLICY
    assert "InvalidSpec" not in retry_policy["items"]["enum"]
    code = schema()["properties"]["spec"]["properties"]["code"]
    assert code["maxLength"] == api.CODE_MAX_LENGTH and code["nullable"] is True


def test_quantities_are_int_or_string() -> None:
    cpu = schema()["properties"]["spec"]["properties"]["resources"]["properties"]["limits"]
    assert cpu["properties"]["cpu"]["x-kubernetes-int-or-string"] is True


def test_strings_admit_empty_values_on_kubernetes_1_20() -> None:
    for path, node in nodes(schema()):
        if path.startswith((".spec", ".status")) and node.get("type") == "string":
            assert "enum" in node or node.get("nullable") is True, path


def test_names_scope_and_subresources() -> None:
    spec = crd.custom_resource_definition()["spec"]
    assert spec["group"] == "codetask.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "codetasks" and spec["names"]["shortNames"] == ["ct"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_the_outcome_and_wide_adds_reason_node_job_pool() -> None:
    columns = crd.custom_resource_definition()["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if "priority" not in c]
    wide = [c["name"] for c in columns if c.get("priority") == 1]
    assert default == ["Phase", "Exit", "Duration", "Attempts", "Age"]
    assert wide == ["Reason", "Node", "Job", "Pool"]
    status = schema()["properties"]["status"]["properties"]
    for column in columns:
        field = column["jsonPath"].split(".")[-1]
        assert field == "creationTimestamp" or field in status, column


def test_unions_other_than_optional_are_refused() -> None:
    class Union(BaseModel):
        value: int | str

    with pytest.raises(ValueError, match="unions other than Optional"):
        crd.structural(Union)


def test_write_creates_the_file_the_printer_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crd.main(["--write", str(tmp_path)])
    crd.main([])
    written = [(tmp_path / name).read_text(encoding="utf-8") for name in crd.DEFINITIONS]
    assert "---\n".join(written) == capsys.readouterr().out
    names = [yaml.safe_load(text)["metadata"]["name"] for text in written]
    assert names == ["codetasks.codetask.dev", "codetaskpools.codetask.dev"]
