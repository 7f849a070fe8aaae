"""The ModelDeployment API: spec and status models, validation, and the CRD generated from them."""

from .durations import format_duration, parse_duration
from .resource import API_VERSION, GROUP, KIND, PLURAL, VERSION, ModelDeployment
from .spec import ModelDeploymentSpec
from .status import ModelDeploymentStatus, Phase, Verdict
from .validation import InvalidSpecError, parse_spec

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "InvalidSpecError",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "Phase",
    "Verdict",
    "format_duration",
    "parse_duration",
    "parse_spec",
]
