"""``tfsbench export`` variants: other dtypes, sizes, names and signatures; the reference stays as it is."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.errors import ConfigError
from export.variants import VariantSpec, export_variant


def test_no_variant_flags_is_the_reference_model() -> None:
    assert VariantSpec().is_reference
    assert not VariantSpec(input_dtype="float32").is_reference


def test_variants_write_the_signatures_asked_for(tmp_path) -> None:
    spec = VariantSpec("two-input", "float32", 0, "pixels")
    result = export_variant(tmp_path, spec, "two", 3, force=False, seed=1)
    assert result.version_dir == tmp_path / "two" / "3"
    assert result.signatures["serving_default"]["inputs"] == {
        "pixels": "float32 [-1,-1,-1,3]",
        "threshold": "float32 [-1]",
    }
    assert result.signatures["serving_default"]["outputs"]["confident"] == "bool [-1]"
    with pytest.raises(ConfigError, match="already exists"):
        export_variant(tmp_path, spec, "two", 3, force=False, seed=1)


def test_a_bad_input_name_is_one_line(tmp_path, capsys) -> None:
    assert main(["export", "--out", str(tmp_path), "--input-name", "not a name", "--input-dtype", "float32"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tfsbench export: error: --input-name 'not a name' is not a usable tensor name (letters, digits, _)"
    )
