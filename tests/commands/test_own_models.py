"""Your own model: sweeps of signatures other than the reference classifier's, end to end.

Each model is exported by ``export.variants`` into a temp dir and served by the real embedded
server; the sweep runs as ``python -m bench sweep`` with real Locust. Every request must answer
200, and every recorded payload must be one of the bodies the run's own input plan makes, so the
bytes on the wire are what the signature's dtype implies.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from bench.payloads.encodings import get_encoding
from bench.payloads.input_plan import InputBatches, InputOptions, plan_inputs
from bench.payloads.specs import InputSpec
from bench.scenario.signature_inputs import PLAN_FILE, read_plan_file
from bench.store import runs
from export.variants import VariantSpec, export_variant
from reports.report import build_report
from tests.helpers.paths import REPO

POOL = 2


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, spec: VariantSpec) -> Iterator[str]:
    from bench.serving.server import EmbeddedServer

    out = tmp_path_factory.mktemp(name)
    export_variant(out, spec, name, 1, force=False, seed=3)
    with EmbeddedServer(model_base_path=out / name, model_name=name, port=0) as server:
        yield server.url


@pytest.fixture(scope="module")
def float_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tmp_path_factory, "f32", VariantSpec("reference", "float32", 224, "input_1"))


@pytest.fixture(scope="module")
def two_input_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # image size 0: pixels [-1,-1,-1,3], so a sweep needs --input-shape
    yield from _serve(tmp_path_factory, "two", VariantSpec("two-input", "float32", 0, "pixels"))


@pytest.fixture(scope="module")
def bytes_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tmp_path_factory, "bytes", VariantSpec("bytes-only"))


def sweep(url: str, model: str, out: Path, encodings: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "bench", "sweep", "--host", url, "--model-name", model, "--batch-sizes", "1,2",
        "--encodings", encodings, "--users", "1", "--requests", "6", "--duration", "20s", "--pool-size", str(POOL),
        "--no-report", "--out", str(out), *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def check_run(out: Path, encodings: list[str]) -> tuple[runs.Run, pd.DataFrame]:
    """Every cell done, every request 200, every payload one of the plan's own bodies."""
    run = runs.load_run(out / runs.LATEST)
    assert not run.incomplete, run.incomplete_reason
    rows = pd.read_csv(run.requests_path, keep_default_na=False)
    plans = read_plan_file(run.path / PLAN_FILE)
    assert {c["cell"] for c in run.cells} == {f"b{b}-{e}" for b in (1, 2) for e in encodings}
    for cell in run.cells:
        assert cell["status"] == "done"
        cell_rows = rows[rows["cell"] == cell["cell"]]
        assert len(cell_rows) >= 6
        assert (cell_rows["status"] == 200).all()
        plan = plans[cell["encoding"]]
        encoding = get_encoding(cell["encoding"]).with_signature(plan.signature_name)
        batches = InputBatches(plan)
        sizes = {len(encoding.encode(batches.batch(cell["batch"], i))) for i in range(POOL)}
        assert set(cell_rows["payload_bytes"]) <= sizes
    return run, rows


def test_a_float32_224_model_named_input_1(float_url: str, tmp_path: Path) -> None:
    proc = sweep(float_url, "f32", tmp_path, "row-orjson,columnar-orjson")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, rows = check_run(tmp_path, ["row-orjson", "columnar-orjson"])
    (described,) = run.meta["signature"]["describe"]
    assert described == "serving_default: input_1 float32 [-1,224,224,3] image 0:1"
    # float32 pixels in [0, 1] as JSON text: about 10-11 bytes a value ("0.63700664,"), not uint8's 2-4
    per_value = rows["payload_bytes"] / (rows["batch"] * 224 * 224 * 3)
    assert per_value.between(8.0, 12.0).all()


def test_two_inputs_and_an_unknown_image_size(two_input_url: str, tmp_path: Path) -> None:
    proc = sweep(two_input_url, "two", tmp_path / "a", "row-orjson")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tfsbench sweep: error: input 'pixels' has shape [-1,-1,-1,3] with unknown dims beyond the batch: "
        "give them with --input-shape pixels=96x96x3"
    ]
    assert not (tmp_path / "a").exists()  # refused before a run directory was made
    proc = sweep(
        two_input_url, "two", tmp_path / "b", "row-named-orjson,columnar-orjson",
        "--input-shape", "pixels=16x16x3", "--input-range", "threshold=0.2:0.4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, _ = check_run(tmp_path / "b", ["row-named-orjson", "columnar-orjson"])
    inputs = run.meta["signature"]["by_encoding"]["columnar-orjson"]["inputs"]
    assert sorted((i["name"], i["dtype"], i["shape"], i["fill"]) for i in inputs) == [
        ("pixels", "float", [16, 16, 3], "image"),
        ("threshold", "float", [], "values"),
    ]
    threshold = next(i for i in inputs if i["name"] == "threshold")
    assert (threshold["low"], threshold["high"]) == (0.2, 0.4)
    # the report's header names the signature and how it was filled
    page = build_report(run.path).html_path.read_text()
    assert "pixels float32 [-1,16,16,3] image 0:1" in page
    assert "threshold float32 [-1] values 0.2:0.4" in page


def test_inputs_file_replays_a_saved_body(two_input_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    batch = {"pixels": rng.random((1, 8, 8, 3), dtype=np.float32), "threshold": np.array([0.3], np.float32)}
    body = get_encoding("row-orjson").encode(batch)
    saved = tmp_path / "body.json"
    saved.write_bytes(body)
    proc = sweep(two_input_url, "two", tmp_path / "runs", "row-orjson", "--inputs-file", str(saved))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, rows = check_run(tmp_path / "runs", ["row-orjson"])
    # batch 1 sends the saved body itself; batch 2 repeats its one row
    assert set(rows.loc[rows["cell"] == "b1-row-orjson", "payload_bytes"]) == {len(body)}
    doubled = {name: np.concatenate([v, v]) for name, v in batch.items()}
    assert set(rows.loc[rows["cell"] == "b2-row-orjson", "payload_bytes"]) == {
        len(get_encoding("row-orjson").encode(doubled))
    }
    assert run.meta["signature"]["inputs_file"] == str(saved)


def test_a_bytes_only_model(bytes_url: str, tmp_path: Path) -> None:
    proc = sweep(bytes_url, "bytes", tmp_path / "runs", "b64-png,b64-jpeg")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, rows = check_run(tmp_path / "runs", ["b64-png", "b64-jpeg"])
    assert run.meta["signature"]["by_encoding"]["b64-png"]["signature_name"] == "serving_default"
    png = rows.loc[rows["encoding"] == "b64-png", "payload_bytes"].mean()
    jpeg = rows.loc[rows["encoding"] == "b64-jpeg", "payload_bytes"].mean()
    assert jpeg < png  # the same 128x128 images, JPEG q90 against lossless PNG
    proc = sweep(bytes_url, "bytes", tmp_path / "refused", "row-orjson")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "tfsbench sweep: error: --encodings row-orjson cannot send signature 'serving_default': input "
        "'image_bytes' is a string (bytes): only the b64 encodings send it (encodings that apply: b64-png, b64-jpeg, "
        "grpc-bytes-png, grpc-bytes-jpeg)"
    )


def test_a_request_the_server_rejects_stops_the_run_in_preflight(bytes_url: str, tmp_path: Path) -> None:
    saved = tmp_path / "not-an-image.json"
    saved.write_bytes(orjson.dumps({"instances": [{"b64": "aGVsbG8="}]}))  # b"hello"
    proc = sweep(bytes_url, "bytes", tmp_path / "runs", "b64-png", "--inputs-file", str(saved))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "tfsbench sweep: error: preflight: b64-png batch 1 to signature 'serving_default' answered HTTP 400: "
    )
    assert line.endswith("; nothing was measured")
    assert not (tmp_path / "runs").exists()


def test_plain_locust_fills_the_signature_from_the_metadata(float_url: str, tmp_path: Path) -> None:
    records = tmp_path / "requests.csv"
    cmd = [
        sys.executable, "-m", "locust", "-f", "locustfiles/predict.py", "--headless", "--host", float_url,
        "-u", "1", "-r", "10", "-t", "3s", "--loglevel", "WARNING", "--model-name", "f32",
        "--batch-sizes", "1", "--encodings", "columnar-orjson", "--pool-size", "1", "--input-plan", "auto",
        "--records", str(records),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(records, keep_default_na=False)
    assert len(rows) >= 1
    assert (rows["status"] == 200).all()
    plan = plan_inputs([InputSpec("input_1", "float", (None, 224, 224, 3))], InputOptions())
    body = get_encoding("columnar-orjson").encode(InputBatches(plan).batch(1))
    assert set(rows["payload_bytes"]) == {len(body)}
