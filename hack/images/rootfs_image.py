"""Build a Dockerfile's image without Docker: debootstrap + chroot, written as a docker-archive.

Only the instructions our Dockerfiles use are understood (FROM a Debian bookworm image, ARG, ENV,
RUN, COPY, WORKDIR, USER, ENTRYPOINT, CMD, LABEL); anything else stops the build, so the image made
here cannot silently drift from what `docker build` makes of the same file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "LABEL"}
DEBIAN_BASES = {"debian:bookworm-slim", "debian:bookworm", "python:3.11-slim-bookworm"}
MIRROR = "http://deb.debian.org/debian"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
BUILD_CA = "/tmp/build-host-ca.crt"
CACHE = Path(os.environ.get("CODETASK_CACHE", Path.home() / ".cache" / "codetask"))


@dataclass
class Instruction:
    op: str
    args: str


@dataclass
class ImageConfig:
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (continuations joined, comments dropped)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        op, _, args = line.strip().partition(" ")
        op = op.upper()
        if op not in SUPPORTED:
            raise ValueError(f"unsupported Dockerfile instruction {op!r}: extend rootfs_image.py")
        instructions.append(Instruction(op, args.strip()))
    return instructions


def _substitute(value: str, variables: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, value)


def _pairs(args: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {token!r}")
        out[key] = value
    return out


def _exec_form(args: str) -> list[str]:
    if args.startswith("["):
        value = json.loads(args)
        if not isinstance(value, list):
            raise ValueError(f"expected a JSON array, got {args!r}")
        return [str(v) for v in value]
    return ["/bin/sh", "-c", args]


@dataclass
class Plan:
    """What a Dockerfile asks for: the base, the steps to replay, and the final config."""

    base: str
    steps: list[Instruction]
    config: ImageConfig


def plan(instructions: list[Instruction], build_args: dict[str, str]) -> Plan:
    """Resolve ARG/ENV substitution and collect the image config."""
    variables: dict[str, str] = {}
    config = ImageConfig()
    base = ""
    steps: list[Instruction] = []
    for ins in instructions:
        if ins.op == "ARG":
            name, _, default = ins.args.partition("=")
            variables[name] = build_args.get(name, default)
        elif ins.op == "FROM":
            base = _substitute(ins.args.split()[0], variables)
        elif ins.op == "ENV":
            for k, v in _pairs(_substitute(ins.args, variables)).items():
                config.env[k] = v
                variables[k] = v
        elif ins.op == "LABEL":
            config.labels.update(_pairs(ins.args))
        elif ins.op == "WORKDIR":
            config.workdir = _substitute(ins.args, variables)
            steps.append(Instruction("WORKDIR", config.workdir))
        elif ins.op == "USER":
            config.user = _substitute(ins.args, variables)
        elif ins.op == "ENTRYPOINT":
            config.entrypoint = _exec_form(ins.args)
        elif ins.op == "CMD":
            config.cmd = _exec_form(ins.args)
        else:
            steps.append(Instruction(ins.op, _substitute(ins.args, variables)))
    if base != "scratch" and base not in DEBIAN_BASES:
        raise ValueError(f"FROM {base!r}: only scratch or bookworm bases build without Docker")
    if base == "scratch" and any(s.op == "RUN" for s in steps):
        raise ValueError("RUN needs a shell: not possible FROM scratch")
    return Plan(base, steps, config)


def _base_rootfs(log: io.TextIOBase) -> Path:
    """A cached debootstrap minbase tarball of bookworm."""
    tarball = CACHE / "rootfs" / "bookworm-minbase.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        subprocess.run(["rm", "-rf", str(root / "var/cache/apt/archives")], check=True)
        subprocess.run(["tar", "-C", str(root), "-cf", f"{tarball}.tmp", "."], check=True)
        os.replace(f"{tarball}.tmp", tarball)
    return tarball


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for src in ("/proc", "/dev", "/sys"):
            target = root / src.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--rbind", src, str(target)], check=True)
            subprocess.run(["mount", "--make-rslave", str(target)], check=True)
            mounted.append(target)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        # The build host's CA bundle (it may trust a TLS-inspecting proxy): for RUN, not shipped.
        shutil.copy(HOST_CA, root / BUILD_CA.lstrip("/"))
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)
        (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
        (root / BUILD_CA.lstrip("/")).unlink(missing_ok=True)


def _copy(context: Path, root: Path, args: str, workdir: str) -> None:
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    *sources, dest = parts
    dest_path = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
    for src in sources:
        s = context / src
        target = root / dest_path.lstrip("/")
        if s.is_dir():
            shutil.copytree(
                s, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            if dest_path.endswith("/"):
                target = target / s.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, target)


def _layer(root: Path, out: Path) -> None:
    subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(out), "."], check=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def docker_config(config: ImageConfig, diff_id: str) -> dict[str, object]:
    """The image config JSON, as `docker build` would write it."""
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            + [f"{k}={v}" for k, v in config.env.items()],
            "User": config.user,
            "WorkingDir": config.workdir,
            "Entrypoint": config.entrypoint or None,
            "Cmd": config.cmd or None,
            "Labels": config.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    }


def copy_sources(steps: list[Instruction]) -> list[str]:
    """The context paths that COPY steps read."""
    sources: list[str] = []
    for step in steps:
        if step.op == "COPY":
            parts = [p for p in shlex.split(step.args) if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def inputs_digest(dockerfile: Path, context: Path, build_args: dict[str, str]) -> str:
    """A digest of what the image is made from (Dockerfile, args, COPY sources, this builder)."""
    h = hashlib.sha256(dockerfile.read_bytes())
    h.update(json.dumps(build_args, sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    for source in copy_sources(plan(parse(dockerfile.read_text()), build_args).steps):
        root = context / source
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                h.update(str(path.relative_to(context)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(dockerfile: Path, context: Path, tag: str, out: Path, build_args: dict[str, str]) -> Path:
    """Build the image and write a docker-archive tarball; returns its path."""
    p = plan(parse(dockerfile.read_text()), build_args)
    out.parent.mkdir(parents=True, exist_ok=True)
    logpath = out.with_suffix(".log")
    with logpath.open("w") as log, tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        if p.base != "scratch":
            subprocess.run(["tar", "-C", str(root), "-xf", str(_base_rootfs(log))], check=True)
        workdir = "/"
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "HOME": "/root",
            "PIP_CERT": BUILD_CA,
            "SSL_CERT_FILE": BUILD_CA,
            "REQUESTS_CA_BUNDLE": BUILD_CA,
        }
        with _chroot_mounts(root) if p.base != "scratch" else contextlib.nullcontext():
            for step in p.steps:
                log.write(f"--- {step.op} {step.args}\n")
                log.flush()
                if step.op == "RUN":
                    env.update(p.config.env)
                    subprocess.run(
                        [
                            "chroot",
                            str(root),
                            "/bin/sh",
                            "-c",
                            f"cd {shlex.quote(workdir)} && {step.args}",
                        ],
                        check=True,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                elif step.op == "COPY":
                    _copy(context, root, step.args, workdir)
                elif step.op == "WORKDIR":
                    workdir = step.args
                    (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        if p.base != "scratch":
            (root / "etc/resolv.conf").write_text("")
        layer = Path(tmp) / "layer.tar"
        _layer(root, layer)
        diff_id = _sha256(layer)
        config = json.dumps(docker_config(p.config, diff_id), sort_keys=True).encode()
        config_name = f"{hashlib.sha256(config).hexdigest()}.json"
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]
        with tarfile.open(f"{out}.tmp", "w") as archive:
            archive.add(layer, f"{diff_id}/layer.tar")
            for name, data in (
                (config_name, config),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        os.replace(f"{out}.tmp", out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("context", type=Path)
    ap.add_argument("--file", type=Path, help="Dockerfile (default: CONTEXT/Dockerfile)")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--build-arg", action="append", default=[])
    ap.add_argument("--out-dir", type=Path, default=CACHE / "images")
    a = ap.parse_args()
    dockerfile = a.file or a.context / "Dockerfile"
    build_args = dict(arg.split("=", 1) for arg in a.build_arg)
    digest = inputs_digest(dockerfile, a.context, build_args)
    out = a.out_dir / f"{a.tag.replace('/', '_').replace(':', '_')}-{digest}.tar"
    if not out.exists():
        print(
            f"building {a.tag} from {dockerfile} (log: {out.with_suffix('.log')})", file=sys.stderr
        )
        build(dockerfile, a.context, a.tag, out, build_args)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
