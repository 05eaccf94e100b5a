"""Which models and versions the embedded server serves: loading, polling, config file, labels.

Mirrors tensorflow/serving's ServerCore as far as the REST API can see it:

* ``--model_base_path``: children whose names parse as non-negative integers are versions,
  loaded from their own directory and reported by value (``00000123/`` is version 123); the
  default policy serves the highest one; a poll every ``--file_system_poll_wait_seconds`` loads a new
  version (AVAILABLE only after it is loaded and warmed up) and then unloads the old one
  (UNLOADING -> END, still listed by the status API);
* ``--model_config_file``: a text-format ``ModelServerConfig`` (several models,
  ``model_version_policy`` latest/all/specific, ``version_labels``); with
  ``--model_config_file_poll_wait_seconds`` > 0 it is re-read at that interval and changes are
  applied (models added or removed, policies and labels changed); a file that fails to parse or
  to apply is logged and the config in force is kept (``Server::PollFilesystemAndReloadConfig``);
* version labels are checked before any version of a new config loads
  (``ServerCore::UpdateModelVersionLabelMap``): a label must name an AVAILABLE version, so at
  start-up every label fails unless ``--allow_version_labels_for_unavailable_models``, which
  lets a label name any version except when it moves an existing label;
* a base path that cannot be listed (EMFILE, EIO, vanished) is logged and changes nothing:
  a version unloads only once a listing that succeeds no longer holds it;
* lookups raise ``ServingError`` with the reference's NOT_FOUND / INVALID_ARGUMENT texts.

TensorFlow is imported lazily, the first time a SavedModel is loaded.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError
from bench.serving.model_config import ModelConfig, parse_model_server_config
from bench.serving.saved_model import LoadedVersion
from bench.serving.status import ServingError

log = logging.getLogger("tfsbench.serve")

__all__ = ["ModelStore", "VersionStatus"]

# -- the set of served models -------------------------------------------------------------------


@dataclass
class VersionStatus:
    """One row of the status API (``ModelVersionStatus``)."""

    version: int
    state: str = "START"  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


class _Model:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.active = True  # False once a config reload removed the model (its status rows stay)
        self.loaded: dict[int, LoadedVersion] = {}
        self.status: dict[int, VersionStatus] = {}
        self.scan_error: str | None = None  # the last failed listing, logged once per failure streak


_ASCII_SPACE = " \t\n\v\f\r"
_INT64_MAX = 2**63 - 1


def parse_version(name: str) -> int | None:
    """A version directory's number as ``absl::SimpleAtoi`` reads it, or None.

    Surrounding ASCII whitespace and a sign are allowed, digits only, within int64:
    ``00000123`` -> 123, ``+7`` -> 7; ``1e3``, ``0x10``, ``v1`` are not versions. Negative
    numbers parse upstream too; like the issue's contract we only serve non-negative ones.
    """
    text = name.strip(_ASCII_SPACE)
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not (digits.isascii() and digits.isdigit()):
        return None
    value = -int(digits) if text[:1] == "-" else int(digits)
    return value if 0 <= value <= _INT64_MAX else None


def scan_versions(base: Path) -> dict[int, str]:
    """Children of ``base`` whose names are versions: version -> the child's real name.

    As ``file_system_storage_path_source.cc``: every child counts (a file named ``3`` is a
    version that will fail to load), names are visited in sorted order and, when two name the
    same version (``0123`` and ``123``), the later one wins with a warning. A base path that is
    missing or cannot be listed (EMFILE, EIO, EACCES) raises ``OSError``: that is no answer
    about which versions exist, and reading it as "none" would unload every served version.
    """
    names = sorted(p.name for p in base.iterdir())
    found: dict[int, str] = {}
    for name in names:
        version = parse_version(name)
        if version is None:
            continue
        if version in found:
            log.warning(
                "Duplicate version directories detected. Version %d will be loaded from %s, %s will be ignored.",
                version,
                name,
                found[version],
            )
        found[version] = name
    return dict(sorted(found.items()))


class ModelStore:
    """Loads, serves and polls models; thread-safe lookups for the request handlers.

    ``loader(name, version, path)`` builds a ``LoadedVersion`` (tests may pass their own).
    ``config_file`` with ``config_poll_wait_s`` > 0: the config file is re-read at that interval
    (``start_polling``) and applied with ``reload_config``. ``allow_unavailable_labels``:
    ``--allow_version_labels_for_unavailable_models``. Raises ``ConfigError`` when a label of
    ``configs`` names a version that is not loaded yet (all of them, without the flag).
    """

    def __init__(
        self,
        configs: list[ModelConfig],
        poll_wait_s: float = 1.0,
        loader: Callable[[str, int, Path], LoadedVersion] = LoadedVersion,
        *,
        config_file: Path | None = None,
        config_poll_wait_s: float = 0.0,
        allow_unavailable_labels: bool = False,
    ) -> None:
        self._models: dict[str, _Model] = {}  # filled once the labels passed the check
        self._retired: dict[str, _Model] = {}  # removed by a reload: status API still lists them
        self._lock = threading.RLock()
        # One poll at a time (file system or config): a poll that computed its aspired versions
        # before a reload must not load a version the reload has just unloaded.
        self._poll_lock = threading.Lock()
        self._poll_wait_s = poll_wait_s
        self._loader = loader
        self._config_file = config_file
        self._config_poll_wait_s = config_poll_wait_s
        self._applied = list(configs)  # what the config file said when last applied
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._allow_unavailable_labels = allow_unavailable_labels
        try:
            self._check_labels(configs)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (labels are checked before any version loads; "
                "--allow_version_labels_for_unavailable_models lets them name versions still to load)"
            ) from None
        self._models = {c.name: _Model(c) for c in configs}

    @property
    def model_names(self) -> list[str]:
        return list(self._models)

    # -- loading ------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Scan every base path; load newly aspired versions, then unload the others."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                self._poll_model(model)

    # -- config reload ------------------------------------------------------------------------

    def reload_config(self, configs: list[ModelConfig]) -> None:
        """``ServerCore::ReloadConfig``: apply a new model list (add, remove, change policy/labels).

        Removed models unload (UNLOADING -> END; the status API still lists them); new ones and
        changed policies are polled at once. Raises ``ConfigError`` (nothing applied) for a
        config that cannot be applied.
        """
        with self._poll_lock:
            with self._lock:
                names = {c.name for c in configs}
                if len(names) != len(configs):
                    raise ConfigError("duplicate model names")
                self._check_labels(configs)
                models: dict[str, _Model] = {}
                for config in configs:
                    model = self._models.get(config.name) or self._retired.pop(config.name, None) or _Model(config)
                    model.config, model.active = config, True
                    models[config.name] = model
                for name in [n for n in self._models if n not in names]:
                    gone = self._models[name]
                    gone.active = False
                    self._retired[name] = gone
                self._models = models
                self._applied = list(configs)
            for model in models.values():
                self._poll_model(model)
            for model in list(self._retired.values()):
                self._poll_model(model)  # not aspired any more: unloads what it had
        log.info("Finished reloading config")

    def _check_labels(self, configs: list[ModelConfig]) -> None:
        """``UpdateModelVersionLabelMap``: each label must name an AVAILABLE version, unless the
        flag allows it (not for moving an existing label to another version)."""
        with self._lock:
            for config in configs:
                model = self._models.get(config.name)
                current = model.config.labels if model is not None else {}
                for label, version in config.labels.items():
                    if self._allow_unavailable_labels and current.get(label, version) == version:
                        continue
                    state = model.status.get(version) if model is not None else None
                    if state is None or state.state != "AVAILABLE":
                        raise ConfigError(
                            f"FAILED_PRECONDITION: Request to assign label to version {version} of model "
                            f"{config.name}, which is not currently available for inference"
                        )

    def poll_config_once(self) -> bool:
        """Re-read the config file; apply it if it changed. False (and logged) when it could not be
        read or applied: the config in force stays, as ``PollFilesystemAndReloadConfig`` does."""
        if self._config_file is None:
            return False
        try:
            configs = parse_model_server_config(self._config_file)
        except ConfigError as exc:
            log.error("Failed to read ModelServerConfig file: %s", exc)
            return False
        with self._lock:
            if configs == self._applied:
                return True
        try:
            self.reload_config(configs)
        except ConfigError as exc:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc)
            return False
        return True

    def _aspired(self, model: _Model) -> dict[int, str]:
        """The versions the policy serves now: version -> directory name under the base path."""
        if not model.active:
            return {}
        kind, arg = model.config.policy
        base = model.config.base_path
        if kind == "specific" and all((base / str(v)).exists() for v in arg):  # type: ignore[attr-defined]
            # AspireSpecificVersionsFastPath: every listed version exists under its plain name.
            return {v: str(v) for v in sorted(arg)}  # type: ignore[call-overload]
        found = scan_versions(base)
        if kind == "all":
            return found
        if kind == "specific":
            return {v: d for v, d in found.items() if v in arg}  # type: ignore[operator]
        latest = max(int(arg), 1)  # type: ignore[call-overload]
        return dict(list(found.items())[-latest:])

    def _poll_model(self, model: _Model) -> None:
        try:
            aspired = self._aspired(model)
        except OSError as exc:
            # As PollFileSystemForServable: a failed listing emits no aspired versions, so what
            # is served stays; only a listing that succeeds without a version unloads it.
            message = f"{exc.strerror or exc} ({model.config.base_path})"
            if model.scan_error != message:
                log.warning(
                    "Could not list base path of servable %s, keeping the versions it serves: %s",
                    model.config.name,
                    message,
                )
            model.scan_error = message
            return
        if model.scan_error is not None:
            log.info("Base path of servable %s is readable again", model.config.name)
            model.scan_error = None
        if model.active and not aspired and not model.loaded and not model.status:
            log.warning(
                "No versions of servable %s found under base path %s", model.config.name, model.config.base_path
            )
        for version in aspired:
            with self._lock:
                known = model.status.get(version)
                if known is not None and (known.state in ("LOADING", "AVAILABLE") or known.error_code != "OK"):
                    continue  # a failed load is not retried, as tensorflow/serving
                model.status[version] = VersionStatus(version, "LOADING")
            try:
                loaded = self._loader(model.config.name, version, model.config.base_path / aspired[version])
                loaded.warm_up()
            except Exception as exc:  # any load failure is reported through the status API
                log.error("Loading %s version %d failed: %s", model.config.name, version, exc)
                code = exc.code if isinstance(exc, ServingError) else "UNKNOWN"
                with self._lock:
                    model.status[version] = VersionStatus(version, "END", code, " ".join(str(exc).split())[:500])
                continue
            # Objects the model brought are long-lived: freezing them keeps the collector from
            # rescanning ~300k TensorFlow objects during every request (JSON decode gets ~5x faster).
            gc.collect()
            gc.freeze()
            with self._lock:
                if not model.active:  # removed by a reload while loading
                    model.status[version] = VersionStatus(version, "END")
                    continue
                model.loaded[version] = loaded
                model.status[version] = VersionStatus(version, "AVAILABLE")
            log.info("Successfully loaded servable version {name: %s version: %d}", model.config.name, version)
        with self._lock:
            for version in [v for v in model.loaded if v not in aspired]:
                model.status[version] = VersionStatus(version, "UNLOADING")
                del model.loaded[version]
                model.status[version] = VersionStatus(version, "END")
                log.info("Unloaded servable version {name: %s version: %d}", model.config.name, version)

    def start_polling(self) -> None:
        """Poll the file system every ``poll_wait_s`` seconds and the config file every
        ``config_poll_wait_s`` seconds, each in a daemon thread (those > 0)."""
        if self._threads:
            return

        def loop(wait_s: float, poll: Callable[[], object], what: str) -> None:
            while not self._stop.wait(wait_s):
                try:
                    poll()
                except Exception:  # the poller must survive a bad directory or config
                    log.exception("%s poll failed", what)

        if self._poll_wait_s > 0:
            self._threads.append(
                threading.Thread(
                    target=loop, args=(self._poll_wait_s, self.poll_once, "version"), name="tfsbench-version-poll"
                )
            )
        if self._config_file is not None and self._config_poll_wait_s > 0:
            self._threads.append(
                threading.Thread(
                    target=loop,
                    args=(self._config_poll_wait_s, self.poll_config_once, "config"),
                    name="tfsbench-config-poll",
                )
            )
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- lookups ------------------------------------------------------------------------------

    def lookup(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """``GetServableHandle``: the version a request means, or the reference's error."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                if model is None or label not in model.config.labels:
                    raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
                version = model.config.labels[label]
            if version is None:
                if model is None or not model.loaded:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
                return model.loaded[max(model.loaded)]
            if model is None or version not in model.loaded:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
            return model.loaded[version]

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """``GetModelStatus``: version states, highest first (a label is ignored upstream)."""
        with self._lock:
            model = self._models.get(name) or self._retired.get(name)
            rows = sorted((model.status.values() if model else []), key=lambda s: -s.version)
            if version is not None:
                rows = [r for r in rows if r.version == version]
                if not rows:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            if not rows:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            return [VersionStatus(r.version, r.state, r.error_code, r.error_message) for r in rows]

    def all_available(self) -> bool:
        """Whether every model has at least one AVAILABLE version."""
        with self._lock:
            return all(model.loaded for model in self._models.values())
