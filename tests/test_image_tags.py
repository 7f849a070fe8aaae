"""Image tags are a hash of exactly what goes into the image: the Dockerfile, its context, the base."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.cluster import images


def _repo(root: Path) -> Path:
    (root / "docker").mkdir(parents=True)
    (root / "docker" / "runtime.Dockerfile").write_text("FROM ${BASE}\n")
    for name in ("requirements.lock", "pyproject.toml", "README.md"):
        (root / name).write_text(name)
    for package in ("model_runtime", "model_operator"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    return root


def _write(relative: str, text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return change


@pytest.mark.parametrize(
    ("change", "new_tag"),
    [
        (_write("model_runtime/__init__.py", "x = 1\n"), True),
        (_write("model_operator/api/new.py", ""), True),
        (_write("requirements.lock", "torch==0\n"), True),
        (_write("docker/runtime.Dockerfile", "FROM ${BASE}\nUSER 1000\n"), True),
        (lambda root: shutil.move(root / "model_runtime" / "__init__.py", root / "model_runtime" / "main.py"), True),
        (_write("model_runtime/__pycache__/x.pyc", "compiled"), False),
        (_write("docs/notes.md", "not in the context"), False),
        (_write("tests/test_x.py", "not in the context"), False),
    ],
)
def test_tag_changes_exactly_when_an_input_does(tmp_path: Path, change: Callable[[Path], None], new_tag: bool) -> None:
    root = _repo(tmp_path)
    before = images.image_tag("runtime", "base:1", root)
    change(root)
    assert (images.image_tag("runtime", "base:1", root) != before) is new_tag


def test_tag_depends_on_the_base_and_names_the_image(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    tag = images.image_tag("runtime", "base:1", root)
    assert tag.startswith("localhost/modelship/runtime:")
    assert images.image_tag("runtime", "base:2", root) != tag
    assert images.base_tag().startswith("localhost/modelship/base:bookworm-")
