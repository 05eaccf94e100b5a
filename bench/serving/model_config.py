"""``--model_config_file``: a text-format ``ModelServerConfig`` read into :class:`ModelConfig` entries.

One entry per served model: name, base path, version policy (latest N, all, specific) and
version labels, as ``model_server_config.proto`` describes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.serving.text_proto import parse_text_proto

__all__ = ["ModelConfig", "parse_model_server_config", "parse_model_server_config_text"]


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``model_config_list``: policy is ``("latest", n)``, ``("all", 0)`` or
    ``("specific", versions)``."""

    name: str
    base_path: Path
    policy: tuple[str, object] = ("latest", 1)
    labels: Mapping[str, int] = field(default_factory=dict)


def parse_model_server_config(path: Path) -> list[ModelConfig]:
    """Read a text-format ``ModelServerConfig`` file into ``ModelConfig`` entries."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--model_config_file {path}: {exc.strerror}") from exc
    return parse_model_server_config_text(text, f"--model_config_file {path}")


def parse_model_server_config_text(text: str, where: str) -> list[ModelConfig]:
    """A text-format ``ModelServerConfig`` (``where`` starts each error: the file, or the gRPC
    ``HandleReloadConfigRequest`` whose config arrives as a message and is printed as text)."""
    path = where  # what the messages below name
    message = parse_text_proto(text, f"{where}: Error parsing text-format tensorflow.serving.ModelServerConfig")
    lists = message.get("model_config_list", [])
    if not lists:
        raise ConfigError(f"{path}: no model_config_list")
    configs = []
    for entry in (c for lst in lists for c in lst.get("config", [])):
        name = _single(entry, "name", path)
        base = _single(entry, "base_path", path)
        platform = entry.get("model_platform", ["tensorflow"])[0]
        if platform != "tensorflow":
            raise ConfigError(f"{path}: model {name}: unsupported model_platform {platform!r}")
        policy: tuple[str, object] = ("latest", 1)
        for pol in entry.get("model_version_policy", []):
            if "specific" in pol:
                versions = tuple(int(v) for v in pol["specific"][0].get("versions", []))
                if not versions:
                    raise ConfigError(f"{path}: model {name}: specific policy lists no versions")
                policy = ("specific", versions)
            elif "all" in pol:
                policy = ("all", 0)
            elif "latest" in pol:
                policy = ("latest", int(pol["latest"][0].get("num_versions", [1])[0]))
        labels = {}
        for label in entry.get("version_labels", []):
            key, value = label.get("key", [None])[0], label.get("value", [None])[0]
            if not isinstance(key, str) or not isinstance(value, int):
                raise ConfigError(f"{path}: model {name}: version_labels needs key and value")
            labels[key] = value
        configs.append(ModelConfig(str(name), Path(str(base)), policy, labels))
    if not configs:
        raise ConfigError(f"{path}: model_config_list has no config entries")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: duplicate model names")
    return configs


def _single(entry: dict[str, Any], key: str, path: str) -> object:
    values = entry.get(key)
    if not values:
        raise ConfigError(f"{path}: a config entry has no {key}")
    return values[0]
