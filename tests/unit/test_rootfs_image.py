"""The Dockerfile interpreter that builds our images without Docker (hack/images)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("rootfs_image", REPO / "hack/images/rootfs_image.py")
assert _spec and _spec.loader
rootfs_image = importlib.util.module_from_spec(_spec)
sys.modules["rootfs_image"] = rootfs_image
_spec.loader.exec_module(rootfs_image)

DOCKERFILES = {
    "runner": REPO / "runner-image/Dockerfile",
    "operator": REPO / "operator/Dockerfile",
    "pause": REPO / "hack/images/pause.Dockerfile",
}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_instruction_of_our_dockerfiles_is_understood(name: str) -> None:
    plan = rootfs_image.plan(rootfs_image.parse(DOCKERFILES[name].read_text()), {})
    assert plan.config.entrypoint, "an image without an entrypoint"
    assert plan.config.user.split(":")[0] not in ("", "0", "root"), "images run as non-root"


def test_runner_and_operator_images_match_their_dockerfiles() -> None:
    runner = rootfs_image.plan(rootfs_image.parse(DOCKERFILES["runner"].read_text()), {})
    assert runner.base == "debian:bookworm-slim"
    assert runner.config.entrypoint == ["python3", "/opt/codetask/bin/codetask-runner"]
    assert runner.config.workdir == "/scratch"
    assert runner.config.env["PYTHONPATH"] == "/opt/codetask"
    operator = rootfs_image.plan(rootfs_image.parse(DOCKERFILES["operator"].read_text()), {})
    assert operator.config.entrypoint == ["/opt/venv/bin/codetask-operator"]


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM alpine:3\n", "only scratch or bookworm"),
        ("FROM scratch\nRUN echo hi\n", "RUN needs a shell"),
        ("FROM debian:bookworm-slim\nHEALTHCHECK CMD true\n", "unsupported Dockerfile instruction"),
        ("FROM debian:bookworm-slim\nENV JUSTKEY\n", "expected KEY=VALUE"),
    ],
)
def test_what_it_cannot_reproduce_stops_the_build(dockerfile: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rootfs_image.plan(rootfs_image.parse(dockerfile), {})


def test_args_env_and_continuations_are_resolved() -> None:
    text = (
        "ARG BASE=debian:bookworm\nFROM ${BASE}\nENV A=1 B=two\n"
        'RUN echo $A \\\n    && echo ${B}\nUSER 1000\nCMD ["x"]\n'
    )
    plan = rootfs_image.plan(rootfs_image.parse(text), {"BASE": "debian:bookworm-slim"})
    assert plan.base == "debian:bookworm-slim"
    assert plan.config.env == {"A": "1", "B": "two"}
    assert [s.args for s in plan.steps if s.op == "RUN"] == ["echo 1      && echo two"]
    assert (plan.config.user, plan.config.cmd) == ("1000", ["x"])


def test_inputs_digest_follows_copy_sources_only(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/main.py").write_text("print(1)\n")
    (tmp_path / "unrelated.txt").write_text("a")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM debian:bookworm-slim\nCOPY app /app\nENTRYPOINT ["/app"]\n')
    first = rootfs_image.inputs_digest(dockerfile, tmp_path, {})
    (tmp_path / "unrelated.txt").write_text("b")
    assert rootfs_image.inputs_digest(dockerfile, tmp_path, {}) == first
    (tmp_path / "app/main.py").write_text("print(2)\n")
    assert rootfs_image.inputs_digest(dockerfile, tmp_path, {}) != first
