"""Reading deploy/'s YAML without a YAML library in the venv: PyYAML where installed, else kubectl.

``kubectl annotate --local -o json`` parses with Kubernetes' own YAML reader and never contacts
a cluster, so it is the stricter of the two where both exist.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

KUBECTL = shutil.which("kubectl")


def yaml_reader() -> str | None:
    """What parses YAML here: 'pyyaml', 'kubectl' or None (the tests that need one skip)."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        return "kubectl" if KUBECTL else None
    return "pyyaml"


def _json_stream(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    docs: list[dict[str, Any]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every document of a YAML stream, as dicts (empty documents dropped)."""
    if yaml_reader() == "pyyaml":
        import yaml

        return [d for d in yaml.safe_load_all(text) if d is not None]
    assert KUBECTL is not None
    proc = subprocess.run(
        [KUBECTL, "annotate", "--local", "-f", "-", "-o", "json", "tfsbench/parsed=1"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    docs = _json_stream(proc.stdout)
    for doc in docs:
        annotations = doc.get("metadata", {}).get("annotations", {})
        annotations.pop("tfsbench/parsed", None)
        if not annotations and "annotations" in doc.get("metadata", {}):
            del doc["metadata"]["annotations"]
        if doc.get("metadata") == {}:
            del doc["metadata"]
    return docs


def load_file(path: Path) -> list[dict[str, Any]]:
    return load_documents(path.read_text())


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``, parsed."""
    assert KUBECTL is not None
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return load_documents(proc.stdout)
