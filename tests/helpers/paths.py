"""Where things are in the checkout the tests run from."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "locustfiles" / "predict.py"
# The public-domain photos beside the checkout (../shared/data/photos); absent in a bare clone.
PHOTOS = REPO.parent / "shared" / "data" / "photos"
