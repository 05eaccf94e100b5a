"""``tfsbench docker build-loadgen``: the load generator's image (Locust master or worker, the CLI), offline.

It is the stand-in's image recipe (bench.docker.standin) one layer further: on the stand-in's
base layer (Debian root file system + the server's Python distributions; built or reused here)
one more layer adds the distributions the load generator needs beyond the server's (Locust,
gevent, pandas, matplotlib, ...: the closure of the project's own requirements, minus what the
base has), copied file by file from the venv that runs the build, and the project itself
(``bench/``, ``export/``, ``reports/``, ``locustfiles/``) with the ``tfsbench`` and ``locust``
commands. No registry, no builder. The image is tagged with the package version
(``tfsbench/loadgen:<version>``), carries a hash of its sources, and is reused while that holds.

    docker run --rm tfsbench/loadgen:0.1.0 tfsbench sweep --host http://serving:8501 ...
    docker run --rm tfsbench/loadgen:0.1.0 locust -f /opt/tfsbench/locustfiles/predict.py --worker --master-host M
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from bench import __version__
from bench.docker.engine import engine_version, image_inspect
from bench.docker.standin import (
    PROJECT_IN_IMAGE,
    SITE_IN_IMAGE,
    SOURCE_LABEL,
    STANDIN_TAG,
    StandinBuild,
    _canonical,
    _site_files,
    build_standin,
    commit_layer,
    project_root,
    python_distributions,
    recipe_lines,
    requirement_closure,
)
from bench.errors import DockerError

LOADGEN_TAG = f"tfsbench/loadgen:{__version__}"
LOADGEN_PACKAGES = ("bench", "export", "reports", "locustfiles")
LOADGEN_CONFIG = (
    "ENV PYTHONUNBUFFERED=1",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV HOME=/root",
    "ENV MPLCONFIGDIR=/tmp/matplotlib",
    "WORKDIR /work",
    "EXPOSE 5557",
    # The base's ENTRYPOINT (tensorflow/serving's script) is replaced: an empty one does not reset it.
    'ENTRYPOINT ["/usr/bin/env"]',
    'CMD ["tfsbench", "--help"]',
)


def _loadgen_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(host path, path in image) of the project files the load generator runs."""
    for package in LOADGEN_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path, f"{PROJECT_IN_IMAGE}/{path.relative_to(root)}"
    yield root / "docker" / "standin" / "tfsbench", "usr/local/bin/tfsbench"
    yield root / "docker" / "loadgen" / "locust", "usr/local/bin/locust"


def project_requirements() -> list[str]:
    """The project's runtime requirements (the installed tfsbench distribution's, extras left out)."""
    try:
        requires = metadata.distribution("tfsbench").requires or []
    except metadata.PackageNotFoundError as exc:
        raise DockerError("build-loadgen copies the venv that runs tfsbench, but tfsbench is not installed") from exc
    names = []
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.append(requirement.name)
    return names


def extra_distributions(base: list[metadata.Distribution]) -> list[metadata.Distribution]:
    """What the load generator needs that the stand-in's base lacks."""
    have = {_canonical(d.metadata["Name"]) for d in base}
    return [d for d in requirement_closure(project_requirements()) if _canonical(d.metadata["Name"]) not in have]


def loadgen_hash(root: Path, base_tag: str, dists: list[metadata.Distribution]) -> str:
    """Identity of the layer: the base, the copied distributions' versions, the project files."""
    digest = hashlib.sha256(base_tag.encode() + b"\0")
    digest.update("\n".join(sorted(f"{_canonical(d.metadata['Name'])}=={d.version}" for d in dists)).encode())
    for path, arcname in _loadgen_files(root):
        digest.update(arcname.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_loadgen(
    tag: str = LOADGEN_TAG,
    *,
    standin_tag: str = STANDIN_TAG,
    rebuild: bool = False,
    log: Callable[[str], None] = print,
) -> StandinBuild:
    """Build (or reuse) the load generator image ``tag`` on the stand-in's base layer."""
    started = time.monotonic()
    engine_version()
    root = project_root()
    standin = build_standin(standin_tag, log=log)  # reused when current: its base is ours
    log(standin.summary().split(";")[0])
    dists = extra_distributions(python_distributions(root))
    digest = loadgen_hash(root, standin.base_tag, dists)
    existing = image_inspect(tag)
    labels = ((existing or {}).get("Config") or {}).get("Labels") or {}
    if existing is not None and not rebuild and labels.get(SOURCE_LABEL) == digest:
        return StandinBuild(
            tag, existing["Id"], standin.base_tag, True, True, time.monotonic() - started, existing["Size"]
        )
    log(f"building {tag} on {standin.base_tag}: {len(dists)} more Python distributions and the project")
    prune = recipe_lines(root, "prune.txt")
    site = [(path, f"{SITE_IN_IMAGE}/{relative}") for path, relative in _site_files(dists, prune)]
    changes = (*LOADGEN_CONFIG, f"LABEL {SOURCE_LABEL}={digest} tfsbench.base={standin.base_tag}")
    commit_layer(standin.base_tag, tag, [*site, *_loadgen_files(root)], changes)
    image = image_inspect(tag)
    if image is None:
        raise DockerError(f"docker commit did not produce {tag}")
    return StandinBuild(tag, image["Id"], standin.base_tag, False, True, time.monotonic() - started, image["Size"])
