"""A converted model folder appears whole or not at all, however many processes convert at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from model_runtime.convert import publish


def write_model(marker: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / "config.json").write_text(marker)
        (folder / "model.safetensors").write_text(marker * 3)

    return write


def test_a_folder_is_published_whole_and_no_staging_is_left(tmp_path: Path) -> None:
    out = publish(tmp_path / "smollm2", write_model("a"))
    assert (out / "config.json").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2"]


def test_a_second_converter_keeps_the_first_ones_folder(tmp_path: Path) -> None:
    out = tmp_path / "smollm2"
    inside_second = threading.Event()

    def second(folder: Path) -> None:
        inside_second.set()
        publish(out, write_model("first"))  # finishes while the second still writes
        write_model("second")(folder)

    publish(out, second)
    assert inside_second.is_set()
    assert (out / "config.json").read_text() == "first"
    assert (out / "model.safetensors").read_text() == "firstfirstfirst"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2"]


def test_a_write_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "config.json").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path / "smollm2", broken)
    assert list(tmp_path.iterdir()) == []
