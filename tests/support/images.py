"""Images built without a container engine: each Dockerfile's build stage carried out step by step.

For each image (the four services and the fake LLM) the build stage of its Dockerfile is carried out
here: ``COPY`` (honouring ``.dockerignore``), ``ENV``, ``WORKDIR`` and ``RUN`` as written — ``python -m
venv``, ``requirements.py``, ``pip install -c constraints.txt``, the workspace packages with
``--no-deps``, ``pip check`` — with ``/opt/venv`` a fresh virtual environment of this interpreter's base
Python under a directory standing for the image's ``/``. The runtime stage is read (``ENV``,
``WORKDIR``, ``EXPOSE``, ``CMD``) for whoever runs the result: ``tests/e2e/test_images_alone.py`` as
compose would, ``tests/e2e/test_chart_runs.py`` as the Helm chart's manifests say.

Differences from ``docker build``, none of which changes what gets installed: pip installs from one
directory filled beforehand by a single ``pip download`` of the same pinned versions (five resolutions
against the index cost minutes), and it compiles no bytecode at install.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Every image this repository builds.
IMAGES = ("fakellm", "catalog", "billing", "runner", "gateway")
#: Variables of this process that would change what an install or an interpreter does.
_NOT_INHERITED = re.compile(r"^(PYTHON\w*|VIRTUAL_ENV\w*|CONDA\w*)$")


def clean_environ() -> dict[str, str]:
    """This process's environment without what would change an install or an interpreter."""
    return {k: v for k, v in os.environ.items() if not _NOT_INHERITED.match(k)}


def package_dir(name: str) -> Path:
    return ROOT / ("libs" if name == "fakellm" else "services") / name


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (kind.upper(), args.strip())
        for line in joined.splitlines()
        if line.strip()
        for kind, _, args in [line.strip().partition(" ")]
    ]


def stages(name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The build stage's instructions and the runtime stage's."""
    steps = instructions((package_dir(name) / "Dockerfile").read_text())
    froms = [i for i, (kind, _) in enumerate(steps) if kind == "FROM"]
    assert len(froms) == 2, f"{name}: a build stage and a runtime stage"
    return steps[froms[0] + 1 : froms[1]], steps[froms[1] + 1 :]


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), value)


def env_pairs(args: str, env: dict[str, str]) -> dict[str, str]:
    """``ENV A=1 B=$B:x`` → ``{"A": "1", "B": "…:x"}``."""
    return {key: expand(value, env) for key, _, value in (word.partition("=") for word in shlex.split(args))}


@dataclass
class Image:
    """One image's file system, as far as this test needs it: ``rootfs/opt/venv`` and the build's log."""

    name: str
    rootfs: Path
    log: Path
    error: str | None = None

    @property
    def venv(self) -> Path:
        return self.rootfs / "opt" / "venv"

    def path(self, container_path: str) -> Path:
        return self.rootfs / container_path.lstrip("/")

    def to_host(self, text: str) -> str:
        return text.replace("/opt/venv", str(self.venv))


def copy_into(image: Image, args: str, workdir: Path) -> None:
    """``COPY src… dest`` from the repository root (the build context), as Docker does it."""
    *sources, dest = shlex.split(args)
    assert not dest.startswith("--") and not any(s.startswith("--") for s in sources), args
    ignored = [
        line.strip()[3:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip().startswith("**/")
    ]
    target = workdir / dest
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns(*ignored), dirs_exist_ok=True)
        elif dest.endswith("/") or len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / src.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def build(name: str, base: Path, python_dir: Path, wheelhouse: Path, downloaded: Future[None]) -> Image:
    """Carry out the build stage of ``name``'s Dockerfile under ``base`` (``/`` of its file system),
    pip finding distributions in ``wheelhouse`` alone (once ``downloaded`` is done)."""
    image = Image(name, base / "rootfs", base / "build.log")
    image.rootfs.mkdir(parents=True)
    env = clean_environ()
    # The base image's ``python`` is this interpreter's base Python, first on the PATH.
    env["PATH"] = f"{python_dir}:/usr/local/bin:/usr/bin:/bin"
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    # No bytecode compiled at install (``--no-compile``; pip reads ``PIP_NO_COMPILE`` backwards): a third
    # of the install's time, and the interpreter compiles what it imports anyway.
    env["PIP_COMPILE"] = "0"
    workdir = image.rootfs
    build_steps, _ = stages(name)
    with image.log.open("w") as log:
        for kind, args in build_steps:
            if kind == "ENV":
                env.update({k: image.to_host(v) for k, v in env_pairs(args, env).items()})
            elif kind == "WORKDIR":
                workdir = image.path(args)
                workdir.mkdir(parents=True, exist_ok=True)
            elif kind == "COPY":
                copy_into(image, args, workdir)
            elif kind == "RUN":
                if re.search(r"\bpip\b", args):
                    downloaded.result()
                command = image.to_host(args)
                log.write(f"$ {command}\n")
                log.flush()
                begun = time.monotonic()
                done = subprocess.run(
                    ["/bin/sh", "-c", command], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
                )
                log.write(f"# exit code {done.returncode} after {time.monotonic() - begun:.1f}s\n")
                if done.returncode != 0:
                    image.error = f"RUN {args}\nfailed with exit code {done.returncode}"
                    break
            else:
                assert kind == "ARG", f"{name}: the build stage has a {kind} this test does not carry out"
    return image


def download(base: Path, wheelhouse: Path, names: tuple[str, ...] = IMAGES) -> None:
    """Every distribution the images' builds install, in one directory: what their ``requirements.py``
    steps list together, within the constraints, and the packages' build backend. One download, with
    this environment's pip (pinned, like everything else) and its index settings and cache; the
    images' own pip, which ``python -m venv`` brings and may be older, then installs the same pinned
    versions it would have found in the index."""
    dirs: set[str] = set()
    backends: set[str] = set()
    for name in names:
        build_steps, _ = stages(name)
        for kind, args in build_steps:
            m = re.search(r"\brequirements\.py\s+([^>&|;]+)", args) if kind == "RUN" else None
            if m:
                dirs |= set(m[1].split())
    for directory in dirs:
        with (ROOT / directory / "pyproject.toml").open("rb") as f:
            backends |= set(tomllib.load(f)["build-system"]["requires"])
    assert dirs, "no requirements.py step in any Dockerfile"
    requirements = base / "requirements.txt"
    listed = subprocess.run(
        [sys.executable, str(ROOT / "deploy/docker/requirements.py"), *sorted(dirs)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requirements.write_text(listed + "".join(f"{b}\n" for b in sorted(backends)))
    env = clean_environ()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            str(wheelhouse),
            "-c",
            str(ROOT / "constraints.txt"),
            "-r",
            str(requirements),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"pip download failed:\n{done.stdout}{done.stderr}"


def build_all(base: Path, names: tuple[str, ...] = IMAGES) -> dict[str, Image]:
    """The build stage of every image of ``names``, all at once, each under ``base/<name>``."""
    python_dir = base / "python"
    python_dir.mkdir(parents=True)
    (python_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    wheelhouse = base / "wheelhouse"
    with ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
        # The virtual environments are made while the download runs; pip waits for it.
        downloaded = pool.submit(download, base, wheelhouse, names)
        futures = {name: pool.submit(build, name, base / name, python_dir, wheelhouse, downloaded) for name in names}
        return {name: future.result() for name, future in futures.items()}
