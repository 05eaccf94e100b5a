"""``tfsbench docker build-standin``: an image with tensorflow/serving's interface, built offline.

No registry is needed. The image has two layers, built from what this machine already has:

1. base ``<repo>-base:<key>``: a root file system assembled from Debian packages
   (``apt-get download`` from the machine's configured Debian sources, ``dpkg-deb -x``,
   ``ldconfig -r``) plus the Python distributions the server needs, copied file by file from
   the venv that runs the build (their RECORD lists), streamed as one tar into
   ``docker import``. ``key`` hashes the recipe and the distribution versions, so the slow
   layer is reused until one of those changes.
2. ``TAG``: the project itself (``bench/``, ``export/``) and tensorflow/serving's entrypoint,
   added with ``docker create`` + ``docker cp`` + ``docker commit`` (no builder needed). It
   carries a label with the hash of the project sources; an image of the same tag and hash is
   reused unless ``--rebuild``, and a stale one gets a new top layer (seconds).

The recipe's data (package lists, exclusions, pruned paths, entrypoint scripts) lives in
``docker/standin/`` so it can be read and changed without touching code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from bench import SOURCE_ROOT
from bench.docker.engine import docker, docker_binary, engine_version, image_inspect
from bench.errors import DockerError

STANDIN_TAG = "tfsbench/serving-standin:local"
# The modules the image runs (its entry scripts import these); their imports decide what is copied.
SERVER_MODULES = ("bench.serving.server", "bench.docker.entrypoint", "bench.cli")
RECIPE_VERSION = "1"
SOURCE_LABEL = "tfsbench.source-sha256"
PYTHON_TAG = f"python3.{sys.version_info.minor}"
SITE_IN_IMAGE = f"usr/local/lib/{PYTHON_TAG}/dist-packages"
PROJECT_IN_IMAGE = "opt/tfsbench"
PROJECT_PACKAGES = ("bench", "export")
IMAGE_CONFIG = (
    "ENV MODEL_BASE_PATH=/models",
    "ENV MODEL_NAME=model",
    "ENV PYTHONUNBUFFERED=1",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "EXPOSE 8500 8501",
    'ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]',
    "CMD []",
)
_HOST_TOOLS = ("apt-get", "apt-cache", "dpkg-deb", "ldconfig")


@dataclass(frozen=True)
class StandinBuild:
    """What ``build_standin`` did: ``reused`` (nothing built), ``base_reused`` (only the top layer)."""

    tag: str
    image_id: str
    base_tag: str
    reused: bool
    base_reused: bool
    build_s: float
    size_bytes: int

    def summary(self) -> str:
        how = (
            "reused existing image"
            if self.reused
            else ("built top layer on cached base" if self.base_reused else "built")
        )
        return (
            f"{self.tag}: {how} in {self.build_s:.1f} s, {self.size_bytes / 1e6:.0f} MB ({self.image_id[:19]}); "
            f"run it with: tfsbench docker up --image {self.tag} --model-base-path models/classifier"
        )


def project_root() -> Path:
    """The source checkout holding ``bench/`` and ``docker/standin/``."""
    root = SOURCE_ROOT
    if not (root / "docker" / "standin").is_dir():
        raise DockerError(f"build-standin needs a source checkout with docker/standin/ (not found under {root})")
    return root


def recipe_lines(root: Path, name: str) -> list[str]:
    """Non-comment lines of ``docker/standin/<name>``, with ``{python}`` filled in."""
    text = (root / "docker" / "standin" / name).read_text()
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line.replace("{python}", PYTHON_TAG) for line in lines if line]


def _project_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(host path, path in image) of the project's own files."""
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path, f"{PROJECT_IN_IMAGE}/{path.relative_to(root)}"
    standin = root / "docker" / "standin"
    yield standin / "tf_serving_entrypoint.sh", "usr/bin/tf_serving_entrypoint.sh"
    yield standin / "tensorflow_model_server", "usr/bin/tensorflow_model_server"
    yield standin / "tfsbench", "usr/local/bin/tfsbench"


def source_hash(root: Path) -> str:
    """sha256 over the project files that go into the top layer and the recipe files."""
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    files = [p for p, _ in _project_files(root)] + sorted((root / "docker" / "standin").iterdir())
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- Python distributions ---------------------------------------------------------------------


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _server_import_roots() -> set[str]:
    """Distributions whose modules :data:`SERVER_MODULES` import (TensorFlow aside)."""
    code = (
        "import sys, importlib\n"
        f"for m in {SERVER_MODULES!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except Exception: pass\n"
        "try:\n"  # the parser imports what each sub-command's flags need
        "    from bench.cli import build_parser; build_parser()\n"
        "except Exception: pass\n"
        "print('\\n'.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    top_level = set(proc.stdout.split())
    mapping = metadata.packages_distributions()
    return {_canonical(dist) for module in top_level for dist in mapping.get(module, [])}


def python_distributions(root: Path) -> list[metadata.Distribution]:
    """The venv's distributions the image needs: the recipe's roots, the server's imports, their requirements."""
    wanted = [_canonical(n) for n in recipe_lines(root, "python-packages.txt")] + sorted(_server_import_roots())
    seen = requirement_closure(wanted)
    if not any(_canonical(d.metadata["Name"]) in ("tensorflow", "tensorflow-cpu") for d in seen):
        raise DockerError("build-standin copies TensorFlow from the running venv, but none is installed there")
    return seen


def requirement_closure(names: Iterable[str]) -> list[metadata.Distribution]:
    """The venv's distributions ``names`` and everything they require (markers evaluated), tfsbench aside."""
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    wanted = [_canonical(n) for n in names]
    seen: dict[str, metadata.Distribution] = {}
    while wanted:
        name = wanted.pop()
        if name in seen or name not in installed or name == "tfsbench":
            continue
        dist = seen[name] = installed[name]
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(_canonical(requirement.name))
    return sorted(seen.values(), key=lambda d: _canonical(d.metadata["Name"]))


def _site_files(dists: Iterable[metadata.Distribution], prune: list[str]) -> Iterator[tuple[Path, str]]:
    """(host path, path relative to site-packages) of every installed file of ``dists``."""
    for dist in dists:
        base = Path(str(dist.locate_file(""))).resolve()
        for file in dist.files or []:
            relative = Path(str(file))
            # RECORD also lists console scripts as ../../../bin/...: not part of the package.
            if ".." in relative.parts or any(str(relative).startswith(p.rstrip("/") + "/") for p in prune):
                continue
            path = base / relative
            if path.is_file() and not path.is_symlink():
                yield path, relative.as_posix()


# --- Debian root file system ------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise DockerError(f"build-standin assembles a Debian root file system and needs {name} (a Debian host)")
    return found


def _run(argv: list[str], *, cwd: Path | None = None, timeout_s: float = 600) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DockerError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: {last}")
    return proc.stdout


def debian_closure(roots: list[str], exclude: set[str]) -> list[str]:
    """Packages needed by ``roots``: Depends and Pre-Depends, first alternative, minus ``exclude``."""
    apt_cache = _tool("apt-cache")
    flags = ["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
    seen: set[str] = set()
    frontier = [r for r in roots if r not in exclude]
    while frontier:
        seen.update(frontier)
        out = _run([apt_cache, "depends", *flags, *frontier])
        found: list[str] = []
        previous_was_alternative = False
        for line in out.splitlines():
            stripped = line.strip()
            if not line.startswith(" ") or ":" not in stripped:
                continue
            kind, _, name = stripped.partition(":")
            name = name.strip()
            is_alternative = kind.startswith("|")
            take = not previous_was_alternative
            previous_was_alternative = is_alternative
            if take and kind.lstrip("|") in ("Depends", "PreDepends") and not name.startswith("<"):
                name = name.split(":")[0]  # drop an architecture qualifier
                if name not in exclude and name not in seen:
                    found.append(name)
        frontier = sorted(set(found))
    return sorted(seen)


def assemble_rootfs(root: Path, rootfs: Path, debs: Path, log: Callable[[str], None]) -> list[str]:
    """Download and unpack the Debian closure into ``rootfs``; return the package names."""
    python = recipe_lines(root, "debian-packages.txt")
    if not _run([_tool("apt-cache"), "policy", PYTHON_TAG]).strip():
        raise DockerError(
            f"cannot download Debian packages: {PYTHON_TAG} (to match this venv's Python) is unknown to apt here; "
            "run 'apt-get update' or build from a venv of the Debian release's Python"
        )
    packages = debian_closure(python, set(recipe_lines(root, "debian-exclude.txt")))
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not any(debs.glob(f"{p}_*.deb"))]
    if missing:
        log(f"downloading {len(missing)} Debian packages with apt-get download")
        try:
            _run([_tool("apt-get"), "download", "-o", "APT::Sandbox::User=root", *missing], cwd=debs)
        except DockerError as exc:
            raise DockerError(
                f"cannot download Debian packages ({exc}); check this machine's apt sources or run 'apt-get update'"
            ) from exc
    for deb in sorted(debs.glob("*.deb")):
        if deb.name.split("_")[0] in packages:
            _run([_tool("dpkg-deb"), "-x", str(deb), str(rootfs)])
    # What maintainer scripts would have done, reduced to what the server needs.
    (rootfs / "usr/bin/python3").symlink_to(PYTHON_TAG)
    passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/bin/false\n"
    (rootfs / "etc/passwd").write_text(passwd)
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for directory in ("models", "tmp", "root", f"{SITE_IN_IMAGE}"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    _run([_tool("ldconfig"), "-r", str(rootfs)])
    return packages


def _tar_stream(
    target: io.BufferedIOBase, rootfs: Path, site_files: Iterable[tuple[Path, str]], log: Callable[[str], None]
) -> int:
    """Write rootfs plus site-packages files as one tar to ``target``; return bytes of file data."""
    total = 0
    with tarfile.open(fileobj=target, mode="w|", bufsize=1 << 20, format=tarfile.PAX_FORMAT) as tar:
        # docker import refuses an archive that names a path twice, so every entry is tracked.
        made: set[str] = set()
        for directory, subdirs, files in os.walk(rootfs):
            subdirs.sort()
            for entry in sorted(subdirs) + sorted(files):
                path = Path(directory) / entry
                arcname = path.relative_to(rootfs).as_posix()
                made.add(arcname)
                tar.add(str(path), arcname=arcname, recursive=False)
        for path, relative in site_files:
            arcname = f"{SITE_IN_IMAGE}/{relative}"
            if arcname in made:
                continue
            made.add(arcname)
            # Parent directories first, so they get sane modes rather than Docker's defaults.
            parts = arcname.split("/")[:-1]
            for i in range(len(parts)):
                directory = "/".join(parts[: i + 1])
                if directory not in made:
                    made.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tar.gettarinfo(str(path), arcname=arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with path.open("rb") as handle:
                tar.addfile(info, handle)
            total += info.size
    log(f"streamed {total / 1e6:.0f} MB of Python packages into docker import")
    return total


def build_base(
    base_tag: str, root: Path, work: Path, dists: list[metadata.Distribution], log: Callable[[str], None]
) -> None:
    """The slow layer: Debian root file system + the venv's packages, via ``docker import``."""
    rootfs = work / "rootfs"
    rootfs.mkdir()
    packages = assemble_rootfs(root, rootfs, _cache_dir() / "debs", log)
    log(f"root file system: {len(packages)} Debian packages; Python: {len(dists)} distributions from the venv")
    prune = recipe_lines(root, "prune.txt")
    argv = [docker_binary(), "import"]
    for change in IMAGE_CONFIG:
        argv += ["--change", change]
    argv += ["-", base_tag]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        assert proc.stdin is not None
        try:
            _tar_stream(proc.stdin, rootfs, _site_files(dists, prune), log)  # type: ignore[arg-type]
        except BrokenPipeError:
            pass  # docker import gave up: its own message (below) says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        returncode = proc.wait(timeout=900)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if returncode != 0:
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        raise DockerError(f"docker import failed: {last}")


def build_top(base_tag: str, tag: str, root: Path, digest: str) -> None:
    """The project layer: ``docker create`` + ``docker cp`` (tar on stdin) + ``docker commit``."""
    changes = (*IMAGE_CONFIG, f"LABEL {SOURCE_LABEL}={digest} tfsbench.base={base_tag}")
    commit_layer(base_tag, tag, _project_files(root), changes)


def commit_layer(
    base_tag: str, tag: str, files: Iterable[tuple[Path, str]], changes: Iterable[str], timeout_s: float = 600
) -> None:
    """``tag`` = ``base_tag`` plus ``files`` ((host path, path in image)) and the project's .pth, with ``changes``.

    No builder: ``docker create`` + ``docker cp`` (a tar on stdin, spooled to disk) + ``docker commit``.
    """
    with tempfile.TemporaryFile() as buffer:
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            made: set[str] = set()
            for path, arcname in files:
                if arcname in made:
                    continue
                made.add(arcname)
                info = tar.gettarinfo(str(path), arcname=arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            pth = f"/{PROJECT_IN_IMAGE}\n".encode()
            info = tarfile.TarInfo(f"{SITE_IN_IMAGE}/tfsbench.pth")
            info.size, info.mode = len(pth), 0o644
            tar.addfile(info, io.BytesIO(pth))
        buffer.seek(0)
        name = f"tfsbench-build-{secrets.token_hex(4)}"
        docker(["create", "--name", name, base_tag, "/bin/true"], timeout_s=120)
        try:
            proc = subprocess.run(
                [docker_binary(), "cp", "-", f"{name}:/"], stdin=buffer, capture_output=True, timeout=timeout_s
            )
            if proc.returncode != 0:
                message = proc.stderr.decode(errors="replace").strip()
                raise DockerError(f"docker cp into {tag} failed: {message}")
            argv: list[str] = []
            for change in changes:
                argv += ["--change", change]
            docker(["commit", *argv, name, tag], timeout_s=300)
        finally:
            docker(["rm", "-f", name], check=False, timeout_s=60)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tfsbench" / "standin"


def base_key(root: Path, dists: Iterable[metadata.Distribution]) -> str:
    """Identity of the slow layer: recipe files, Python version, versions of the copied distributions."""
    digest = hashlib.sha256(f"{RECIPE_VERSION}\0{PYTHON_TAG}\0".encode())
    for name in ("debian-packages.txt", "debian-exclude.txt", "python-packages.txt", "prune.txt"):
        digest.update((root / "docker" / "standin" / name).read_bytes())
    versions = sorted(f"{_canonical(d.metadata['Name'])}=={d.version}" for d in dists)
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()[:12]


def _repository(tag: str) -> str:
    head, _, last = tag.rpartition("/")
    return f"{head}/{last.split(':')[0]}" if head else last.split(":")[0]


def _remove_superseded(previous: dict[str, Any] | None, base_tag: str) -> None:
    """Drop the image this build replaced and older bases of the same repository (1.3 GB each).

    ``docker rmi`` refuses images that containers still use; those stay, which is what we want.
    """
    if previous is not None and image_inspect(previous["Id"]) is not None:
        docker(["rmi", previous["Id"]], check=False, timeout_s=120)
    repository = base_tag.rsplit(":", 1)[0]
    listed = docker(["images", repository, "--format", "{{.Repository}}:{{.Tag}}"], check=False, timeout_s=60)
    for old in listed.stdout.split():
        if old != base_tag:
            docker(["rmi", old], check=False, timeout_s=120)


def build_standin(tag: str, *, rebuild: bool = False, log: Callable[[str], None] = print) -> StandinBuild:
    """Build (or reuse) the stand-in image ``tag``; see the module docstring for the recipe."""
    started = time.monotonic()
    engine_version()
    root = project_root()
    digest = source_hash(root)
    existing = image_inspect(tag)
    labels = ((existing or {}).get("Config") or {}).get("Labels") or {}
    if existing is not None and not rebuild and labels.get(SOURCE_LABEL) == digest:
        base = labels.get("tfsbench.base", "")
        return StandinBuild(tag, existing["Id"], base, True, True, time.monotonic() - started, existing["Size"])
    dists = python_distributions(root)
    base_tag = f"{_repository(tag)}-base:{base_key(root, dists)}"
    base_reused = not rebuild and image_inspect(base_tag) is not None
    if not base_reused:
        log(f"building base layer {base_tag} (Debian root file system + Python packages; minutes)")
        with tempfile.TemporaryDirectory(prefix="tfsbench-standin-") as work:
            build_base(base_tag, root, Path(work), dists, log)
    elif existing is not None:
        log(f"{tag} is older than the project sources: rebuilding its top layer")
    build_top(base_tag, tag, root, digest)
    image = image_inspect(tag)
    if image is None:
        raise DockerError(f"docker commit did not produce {tag}")
    _remove_superseded(existing, base_tag)
    return StandinBuild(tag, image["Id"], base_tag, False, base_reused, time.monotonic() - started, image["Size"])
