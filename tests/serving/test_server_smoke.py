"""The embedded server answers status, metadata and predict over real HTTP on loopback."""

from __future__ import annotations

import numpy as np
import orjson
import requests


def test_status_metadata_predict(embedded_server) -> None:
    url = embedded_server.url
    status = requests.get(f"{url}/v1/models/classifier", timeout=30).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = requests.get(f"{url}/v1/models/classifier/metadata", timeout=30).json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["examples"]["dtype"] == "DT_UINT8"
    images = np.random.default_rng(1).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    reply = requests.post(
        f"{url}/v1/models/classifier:predict", data=orjson.dumps({"instances": images.tolist()}), timeout=60
    )
    assert reply.status_code == 200
    predictions = reply.json()["predictions"]
    assert len(predictions) == 3
    assert {"classes", "probabilities"} == set(predictions[0])
    assert abs(sum(predictions[0]["probabilities"]) - 1.0) < 1e-3
