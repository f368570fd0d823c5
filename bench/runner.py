"""6. Runner overhead: the runner running `print(1)` vs a bare `python3 -c 'print(1)'`.

Both run on this machine inside the runner image's own root filesystem (the newest image archive
that `make images` built, unpacked and entered with chroot, as uid 65532 like the pod): the same
interpreter, standard library and runner files the pod has, without the container start that both
would share. The runner gets the environment its Job gives it (from the operator's `build_job`).
Whole-process wall time (fork → exit) over many alternating runs, after warm-up runs. Beside
them, what bounds the runner: `python3` running an empty script (an entry script's own cost), a
script forking and running the code in the child (the floor of a runner that forks), the runner
started with `-m` (runpy, the entrypoint before 2026-11-23), and the runner spawning a second
interpreter (started with `-u`, as before the fork).
"""

from __future__ import annotations

import functools
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import REPO
from bench.harness import Context
from bench.report import Figure, Result
from bench.stats import summary
from codetask_operator import api, jobs  # type: ignore[import-not-found, unused-ignore]
from codetask_operator.settings import Settings  # type: ignore[import-not-found, unused-ignore]

NAME = "runner"
TARGET_RATIO = 1.2
IMAGES = Path(os.environ.get("CODETASK_CACHE", Path.home() / ".cache/codetask")) / "images"
UID = jobs.NON_ROOT_ID
WARMUP = 10
FLOOR_DIR = "/opt/codetask-bench"
FLOOR_SCRIPTS = {
    "empty.py": "",
    "forked.py": (
        "import os\n"
        "if os.fork() == 0:\n"
        "    f = '/codetask/input/code'\n"
        "    exec(compile(open(f).read(), f, 'exec'), {'__name__': '__main__'})\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    ),
}


def _image_archive() -> Path:
    archives = sorted(IMAGES.glob("codetask-runner_*.tar"), key=lambda p: p.stat().st_mtime)
    if not archives:
        raise RuntimeError(f"no runner image archive in {IMAGES}: run `make images` first")
    return archives[-1]


def _unpack(archive: Path, root: Path) -> dict[str, Any]:
    """The image's single layer unpacked into `root`; returns its config."""
    import json

    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(outer.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                inner.extractall(root, filter="fully_trusted")
    return config  # type: ignore[no-any-return]


def _runner_env(image_env: list[str]) -> dict[str, str]:
    """The image's ENV plus the plain values of the Job's container env for `print(1)`."""
    spec = api.CodeTaskSpec.model_validate({"language": "python", "code": "print(1)"})
    manifest = jobs.build_job("bench", "uid", "bench", spec, 1, Settings())
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = dict(item.split("=", 1) for item in image_env)
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["CODETASK_RESULT_PATH"] = f"{jobs.SCRATCH_DIR}/result.json"
    return env


def _enter(root: Path, workdir: str) -> None:
    """In the child: into the image's root, then drop to the pod's user (chroot needs root)."""
    os.chroot(root)
    os.chdir(workdir)
    os.setgroups([])
    os.setgid(UID)
    os.setuid(UID)


def _timed(argv: list[str], env: dict[str, str], enter: Any) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv,
        env=env,
        preexec_fn=enter,
        check=True,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    return (time.perf_counter() - started) * 1000


def _floor_scripts(root: Path) -> str:
    """FLOOR_SCRIPTS written to FLOOR_DIR in the image's root."""
    directory = root / FLOOR_DIR.lstrip("/")
    directory.mkdir(parents=True)
    for name, text in FLOOR_SCRIPTS.items():
        (directory / name).write_text(text)
    return FLOOR_DIR


def _same_sources(root: Path) -> bool:
    ours = REPO / "runner-image/codetask_runner"
    theirs = root / "opt/codetask/codetask_runner"
    return all(
        (theirs / p.name).is_file() and (theirs / p.name).read_bytes() == p.read_bytes()
        for p in ours.glob("*.py")
    )


def run(ctx: Context) -> Result:
    n = ctx.n(300, least=30)
    archive = _image_archive()
    with tempfile.TemporaryDirectory(prefix="codetask-bench-rootfs-") as tmp:
        root = Path(tmp)
        config = _unpack(archive, root)["config"]
        workdir = config.get("WorkingDir") or jobs.SCRATCH_DIR
        for d in (jobs.SCRATCH_DIR, jobs.INPUT_DIR):
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (root / "scratch").chmod(0o1777)
        (root / jobs.INPUT_DIR.lstrip("/") / "code").write_text("print(1)\n")
        env = _runner_env(config.get("Env") or [])
        bare_env = dict(item.split("=", 1) for item in config.get("Env") or [])
        enter = functools.partial(_enter, root, workdir)
        runner_argv = list(config["Entrypoint"])
        floor = _floor_scripts(root)
        other_env = {**env, "CODETASK_RESULT_PATH": f"{jobs.SCRATCH_DIR}/other-result.json"}
        variants = {
            "runner": (runner_argv, env),
            "bare": (["python3", "-c", "print(1)"], bare_env),
            # What bounds it: an entry script alone, a script with a fork running the code, the
            # runner through runpy, the runner spawning python3 as before the fork.
            "python3 of an empty script": (["python3", f"{floor}/empty.py"], bare_env),
            "python3 script forking to run the code": (["python3", f"{floor}/forked.py"], bare_env),
            "runner with -m (runpy)": (["python3", "-m", "codetask_runner"], other_env),
            "runner spawning python3 (-u)": (["python3", "-u", *runner_argv[1:]], other_env),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(WARMUP + n):
            for key, (argv, e) in variants.items():
                ms = _timed(argv, e, enter)
                if i >= WARMUP:
                    times[key].append(ms)
        result_json = (root / "scratch/result.json").read_text()
        same = _same_sources(root)
    s = {k: summary(v, 2) for k, v in times.items()}
    runner_p50, bare_p50 = s["runner"]["p50"], s["bare"]["p50"]
    figures = [
        Figure(
            "runner print(1) p50",
            runner_p50,
            "ms",
            bare_p50,
            "bare python3 -c p50",
            f"≤ {TARGET_RATIO}x",
            runner_p50 <= TARGET_RATIO * bare_p50,
        ),
    ]
    return Result(
        NAME,
        figures,
        {
            "runs": n,
            "image_archive": archive.name,
            "image_runner_sources_match_repo": same,
            "ms": s,
            "runner_result": result_json,
        },
        method=__doc__ or "",
    )
