"""The ModelDeployment resource as a whole: names, and the object the CRD describes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .spec import ModelDeploymentSpec
from .status import ModelDeploymentStatus

GROUP = "modelship.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
CATEGORIES = ["modelship"]
# NAME-REVISION must stay a valid Service name (63 characters) with an 8-character revision.
MAX_NAME_LENGTH = 40


class ModelDeployment(BaseModel):
    """A transformer model served by ModelShip: every new revision is canaried against the stable one,
    judged from Prometheus SLIs, and promoted or rolled back automatically."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
