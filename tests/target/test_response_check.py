"""The check every predict response of the Locust scenario goes through."""

from __future__ import annotations

import orjson
import pytest

from bench.target.response_check import check_predict_response, prediction_count


@pytest.mark.parametrize(
    ("status", "body", "batch", "expected"),
    [
        pytest.param(200, {"predictions": [{"classes": 1}] * 4}, 4, "", id="row-ok"),
        pytest.param(200, {"outputs": {"classes": [1, 2], "probabilities": [[0.1], [0.2]]}}, 2, "", id="columnar-ok"),
        pytest.param(200, {"predictions": [1, 2, 3]}, 4, "expected 4 predictions, got 3", id="wrong-count"),
        pytest.param(200, {"result": 1}, 1, "response has neither 'predictions' nor 'outputs'", id="no-predictions"),
        pytest.param(
            404,
            {"error": "Servable not found for request: Latest(x)"},
            1,
            "HTTP 404: Servable not found for request: Latest(x)",
            id="error-body",
        ),
    ],
)
def test_check_predict_response(status: int, body: dict, batch: int, expected: str) -> None:
    assert check_predict_response(status, orjson.dumps(body), batch) == expected


def test_check_predict_response_without_a_json_body() -> None:
    assert check_predict_response(404, b"<html>Not Found</html>", 1) == "HTTP 404: <html>Not Found</html>"
    assert check_predict_response(400, b"", 1) == "HTTP 400: (empty body)"
    assert check_predict_response(200, b"{oops", 1).startswith("response is not JSON")
    assert prediction_count([1, 2]) is None
