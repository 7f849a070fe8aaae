"""Every example is a valid ModelDeployment for the models and for the generated schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from model_operator.api import API_VERSION, KIND, parse_spec
from model_operator.api import crd as crdgen

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples_for_each_kind_of_serving() -> None:
    tasks = {yaml.safe_load(p.read_text())["spec"]["model"]["task"] for p in EXAMPLES}
    gpus = {yaml.safe_load(p.read_text())["spec"].get("runtime", {}).get("gpus", 0) > 0 for p in EXAMPLES}
    assert tasks == {"text-generation", "embeddings"}
    assert gpus == {True, False}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == API_VERSION
    assert document["kind"] == KIND
    parse_spec(document["spec"])
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(schema).validate(document)
    assert path.read_text().lstrip().startswith("#"), "examples open with a comment saying what they show"
