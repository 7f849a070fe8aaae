"""What a container would see, worked out from the Pod spec: environment (with `$(VAR)` expansion, field,
secret and config-map references), volume contents, and mount plans. Pure where it can be; the few API
reads go through the `Reader` callbacks so the rules are testable without a cluster."""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_REFERENCE = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)|\$\$")


class PodNotReadyToStart(Exception):
    """Something the pod needs does not exist yet (a Secret, a bound PVC); the runner retries."""


@dataclass
class Reader:
    """The API reads a pod's set-up needs."""

    secret: Callable[[str, str], dict[str, str] | None]  # (namespace, name) -> base64 data
    config_map: Callable[[str, str], dict[str, str] | None]
    claim_path: Callable[[str, str], str | None]  # (namespace, claim) -> host directory, None if unbound
    token: Callable[[dict[str, Any], str | None, int], str]  # (pod, audience, seconds) -> token


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names are replaced, unknown stay as written, `$$` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def field_value(pod: dict[str, Any], path: str) -> str:
    """A downward-API field reference."""
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod.get("status", {}).get("podIP", ""),
        "status.hostIP": pod.get("status", {}).get("hostIP", ""),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1], {})
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ValueError(f"unsupported fieldRef {path!r}")


def _decode(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


def container_env(
    pod: dict[str, Any], container: dict[str, Any], base: dict[str, str], reader: Reader
) -> dict[str, str]:
    """The container's environment: `base` (what the image and the node give), then envFrom, then env."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            data = reader.config_map(namespace, ref["name"])
            if data is None and not ref.get("optional"):
                raise PodNotReadyToStart(f"configmap {ref['name']!r} not found")
            env.update({prefix + k: v for k, v in (data or {}).items()})
        if "secretRef" in source:
            ref = source["secretRef"]
            secret = reader.secret(namespace, ref["name"])
            if secret is None and not ref.get("optional"):
                raise PodNotReadyToStart(f"secret {ref['name']!r} not found")
            env.update({prefix + k: _decode(secret or {}, k) for k in (secret or {})})
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = expand(variable["value"], env)
            continue
        source = variable.get("valueFrom", {})
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = reader.secret(namespace, ref["name"])
            if secret is None or ref["key"] not in secret:
                if ref.get("optional"):
                    continue
                raise PodNotReadyToStart(f"secret {ref['name']!r} (key {ref['key']!r}) not found")
            env[name] = _decode(secret, ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = reader.config_map(namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise PodNotReadyToStart(f"configmap {ref['name']!r} (key {ref['key']!r}) not found")
            env[name] = data[ref["key"]]
        elif "resourceFieldRef" in source:
            env[name] = _resource_value(container, source["resourceFieldRef"])
        else:
            env[name] = ""
    return env


_SUFFIXES = {"m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "2", "1Gi") as a number."""
    value = str(text)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(value)


def _resource_value(container: dict[str, Any], ref: dict[str, Any]) -> str:
    """As the kubelet does: the limit (or request) divided by the divisor, rounded up; with no limit set,
    what the node has."""
    kind, resource = ref["resource"].split(".", 1)
    value = container.get("resources", {}).get(kind, {}).get(resource)
    if value is None:
        node_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        value = (os.cpu_count() or 1) if resource == "cpu" else node_memory
    divisor = quantity(ref.get("divisor", "1"))
    return str(math.ceil(quantity(value) / divisor))


def command_line(container: dict[str, Any], env: dict[str, str], entrypoint: list[str] | None) -> list[str]:
    """command (or the image's entrypoint) plus args, with `$(VAR)` expanded as the kubelet does."""
    command = container.get("command") or entrypoint
    if not command:
        raise ValueError(
            f"container {container['name']!r} has no command and its image {container.get('image')!r} "
            "has no entrypoint the pod runner knows; set `command` or add the image to IMAGE_ENTRYPOINTS"
        )
    return [expand(part, env) for part in [*command, *container.get("args", [])]]


def _write_files(directory: Path, files: dict[str, bytes], mode: int) -> None:
    """Write inside the existing directory, each file replaced atomically, and remove files no longer
    wanted: running containers see the directory through a bind mount, so the directory itself must
    stay the same (as the kubelet's atomic writer keeps it)."""
    directory.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_bytes(content)
        staging.chmod(mode)
        staging.replace(target)
    wanted = {directory / relative for relative in files}
    for existing in sorted(directory.rglob("*"), reverse=True):
        if existing.is_file() and existing not in wanted:
            existing.unlink()


def _selected(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {item.get("path", item["key"]): data[item["key"]] for item in items if item["key"] in data}


def prepare_volumes(pod: dict[str, Any], directory: Path, reader: Reader) -> dict[str, tuple[str, bool]]:
    """Materialise each volume under `directory`; returns volume name -> (host path, forced read-only)."""
    namespace = pod["metadata"]["namespace"]
    prepared: dict[str, tuple[str, bool]] = {}
    for volume in pod["spec"].get("volumes", []):
        name = volume["name"]
        path = directory / name
        if "emptyDir" in volume:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            prepared[name] = (str(path), False)
        elif "configMap" in volume:
            source = volume["configMap"]
            data = reader.config_map(namespace, source["name"])
            if data is None and not source.get("optional"):
                raise PodNotReadyToStart(f"configmap {source['name']!r} not found")
            _fresh(path)
            raw = {k: v.encode() for k, v in (data or {}).items()}
            _write_files(path, _selected(raw, source.get("items")), source.get("defaultMode", 0o644))
            prepared[name] = (str(path), True)
        elif "secret" in volume:
            source = volume["secret"]
            secret = reader.secret(namespace, source["secretName"])
            if secret is None and not source.get("optional"):
                raise PodNotReadyToStart(f"secret {source['secretName']!r} not found")
            _fresh(path)
            raw = {k: base64.b64decode(v) for k, v in (secret or {}).items()}
            _write_files(path, _selected(raw, source.get("items")), source.get("defaultMode", 0o644))
            prepared[name] = (str(path), True)
        elif "projected" in volume:
            _fresh(path)
            _write_files(
                path, projected_files(pod, volume["projected"], reader), volume["projected"].get("defaultMode", 0o644)
            )
            prepared[name] = (str(path), True)
        elif "downwardAPI" in volume:
            _fresh(path)
            files = {
                item["path"]: field_value(pod, item["fieldRef"]["fieldPath"]).encode()
                for item in volume["downwardAPI"].get("items", [])
                if "fieldRef" in item
            }
            _write_files(path, files, 0o644)
            prepared[name] = (str(path), True)
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            host = reader.claim_path(namespace, claim["claimName"])
            if host is None:
                raise PodNotReadyToStart(f"persistentvolumeclaim {claim['claimName']!r} is not bound")
            prepared[name] = (host, bool(claim.get("readOnly")))
        elif "hostPath" in volume:
            prepared[name] = (volume["hostPath"]["path"], False)
        else:
            raise ValueError(
                f"volume {name!r}: this pod runner supports emptyDir, configMap, secret, "
                "projected, downwardAPI, persistentVolumeClaim and hostPath"
            )
    return prepared


def projected_files(pod: dict[str, Any], projected: dict[str, Any], reader: Reader) -> dict[str, bytes]:
    namespace = pod["metadata"]["namespace"]
    files: dict[str, bytes] = {}
    for source in projected.get("sources", []):
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            files[token["path"]] = reader.token(
                pod, token.get("audience"), int(token.get("expirationSeconds", 3600))
            ).encode()
        elif "configMap" in source:
            ref = source["configMap"]
            data = reader.config_map(namespace, ref["name"])
            if data is None and not ref.get("optional"):
                raise PodNotReadyToStart(f"configmap {ref['name']!r} not found")
            files |= _selected({k: v.encode() for k, v in (data or {}).items()}, ref.get("items"))
        elif "secret" in source:
            ref = source["secret"]
            secret = reader.secret(namespace, ref["name"])
            if secret is None and not ref.get("optional"):
                raise PodNotReadyToStart(f"secret {ref['name']!r} not found")
            files |= _selected({k: base64.b64decode(v) for k, v in (secret or {}).items()}, ref.get("items"))
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items", []):
                if "fieldRef" in item:
                    files[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"]).encode()
    return files


def _fresh(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def mount_plan(container: dict[str, Any], volumes: dict[str, tuple[str, bool]]) -> list[dict[str, Any]]:
    """Bind mounts for the container's volumeMounts, parents before children."""
    plan = []
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            raise ValueError(f"volumeMount {mount['name']!r} names no volume of the pod")
        source, forced_read_only = volumes[mount["name"]]
        if mount.get("subPath"):
            source = str(Path(source) / mount["subPath"])
        plan.append(
            {
                "source": source,
                "target": mount["mountPath"],
                "readOnly": bool(mount.get("readOnly")) or forced_read_only,
            }
        )
    return sorted(plan, key=lambda m: len(Path(m["target"]).parts))


def read_only_root(pod: dict[str, Any], container: dict[str, Any]) -> bool:
    context = container.get("securityContext") or {}
    return bool(context.get("readOnlyRootFilesystem"))


@dataclass(frozen=True)
class Identity:
    """Who a container's process runs as. `uid` None: the image's user, which for the pod runner's
    stand-in image (this machine's Python) is root."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    no_new_privileges: bool = False

    @property
    def home(self) -> str:
        # What a container runtime sets when the image's passwd has no entry for the user.
        return "/root" if not self.uid else "/"

    def plan(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "noNewPrivileges": self.no_new_privileges,
        }


def identity(pod: dict[str, Any], container: dict[str, Any]) -> Identity:
    """The kubelet's rules: the container's securityContext wins over the pod's; runAsNonRoot refuses to
    start a container that would run as root; fsGroup and supplementalGroups become extra groups."""
    pod_context = pod["spec"].get("securityContext") or {}
    context = container.get("securityContext") or {}

    def setting(key: str) -> Any:
        return context[key] if context.get(key) is not None else pod_context.get(key)

    uid, gid = setting("runAsUser"), setting("runAsGroup")
    if setting("runAsNonRoot") and not uid:
        raise PodNotReadyToStart(
            f"container {container['name']!r} has runAsNonRoot and image will run as root: set runAsUser"
        )
    groups = [g for g in [pod_context.get("fsGroup"), *(pod_context.get("supplementalGroups") or [])] if g is not None]
    return Identity(
        uid=uid,
        gid=gid if gid is not None else (0 if uid is not None else None),
        groups=tuple(dict.fromkeys(int(g) for g in groups)),
        no_new_privileges=context.get("allowPrivilegeEscalation") is False,
    )
