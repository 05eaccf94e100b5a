"""Which models and versions the embedded server serves: loading, polling, config file, labels.

Mirrors tensorflow/serving's ServerCore as far as the REST API can see it:

* ``--model_base_path``: numeric sub-directories are versions (``00000123`` -> 123); the default
  policy serves the highest one; a poll every ``--file_system_poll_wait_seconds`` loads a new
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
* lookups raise ``JsonTensorError`` with the reference's NOT_FOUND / INVALID_ARGUMENT texts.

TensorFlow is imported lazily, the first time a SavedModel is loaded.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.serving.json_tensor import InputSpec, JsonTensorError

log = logging.getLogger("tfsbench.serve")

__all__ = ["LoadedVersion", "ModelConfig", "ModelStore", "parse_model_server_config", "parse_text_proto"]

DEFAULT_SIGNATURE = "serving_default"


# -- text-format protobuf (just enough for ModelServerConfig, BatchingParameters, MonitoringConfig)


_TOKEN = re.compile(
    r"""\s*(?:(\#[^\n]*)|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|([A-Za-z_][\w.]*)|([-+]?[\d.][\w.+-]*)|([{}<>:;,\[\]]))""",
)


def parse_text_proto(text: str, source: str = "config") -> dict[str, list]:
    """Parse protobuf text format into ``{field: [values]}`` (messages become nested dicts).

    Raises ``ConfigError`` naming ``source`` and the position for malformed text.
    """
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ConfigError(f"{source}: cannot parse text proto near {text[pos : pos + 20]!r}")
        pos = match.end()
        if match.group(1):
            continue
        for kind, group in (("str", 2), ("ident", 3), ("num", 4), ("punct", 5)):
            if match.group(group) is not None:
                tokens.append((kind, match.group(group), match.start(group)))
                break

    def parse_message(i: int, closing: str | None) -> tuple[dict[str, list], int]:
        message: dict[str, list] = {}
        while i < len(tokens):
            kind, value, at = tokens[i]
            if kind == "punct" and value in ("}", ">"):
                if closing is None:
                    raise ConfigError(f"{source}: unexpected '{value}' at offset {at}")
                return message, i + 1
            if kind == "punct" and value in (";", ","):
                i += 1
                continue
            if kind != "ident":
                raise ConfigError(f"{source}: expected a field name at offset {at}, got {value!r}")
            name = value
            i += 1
            if i < len(tokens) and tokens[i][1] == ":":
                i += 1
            if i >= len(tokens):
                raise ConfigError(f"{source}: field '{name}' has no value")
            kind, value, at = tokens[i]
            if value in ("{", "<"):
                sub, i = parse_message(i + 1, "}" if value == "{" else ">")
                message.setdefault(name, []).append(sub)
            elif kind == "str":
                message.setdefault(name, []).append(_unquote(value))
                i += 1
            elif kind == "num":
                message.setdefault(name, []).append(_number(value, source, name))
                i += 1
            elif kind == "ident":
                message.setdefault(name, []).append({"true": True, "false": False}.get(value.lower(), value))
                i += 1
            else:
                raise ConfigError(f"{source}: bad value for '{name}' at offset {at}")
        if closing is not None:
            raise ConfigError(f"{source}: missing '{closing}'")
        return message, i

    message, _ = parse_message(0, None)
    return message


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in body else body


def _number(text: str, source: str, name: str) -> int | float:
    try:
        return int(text, 0)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{source}: '{name}' has a bad number {text!r}") from None


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
    message = parse_text_proto(text, f"--model_config_file {path}")
    lists = message.get("model_config_list", [])
    if not lists:
        raise ConfigError(f"--model_config_file {path}: no model_config_list")
    configs = []
    for entry in (c for lst in lists for c in lst.get("config", [])):
        name = _single(entry, "name", path)
        base = _single(entry, "base_path", path)
        platform = entry.get("model_platform", ["tensorflow"])[0]
        if platform != "tensorflow":
            raise ConfigError(f"--model_config_file {path}: model {name}: unsupported model_platform {platform!r}")
        policy: tuple[str, object] = ("latest", 1)
        for pol in entry.get("model_version_policy", []):
            if "specific" in pol:
                versions = tuple(int(v) for v in pol["specific"][0].get("versions", []))
                if not versions:
                    raise ConfigError(f"--model_config_file {path}: model {name}: specific policy lists no versions")
                policy = ("specific", versions)
            elif "all" in pol:
                policy = ("all", 0)
            elif "latest" in pol:
                policy = ("latest", int(pol["latest"][0].get("num_versions", [1])[0]))
        labels = {}
        for label in entry.get("version_labels", []):
            key, value = label.get("key", [None])[0], label.get("value", [None])[0]
            if not isinstance(key, str) or not isinstance(value, int):
                raise ConfigError(f"--model_config_file {path}: model {name}: version_labels needs key and value")
            labels[key] = value
        configs.append(ModelConfig(str(name), Path(str(base)), policy, labels))
    if not configs:
        raise ConfigError(f"--model_config_file {path}: model_config_list has no config entries")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--model_config_file {path}: duplicate model names")
    return configs


def _single(entry: dict, key: str, path: Path) -> object:
    values = entry.get(key)
    if not values:
        raise ConfigError(f"--model_config_file {path}: a config entry has no {key}")
    return values[0]


# -- loaded SavedModels -------------------------------------------------------------------------


def _short_dtype(enum_name: str) -> str:
    """``DT_UINT8`` -> ``uint8`` (TensorFlow's DataTypeString)."""
    return enum_name[3:].lower() if enum_name.startswith("DT_") else enum_name.lower()


class LoadedVersion:
    """A loaded SavedModel version: signatures, their input specs and the metadata JSON."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf
        from google.protobuf import json_format
        from tensorflow.core.framework import types_pb2
        from tensorflow.core.protobuf import saved_model_pb2

        self.name = name
        self.version = version
        self.path = path
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        meta = proto.meta_graphs[0]
        # SignatureDefMap (tensorflow_serving/apis) is {signature_def: map<string, SignatureDef>}.
        self.signature_map_json: dict = {
            "signature_def": {
                key: json_format.MessageToDict(
                    sig, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                for key, sig in meta.signature_def.items()
            }
        }
        self.method_names = {key: sig.method_name for key, sig in meta.signature_def.items()}
        self.signature_text = {key: str(sig) for key, sig in meta.signature_def.items()}
        self.output_counts = {key: len(sig.outputs) for key, sig in meta.signature_def.items()}
        self.inputs: dict[str, dict[str, InputSpec]] = {}
        self._shape_free: set[tuple[str, str]] = set()
        self.output_names: dict[str, list[str]] = {}
        for key, sig in meta.signature_def.items():
            self.inputs[key] = {
                alias: InputSpec(
                    alias,
                    _short_dtype(types_pb2.DataType.Name(info.dtype)),
                    tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim),
                )
                for alias, info in sig.inputs.items()
            }
            self.output_names[key] = sorted(sig.outputs)
            self._shape_free |= {(key, alias) for alias, info in sig.inputs.items() if info.tensor_shape.unknown_rank}
        self._module = tf.saved_model.load(str(path))
        self._functions = dict(self._module.signatures)
        self._tf = tf

    def signature_inputs(self, signature_name: str) -> Mapping[str, InputSpec]:
        """``GetInfoMap``: the input map of a signature, or the reference's 400."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.inputs or name not in self._functions:
            raise JsonTensorError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
        return self.inputs[name]

    def run(self, signature_name: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature (TensorFlow releases the GIL while its kernels run)."""
        tf = self._tf
        function = self._functions[signature_name or DEFAULT_SIGNATURE]
        expected = self.inputs[signature_name or DEFAULT_SIGNATURE]
        if set(tensors) != set(expected):
            sent, need = sorted(tensors), sorted(expected)
            raise JsonTensorError(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(need)} len({{{','.join(sent)}}}) != "
                f"len({{{','.join(need)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(need)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(need) - set(sent)))}}}.",
            )
        for key, value in tensors.items():
            declared = expected[key].shape
            if (signature_name or DEFAULT_SIGNATURE, key) in self._shape_free:
                continue
            # Checked before the run: some kernels abort the whole process (a failed CHECK) on
            # tensors of the wrong rank, which no client must be able to cause.
            if value.ndim != len(declared) or any(
                d is not None and d != n for d, n in zip(declared, value.shape, strict=True)
            ):
                want = ",".join("?" if d is None else str(d) for d in declared)
                got = ",".join(str(n) for n in value.shape)
                raise JsonTensorError(
                    "INVALID_ARGUMENT",
                    f"input tensor {key} has shape [{got}], which the signature's [{want}] does not allow",
                )
        try:
            args = {key: tf.constant(value) for key, value in tensors.items()}
            result = function(**args)
        except tf.errors.OpError as exc:
            raise JsonTensorError(_CODE_NAMES.get(exc.error_code, "UNKNOWN"), exc.message.split("\n")[0]) from None
        except (TypeError, ValueError) as exc:
            # The concrete function refuses tensors that do not fit the signature before running;
            # tensorflow/serving would fail inside the graph with INVALID_ARGUMENT as well.
            raise JsonTensorError("INVALID_ARGUMENT", " ".join(str(exc).split())[:2000]) from None
        return {key: value.numpy() for key, value in result.items()}

    def warm_up(self) -> None:
        """Run each numeric signature once on zeros, so the first request pays no tracing cost."""
        for key, specs in self.inputs.items():
            if key not in self._functions:
                continue
            tensors = {}
            for alias, spec in specs.items():
                if spec.dtype == "string" or any(d is None for d in spec.shape[1:]):
                    break
                dims = tuple(1 if d is None else d for d in spec.shape)
                tensors[alias] = np.zeros(dims, dtype=self._tf.dtypes.as_dtype(spec.dtype).as_numpy_dtype)
            else:
                self.run(key, tensors)


_CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


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


def _scan_versions(base: Path) -> list[int]:
    """Numeric sub-directory names of ``base`` as versions (``00000123`` -> 123)."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    return sorted({int(p.name) for p in entries if p.name.isdigit() and p.is_dir()})


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

    def _aspired(self, model: _Model) -> list[int]:
        if not model.active:
            return []
        found = _scan_versions(model.config.base_path)
        kind, arg = model.config.policy
        if kind == "all":
            return found
        if kind == "specific":
            return [v for v in found if v in arg]  # type: ignore[operator]
        return found[-int(arg) :] if found and int(arg) > 0 else []  # type: ignore[call-overload]

    def _poll_model(self, model: _Model) -> None:
        aspired = self._aspired(model)
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
                loaded = self._loader(model.config.name, version, model.config.base_path / str(version))
                loaded.warm_up()
            except Exception as exc:  # any load failure is reported through the status API
                log.error("Loading %s version %d failed: %s", model.config.name, version, exc)
                with self._lock:
                    model.status[version] = VersionStatus(version, "END", "UNKNOWN", " ".join(str(exc).split())[:500])
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
                    raise JsonTensorError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
                version = model.config.labels[label]
            if version is None:
                if model is None or not model.loaded:
                    raise JsonTensorError("NOT_FOUND", f"Servable not found for request: Latest({name})")
                return model.loaded[max(model.loaded)]
            if model is None or version not in model.loaded:
                raise JsonTensorError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
            return model.loaded[version]

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """``GetModelStatus``: version states, highest first (a label is ignored upstream)."""
        with self._lock:
            model = self._models.get(name) or self._retired.get(name)
            rows = sorted((model.status.values() if model else []), key=lambda s: -s.version)
            if version is not None:
                rows = [r for r in rows if r.version == version]
                if not rows:
                    raise JsonTensorError("NOT_FOUND", f"Could not find version {version} of model {name}")
            if not rows:
                raise JsonTensorError("NOT_FOUND", f"Could not find any versions of model {name}")
            return [VersionStatus(r.version, r.state, r.error_code, r.error_message) for r in rows]

    def all_available(self) -> bool:
        """Whether every model has at least one AVAILABLE version."""
        with self._lock:
            return all(model.loaded for model in self._models.values())

    def loaded_versions(self) -> list[LoadedVersion]:
        with self._lock:
            return [v for model in self._models.values() for v in model.loaded.values()]
