"""A requests-based client for the TensorFlow Serving REST API (status, metadata, predict).

It speaks only what ``shared/docs/tf-serving-rest-api.md`` describes, so it works unchanged
against tensorflow/serving, the embedded server, or any compatible endpoint::

    client = TFServingClient("http://127.0.0.1:8501", "classifier")
    client.wait_until_available(timeout_s=60)
    spec = client.input_spec()                 # InputSpec("examples", "uint8", (None, 128, 128, 3))
    response = client.predict(body, encoding.headers(), batch=16)

Errors are translated at the boundary: an unreachable server or a timeout becomes
``ServerError`` naming the URL; a TF Serving error body (``{"error": "..."}``) becomes
``PredictError(status, message)`` with the server's own message; a 200 response that does not
hold one well-shaped prediction per image becomes ``ServerError`` saying what is wrong.

Load-generator side: no TensorFlow here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import orjson
import requests

from bench.api_names import DEFAULT_SIGNATURE
from bench.errors import ConfigError, PredictError, ServerError
from bench.payloads.specs import InputSpec, short_dtype

__all__ = ["Comparison", "TFServingClient"]

_POLL_INTERVAL_S = 0.2
# What a "connection refused" error suggests: the embedded server on the default port, or a container.
START_HINT = "tfsbench serve --rest_api_port {port} --model_name classifier --model_base_path models/classifier"
_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Comparison:
    """Predictions from a server checked against expected outputs for a sample of rows."""

    rows_checked: int
    max_abs_diff: float
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


class TFServingClient:
    """Status, metadata and predict calls for one model (and optionally one version).

    ``base_url``: e.g. ``http://127.0.0.1:8501``; ``timeout_s``: per-request connect and read
    timeout in seconds.
    """

    def __init__(
        self, base_url: str, model_name: str = "classifier", version: int | None = None, timeout_s: float = 30.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"'{base_url}' is not an http(s) URL (expected e.g. http://127.0.0.1:8501)")
        if "/v1/" in f"{parts.path}/":
            root = f"{parts.scheme}://{parts.netloc}"
            raise ConfigError(
                f"'{base_url}' has a path: give the server's root, e.g. {root} "
                "(tfsbench adds /v1/models/NAME; --model-name and --model-version choose the model)"
            )
        if not model_name:
            raise ConfigError("model name must not be empty")
        if version is not None and version < 0:
            raise ConfigError(f"model version must be zero or positive, got {version}")
        if timeout_s <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout_s} s")
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.timeout_s = timeout_s
        self.model_url = f"{self.base_url}/v1/models/{quote(model_name, safe='')}"
        if version is not None:
            self.model_url += f"/versions/{version}"
        self.predict_url = f"{self.model_url}:predict"
        self.metadata_url = f"{self.model_url}/metadata"
        self._session = requests.Session()
        self._metadata: dict[str, Any] | None = None
        self.server_header: str | None = None  # the HTTP Server header of the last response

    def __repr__(self) -> str:
        return f"TFServingClient({self.base_url!r}, {self.model_name!r}, version={self.version})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> TFServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        return self._send(method, url, body, headers, self.timeout_s)

    def _send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None, timeout_s: float
    ) -> requests.Response:
        try:
            response = self._session.request(method, url, data=body, headers=dict(headers or {}), timeout=timeout_s)
        except requests.Timeout as exc:
            raise ServerError(f"no answer from {url} within {timeout_s:g} s") from exc
        except requests.ConnectionError as exc:
            reason = _reason(exc)
            port = urlsplit(url).port or 8501
            hint = f" (is a server running? {START_HINT.format(port=port)})" if "refused" in reason.lower() else ""
            raise ServerError(f"cannot reach TF Serving at {url}: {reason}{hint}") from exc
        except requests.RequestException as exc:
            raise ServerError(f"request to {url} failed: {exc}") from exc
        self.server_header = response.headers.get("Server")
        if response.status_code != 200:
            raise PredictError(response.status_code, _error_message(response))
        return response

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            # TF Serving writes non-finite floats as bare NaN/Infinity, which only the
            # stdlib parser accepts.
            try:
                return json.loads(response.content)
            except ValueError as exc:
                raise ServerError(f"{response.url} answered 200 with a body that is not JSON: {exc}") from exc

    # -- API ---------------------------------------------------------------------------------

    def status(self, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /v1/models/{name}[/versions/{v}]``: ``{"model_version_status": [...]}``."""
        return self._json(self._send("GET", self.model_url, None, None, timeout_s or self.timeout_s))  # type: ignore[no-any-return]

    @staticmethod
    def available_version(status: Mapping[str, Any]) -> int | None:
        """The highest AVAILABLE version in a status answer, or None."""
        versions = [
            int(entry.get("version", 0))
            for entry in status.get("model_version_status", [])
            if entry.get("state") == "AVAILABLE"
        ]
        return max(versions) if versions else None

    def is_serving(self, timeout_s: float = 2.0) -> bool:
        """Whether the status endpoint answers 200 now (a cheap health check between and during cells)."""
        try:
            self.status(timeout_s)
        except ServerError:
            return False
        return True

    def wait_until_available(self, timeout_s: float, check: Callable[[], None] | None = None) -> int:
        """Poll the status endpoint until the model (or ``version``) is AVAILABLE; returns that version.

        Connection errors and 404s (a server still starting or loading) are retried every
        0.2 s; after ``timeout_s`` seconds a ``ServerError`` says what the last poll saw.
        ``check()`` runs before every poll and raises to give up early (e.g. the server's process
        or container exited).
        """
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if check is not None:
                check()
            remaining = deadline - time.monotonic()
            try:
                status = self.status(max(0.05, min(5.0, remaining)))
                version = self.available_version(status)
                if version is not None:
                    return version
                states = {
                    str(entry.get("version")): entry.get("state") for entry in status.get("model_version_status", [])
                }
                last = "versions " + ", ".join(f"{v}: {s}" for v, s in states.items()) if states else "no versions"
            except ServerError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"model '{self.model_name}' at {self.model_url} not AVAILABLE after {timeout_s:g} s ({last})"
                )
            time.sleep(min(_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    def describe(self) -> dict[str, Any]:
        """What a run records about its target: newest AVAILABLE version, every version's status,
        the signatures and the HTTP Server header. ``ServerError`` if no version is AVAILABLE."""
        status = self.status()
        version = self.available_version(status)
        if version is None:
            raise ServerError(f"model '{self.model_name}' at {self.base_url} has no AVAILABLE version yet")
        target: dict[str, Any] = {
            "host": self.base_url,
            "model_name": self.model_name,
            "model_version": str(version),
            "model_version_status": status.get("model_version_status", []),
            "server_header": self.server_header,
        }
        try:
            target["signatures"] = sorted(self.signatures())
        except ServerError as exc:
            target["signatures_error"] = str(exc)
        return target

    def metadata(self) -> dict[str, Any]:
        """``GET .../metadata``: model spec and signature defs (cached after the first call)."""
        if self._metadata is None:
            self._metadata = self._json(self._request("GET", self.metadata_url))
        return self._metadata

    def signatures(self) -> dict[str, dict[str, Any]]:
        """Signature name -> signature def, without TF's internal ``__saved_model_init_op``."""
        try:
            defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError) as exc:
            raise ServerError(f"{self.metadata_url} returned metadata without signature_def") from exc
        return {name: sig for name, sig in defs.items() if not name.startswith("__")}

    def _signature(self, signature_name: str) -> dict[str, Any]:
        name = signature_name or DEFAULT_SIGNATURE
        signatures = self.signatures()
        if name not in signatures:
            raise ConfigError(
                f"model '{self.model_name}' has no signature '{name}' (has: {', '.join(sorted(signatures)) or 'none'})"
            )
        return signatures[name]

    def input_spec(self, signature_name: str = DEFAULT_SIGNATURE) -> InputSpec:
        """The signature's input, read from metadata, e.g. ``InputSpec("examples", "uint8", (None, 128, 128, 3))``.

        With several inputs, the first one that is a rank-4 image batch is chosen; ``ConfigError``
        when there is none.
        """
        specs = [_tensor_spec(name, info) for name, info in self._signature(signature_name)["inputs"].items()]
        if len(specs) == 1:
            return specs[0]
        for spec in specs:
            if len(spec.shape) == 4:
                return spec
        raise ConfigError(
            f"signature '{signature_name}' has inputs {', '.join(s.name for s in specs)} and none is an image batch"
        )

    def input_specs(self, signature_name: str = DEFAULT_SIGNATURE) -> list[InputSpec]:
        """Every input of the signature (name, short dtype, shape) from metadata, in the metadata's order."""
        return [_tensor_spec(name, info) for name, info in self._signature(signature_name)["inputs"].items()]

    def output_specs(self, signature_name: str = DEFAULT_SIGNATURE) -> dict[str, InputSpec]:
        """The signature's outputs (name, short dtype, shape) from metadata."""
        return {name: _tensor_spec(name, info) for name, info in self._signature(signature_name)["outputs"].items()}

    def predict(
        self,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        signature_name: str = "",
        batch: int | None = None,
    ) -> dict[str, Any]:
        """POST ``body`` to ``:predict`` and return the decoded response.

        With ``batch`` (images in the body), the response is checked: one prediction per image,
        each shaped like the signature's outputs in the metadata (``ServerError`` otherwise).
        """
        response = self._json(self._request("POST", self.predict_url, body, headers or _JSON_HEADERS))
        if not isinstance(response, dict):
            raise ServerError(f"{self.predict_url} answered 200 with a JSON {type(response).__name__}, not an object")
        if batch is not None:
            self.check_response(response, batch, signature_name)
        return response

    def check_response(self, response: Mapping[str, Any], batch: int, signature_name: str = "") -> None:
        """``ServerError`` unless ``response`` holds ``batch`` predictions shaped like the outputs."""
        outputs = self.output_specs(signature_name)
        rows = _rows(response, outputs)
        if len(rows) != batch:
            raise ServerError(f"{self.predict_url} returned {len(rows)} predictions for a batch of {batch}")
        for index, row in enumerate(rows):
            for name, value in row.items():
                spec = outputs.get(name)
                if spec is None:
                    raise ServerError(f"prediction {index} has output '{name}' that the signature does not declare")
                got = np.shape(value)
                want = spec.shape[1:]
                if len(got) != len(want) or any(w is not None and w != g for g, w in zip(got, want, strict=True)):
                    raise ServerError(
                        f"prediction {index} output '{name}' has shape {list(got)}, signature says {list(want)}"
                    )

    def compare(
        self,
        response: Mapping[str, Any],
        expected: Mapping[str, np.ndarray],
        sample: Sequence[int] | None = None,
        atol: float = 1e-4,
        rtol: float = 1e-3,
    ) -> Comparison:
        """Compare rows of a predict response with expected outputs (e.g. in-process predictions).

        ``expected``: output name -> array ``[batch, ...]``; ``sample``: row indexes to check
        (default all). Float outputs compare within ``atol + rtol * |expected|``, others exactly.
        """
        rows = _rows(response, {name: InputSpec(name, "", ()) for name in expected})
        batch = min(len(v) for v in expected.values()) if expected else 0
        indexes = list(range(batch)) if sample is None else list(sample)
        mismatches: list[str] = []
        worst = 0.0
        if len(rows) != batch:
            mismatches.append(f"{len(rows)} predictions, expected {batch}")
        for index in indexes:
            if index >= len(rows) or index >= batch:
                mismatches.append(f"row {index} missing")
                continue
            for name, want_all in expected.items():
                want = np.asarray(want_all[index])
                if name not in rows[index]:
                    mismatches.append(f"row {index}: output '{name}' missing")
                    continue
                got = np.asarray(rows[index][name], dtype=want.dtype if want.dtype.kind != "f" else np.float64)
                if got.shape != want.shape:
                    mismatches.append(f"row {index} '{name}': shape {list(got.shape)} != {list(want.shape)}")
                    continue
                if want.dtype.kind == "f":
                    diff = float(np.max(np.abs(got - want), initial=0.0))
                    worst = max(worst, diff)
                    if not np.allclose(got, want, atol=atol, rtol=rtol):
                        mismatches.append(f"row {index} '{name}': max abs difference {diff:.3g}")
                elif not np.array_equal(got, want):
                    mismatches.append(f"row {index} '{name}': {got.tolist()} != {want.tolist()}")
        return Comparison(len(indexes), worst, tuple(mismatches))


def _tensor_spec(name: str, info: Mapping[str, Any]) -> InputSpec:
    shape_info = info.get("tensor_shape", {})
    if shape_info.get("unknown_rank"):
        shape: tuple[int | None, ...] = ()
    else:
        sizes = [int(dim.get("size", -1)) for dim in shape_info.get("dim", [])]
        shape = tuple(None if size < 0 else size for size in sizes)
    return InputSpec(name, short_dtype(str(info.get("dtype", ""))), shape)


def _rows(response: Mapping[str, Any], outputs: Mapping[str, InputSpec]) -> list[dict[str, Any]]:
    """Per-row ``{output: value}`` from a row (``predictions``) or columnar (``outputs``) response."""
    names = list(outputs)
    if "predictions" in response:
        predictions = response["predictions"]
        if not isinstance(predictions, list):
            raise ServerError("'predictions' in the predict response is not a list")
        if predictions and all(isinstance(p, dict) for p in predictions):
            return list(predictions)
        if len(names) != 1:
            raise ServerError(f"predictions are plain values but the signature has outputs {', '.join(names)}")
        return [{names[0]: p} for p in predictions]
    if "outputs" in response:
        columns = response["outputs"]
        if not isinstance(columns, dict):
            if len(names) != 1:
                raise ServerError(f"'outputs' is a plain value but the signature has outputs {', '.join(names)}")
            columns = {names[0]: columns}
        lengths = {name: len(value) for name, value in columns.items() if isinstance(value, list)}
        if not lengths or len(set(lengths.values())) != 1 or len(lengths) != len(columns):
            raise ServerError(f"columnar outputs have inconsistent batch sizes: {lengths}")
        count = next(iter(lengths.values()))
        return [{name: value[i] for name, value in columns.items()} for i in range(count)]
    raise ServerError(f"predict response has neither 'predictions' nor 'outputs' (keys: {', '.join(response)})")


def _reason(exc: requests.ConnectionError) -> str:
    """The innermost cause of a connection error, e.g. ``[Errno 111] Connection refused``."""
    cause: BaseException | None = exc
    while cause is not None and (cause.__cause__ or cause.__context__) is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    text = str(cause or exc)
    # urllib3 wraps the OS error text in its own class names; keep the part a user can act on.
    for marker in ("[Errno", "Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return text[text.index(marker) :].rstrip(")'\"")
    return text


def _error_message(response: requests.Response) -> str:
    """The message of a TF Serving error body ``{"error": "..."}``, or what else came back."""
    if not response.content:
        return f"{response.reason or 'error'} (empty body)"
    try:
        doc = json.loads(response.content)
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return f"{response.reason or 'error'}: {text[:200]}"
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message: str = doc["error"]
        return message
    return response.text.strip()[:200]
