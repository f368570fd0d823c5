"""The CodeTask field reference in Markdown, from the same schema the CRD is made of.

`python -m codetask_operator.reference > docs/reference.md` (`make crds` does it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from codetask_operator.crd import custom_resource_definition, pool_resource_definition


def _type(node: Mapping[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    return kind


def _limits(node: Mapping[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", "≥"), ("maximum", "≤")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    for key, label in (
        ("maxLength", "≤ {} characters"),
        ("maxItems", "≤ {} items"),
        ("maxProperties", "≤ {} entries"),
    ):
        if key in node:
            parts.append(label.format(node[key]))
    if "default" in node:
        parts.append(f"default `{node['default']}`")
    return "; ".join(parts)


def _rows(node: Mapping[str, Any], path: str) -> Iterator[str]:
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        description = " ".join(str(child.get("description", "")).split()).replace("|", "\\|")
        yield f"| `{here}` | {_type(child)} | {_limits(child)} | {description} |"
        nested = child.get("items", child) if child.get("type") == "array" else child
        if nested.get("properties"):
            yield from _rows(nested, here + ("[]" if child.get("type") == "array" else ""))


def render() -> str:
    """The reference page."""
    version = custom_resource_definition()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    lines = [
        "# CodeTask reference (codetask.dev/v1alpha1)",
        "",
        "Generated from `operator/codetask_operator/api.py` by `make crds`; do not edit.",
        "`kubectl explain codetask.spec` shows the same text.",
    ]
    for part in ("spec", "status"):
        lines += [
            "",
            f"## {part}",
            "",
            "| field | type | limits | description |",
            "|---|---|---|---|",
        ]
        lines += list(_rows(schema[part], part))
    version = pool_resource_definition()["spec"]["versions"][0]
    pool = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    lines += [
        "",
        "# CodeTaskPool reference (codetask.dev/v1alpha1, cluster-scoped)",
        "",
        "`kubectl explain codetaskpool.spec` shows the same text.",
        "",
        "## spec",
        "",
        "| field | type | limits | description |",
        "|---|---|---|---|",
        *_rows(pool, "spec"),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
