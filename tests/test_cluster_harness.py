"""The pod runner's pure rules (env, `$(VAR)` expansion, mounts) and the tool builder's failure paths."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import tools
from e2e.cluster.podexec import _closed_ancestors
from e2e.cluster.podspec import (
    Identity,
    PodNotReadyToStart,
    command_line,
    container_env,
    expand,
    identity,
    mount_plan,
    prepare_volumes,
)
from e2e.cluster.processes import Background, ComponentDied
from tests.pod_helpers import POD, reader


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("$(A)", {"A": "1"}, "1"),
        ("x-$(A)-$(B)", {"A": "1", "B": "2"}, "x-1-2"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
        ("$A", {"A": "1"}, "$A"),
        ("plain", {}, "plain"),
    ],
)
def test_expand(text: str, env: dict[str, str], expected: str) -> None:
    assert expand(text, env) == expected


def test_env_sources_in_order() -> None:
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
            {"name": "URL", "value": "http://$(IP):8080"},
            {"name": "BASE", "value": "overridden"},
        ],
    }
    env = container_env(
        POD,
        container,
        {"BASE": "node"},
        reader(secrets={"s": {"k": base64.b64encode(b"pw").decode()}}, maps={"cm": {"X": "y"}}),
    )
    assert env == {
        "BASE": "overridden",
        "CM_X": "y",
        "IP": "127.77.1.9",
        "NS": "ns",
        "APP": "x",
        "PASS": "pw",
        "MEM": "1024",
        "CPU": "1",
        "URL": "http://127.77.1.9:8080",
    }


@pytest.mark.parametrize(
    "ref",
    [
        {"secretKeyRef": {"name": "absent", "key": "k"}},
        {"configMapKeyRef": {"name": "absent", "key": "k"}},
    ],
)
def test_missing_reference_waits(ref: dict[str, Any]) -> None:
    with pytest.raises(PodNotReadyToStart, match="absent"):
        container_env(POD, {"name": "c", "env": [{"name": "V", "valueFrom": ref}]}, {}, reader())


def test_optional_missing_reference_is_skipped() -> None:
    ref = {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}}
    assert container_env(POD, {"name": "c", "env": [{"name": "V", "valueFrom": ref}]}, {}, reader()) == {}


def test_command_line_uses_the_image_entrypoint_and_expands() -> None:
    assert command_line({"name": "c", "args": ["--port", "$(P)"]}, {"P": "80"}, ["python", "-m", "x"]) == [
        "python",
        "-m",
        "x",
        "--port",
        "80",
    ]
    with pytest.raises(ValueError, match="has no command"):
        command_line({"name": "c", "image": "unknown:1"}, {}, None)


def test_volumes_materialise(tmp_path: Path) -> None:
    pod = {
        **POD,
        "spec": {
            **POD["spec"],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "a", "path": "sub/a.txt"}]}},
                {"name": "sec", "secret": {"secretName": "s"}},
                {
                    "name": "token",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token", "audience": "api"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {
                                "downwardAPI": {
                                    "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                                }
                            },
                        ]
                    },
                },
                {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
            ],
        },
    }
    volumes = prepare_volumes(
        pod,
        tmp_path,
        reader(
            secrets={"s": {"pw": base64.b64encode(b"hunter2").decode()}},
            maps={"cm": {"a": "A", "b": "B"}, "kube-root-ca.crt": {"ca.crt": "CERT"}},
            claims={"models": "/srv/models"},
        ),
    )
    assert (tmp_path / "cfg" / "sub" / "a.txt").read_text() == "A"
    assert not (tmp_path / "cfg" / "b").exists()
    assert (tmp_path / "sec" / "pw").read_text() == "hunter2"
    assert (tmp_path / "token" / "token").read_text() == "token-for-p-api"
    assert (tmp_path / "token" / "ca.crt").read_text() == "CERT"
    assert (tmp_path / "token" / "namespace").read_text() == "ns"
    assert volumes["models"] == ("/srv/models", True)
    assert volumes["scratch"][1] is False
    plan = mount_plan(
        {
            "name": "c",
            "volumeMounts": [
                {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                {"name": "scratch", "mountPath": "/tmp"},
                {"name": "models", "mountPath": "/models"},
            ],
        },
        volumes,
    )
    assert plan[0]["target"] in ("/tmp", "/models")
    assert all(m["readOnly"] for m in plan if m["target"] != "/tmp")


def test_unbound_claim_waits(tmp_path: Path) -> None:
    pod = {**POD, "spec": {**POD["spec"], "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "x"}}]}}
    with pytest.raises(PodNotReadyToStart, match="not bound"):
        prepare_volumes(pod, tmp_path, reader())


def test_unknown_volume_type_is_named(tmp_path: Path) -> None:
    pod = {**POD, "spec": {**POD["spec"], "volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}}
    with pytest.raises(ValueError, match="volume 'n'"):
        prepare_volumes(pod, tmp_path, reader())


def test_mount_of_unknown_volume_is_named() -> None:
    with pytest.raises(ValueError, match="names no volume"):
        mount_plan({"name": "c", "volumeMounts": [{"name": "ghost", "mountPath": "/x"}]}, {})


@pytest.mark.parametrize(
    ("pod_context", "container_context", "expected"),
    [
        ({}, {}, Identity()),
        ({"runAsUser": 1000}, {}, Identity(uid=1000, gid=0)),
        ({"runAsUser": 1000, "runAsGroup": 3000}, {}, Identity(uid=1000, gid=3000)),
        ({"runAsUser": 1000}, {"runAsUser": 2000}, Identity(uid=2000, gid=0)),
        ({"runAsUser": 1000, "runAsGroup": 5}, {"runAsGroup": 6}, Identity(uid=1000, gid=6)),
        ({"runAsNonRoot": True}, {"runAsUser": 7}, Identity(uid=7, gid=0)),
        ({}, {"runAsNonRoot": True, "runAsUser": 7, "runAsGroup": 7}, Identity(uid=7, gid=7)),
        ({"runAsUser": 1, "fsGroup": 2, "supplementalGroups": [3, 2]}, {}, Identity(uid=1, gid=0, groups=(2, 3))),
        ({}, {"allowPrivilegeEscalation": False}, Identity(no_new_privileges=True)),
        ({}, {"allowPrivilegeEscalation": True}, Identity()),
        ({"runAsUser": 0}, {}, Identity(uid=0, gid=0)),
    ],
)
def test_identity_follows_the_kubelet(
    pod_context: dict[str, Any], container_context: dict[str, Any], expected: Identity
) -> None:
    pod = {**POD, "spec": {**POD["spec"], "securityContext": pod_context}}
    assert identity(pod, {"name": "c", "securityContext": container_context}) == expected


@pytest.mark.parametrize(
    ("pod_context", "container_context"),
    [
        ({"runAsNonRoot": True}, {}),
        ({}, {"runAsNonRoot": True}),
        ({"runAsNonRoot": True, "runAsUser": 1000}, {"runAsUser": 0}),
        ({"runAsNonRoot": True}, {"runAsUser": 0}),
    ],
)
def test_run_as_non_root_refuses_root(pod_context: dict[str, Any], container_context: dict[str, Any]) -> None:
    pod = {**POD, "spec": {**POD["spec"], "securityContext": pod_context}}
    with pytest.raises(PodNotReadyToStart, match="runAsNonRoot and image will run as root"):
        identity(pod, {"name": "c", "securityContext": container_context})


def test_home_is_root_only_for_root() -> None:
    assert Identity().home == "/root"
    assert Identity(uid=0).home == "/root"
    assert Identity(uid=1000).home == "/"


def test_closed_ancestors_are_the_outermost_unpassable_directories() -> None:
    # Not under tmp_path: pytest's base directory is itself 0700, which would hide what is tested here.
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        base.chmod(0o755)
        closed, inner = base / "closed", base / "closed" / "also-closed"
        (inner / "venv").mkdir(parents=True)
        (base / "open" / "repo").mkdir(parents=True)
        closed.chmod(0o700)
        inner.chmod(0o700)
        assert _closed_ancestors([str(inner / "venv"), str(closed), str(base / "open" / "repo")]) == [str(closed)]
        assert _closed_ancestors([str(base / "open" / "repo")]) == []
    finally:
        shutil.rmtree(base)


def test_missing_go_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "GO_FALLBACKS", ())
    with pytest.raises(tools.ToolError, match="install Go"):
        tools._go()


def test_failed_build_shows_the_log_and_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GOPROXY", "off")  # nothing can be downloaded: the build must fail, clearly
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    broken = tools.GoTool(
        name="nonexistent",
        module="example.invalid/nothing",
        version="v0.0.1",
        packages={"nothing": "example.invalid/nothing/cmd"},
    )
    with pytest.raises(tools.ToolError) as failure:
        tools.build(broken)
    message = str(failure.value)
    assert "failed" in message
    assert "Full log:" in message
    assert "delete" in message


def test_dead_component_is_reported_with_its_log(tmp_path: Path) -> None:
    component = Background(
        "flaky",
        ["sh", "-c", "echo starting; echo 'fatal: port taken' >&2; exit 1"],
        tmp_path / "flaky.log",
        tmp_path / "flaky.pid",
    )
    component.start()
    component._process.wait(timeout=10)
    with pytest.raises(ComponentDied, match="flaky is not running") as died:
        component.check()
    assert "fatal: port taken" in str(died.value)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    component = Background(
        "parent", ["sh", "-c", "sleep 300 & sleep 300 & wait"], tmp_path / "p.log", tmp_path / "p.pid"
    )
    component.start()
    pid = component.pid
    assert pid is not None
    component.stop(grace=2)
    listing = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-g", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    # Killed children are zombies until PID 1 reaps them (here PID 1 is no init and reaps late): not alive.
    survivors = [line for line in listing.splitlines() if not line.split()[1].startswith("Z")]
    assert survivors == []


def test_volume_refresh_keeps_the_mounted_directory(tmp_path: Path) -> None:
    """A refresh (new token, changed ConfigMap) must update files in the directory containers have mounted."""
    pod = {**POD, "spec": {**POD["spec"], "volumes": [{"name": "cfg", "configMap": {"name": "cm"}}]}}
    prepare_volumes(pod, tmp_path, reader(maps={"cm": {"a": "1", "b": "2"}}))
    mounted = (tmp_path / "cfg").stat().st_ino
    prepare_volumes(pod, tmp_path, reader(maps={"cm": {"a": "changed"}}))
    assert (tmp_path / "cfg").stat().st_ino == mounted
    assert (tmp_path / "cfg" / "a").read_text() == "changed"
    assert not (tmp_path / "cfg" / "b").exists()
