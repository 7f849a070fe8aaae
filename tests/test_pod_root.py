"""A container's view of the filesystem, built by podexec on a private overlay root.

The machine state of a fresh machine is made with a private mount namespace and an empty tmpfs over /run
(so /var/run/secrets does not exist), never by deleting anything of the machine's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.podexec import kernel_mount_points
from e2e.cluster.pods import image_paths
from e2e.cluster.podspec import REPO_ROOT, SERVICE_ACCOUNT_DIR, mount_plan, prepare_volumes
from tests.pod_helpers import POD, reader

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mount namespaces need root and util-linux's unshare (the e2e harness needs them as well)",
)

MOUNTINFO = "\n".join(
    [
        "22 1 252:0 / / rw - ext4 /dev/vda rw",
        "23 22 0:5 / /proc rw - proc proc rw",
        "24 22 0:6 / /dev rw - devtmpfs dev rw",
        "25 24 0:7 / /dev/shm rw - tmpfs shm rw",
        "26 22 0:8 / /sys rw - sysfs sys rw",
        "27 26 0:9 / /sys/fs/cgroup rw - tmpfs cg rw",
        r"28 22 0:10 / /mnt/with\040space rw - tmpfs t rw",
        "29 22 0:11 / /run rw - tmpfs run rw",
    ]
)


@pytest.mark.parametrize(
    ("mountinfo", "expected"),
    [
        (MOUNTINFO, ["/proc", "/sys", "/dev"]),
        ("22 1 252:0 / / rw - ext4 /dev/vda rw\n23 22 0:5 / /proc rw - proc proc rw", ["/proc"]),
        ("22 1 252:0 / / rw - ext4 /dev/vda rw", []),
    ],
)
def test_only_the_kernel_filesystems_come_into_the_container_as_they_are(mountinfo: str, expected: list[str]) -> None:
    """Not the machine's /run, /tmp or anything else mounted: a container's root is its image."""
    assert kernel_mount_points(mountinfo) == expected


def _service_account_pod() -> dict[str, Any]:
    return {
        **POD,
        "spec": {
            **POD["spec"],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {
                    "name": "kube-api-access",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        ]
                    },
                },
            ],
        },
    }


SEEN_BY_THE_CONTAINER = """
import json, os, sys
out = {"token": open("/var/run/secrets/kubernetes.io/serviceaccount/token").read(), "uid": os.getuid()}
out["absent"] = open(sys.argv[1] + "/ca.crt").read()
for path in ("/written-to-root", "/tmp/written-to-emptydir"):
    try:
        open(path, "w").write("x")
        out[path] = "written"
    except OSError as error:
        out[path] = error.strerror
print(json.dumps(out))
"""


@needs_root
def test_a_service_account_token_mounts_where_the_machine_has_no_var_run_secrets(tmp_path: Path) -> None:
    """The operator pod's failure on a fresh machine: with an emptyDir at /tmp mounted first, the token's
    directory (under /tmp) looked like a file, and its mount point was made on the machine's /run."""
    state = tmp_path / "pod"
    volumes = prepare_volumes(
        _service_account_pod(), state / "volumes", reader(maps={"kube-root-ca.crt": {"ca.crt": "CA"}})
    )
    # Certainly absent from the machine, whatever an earlier pod runner left under /run on it.
    absent = f"/var/run/modelship-absent-{uuid.uuid4().hex[:8]}/serviceaccount"
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "kube-api-access", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
            {"name": "kube-api-access", "mountPath": absent, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    (state / "rootfs").mkdir()
    plan = {
        "argv": [sys.executable, "-c", SEEN_BY_THE_CONTAINER, absent],
        "env": {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        "mounts": mount_plan(container, volumes),
        "imagePaths": image_paths(),
        "rootfs": str(state / "rootfs"),
        "readOnlyRootFilesystem": True,
        "user": {"uid": 1000, "gid": 1000, "groups": [], "noNewPrivileges": True},
    }
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    # The machine's root filesystem as it is, without what is mounted on it: where a runner that made
    # mount points on the machine would have made them (the tmpfs hides it from the runner's own view).
    machine_root = tmp_path / "machine-root"
    machine_root.mkdir()
    script = (
        f"mount -n --bind / {machine_root} && find {machine_root}/run -xdev | sort > {tmp_path}/before && "
        "mount -n -t tmpfs -o mode=0755 tmpfs /run && "
        f"unshare --mount --propagation private -- {sys.executable} -m e2e.cluster.podexec {plan_path}; "
        f'echo "exit=$?"; find {machine_root}/run -xdev | sort > {tmp_path}/after; '
        "echo '--- left in /run:'; find /run -mindepth 1"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    )
    output, left_in_run = result.stdout.split("--- left in /run:\n")
    assert "exit=0" in output, result.stdout + result.stderr
    seen = json.loads(output.splitlines()[0])
    assert seen["token"] == "token-for-p-None"
    assert seen["absent"] == "CA"
    assert seen["uid"] == 1000
    assert seen["/written-to-root"] == "Read-only file system"
    assert seen["/tmp/written-to-emptydir"] == "written"
    # Nothing outside the pod's state: the machine's (here: the test's own empty) /run stays empty,
    # and what the container wrote went to its emptyDir in the state directory.
    assert left_in_run.strip() == ""
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text()
    assert (state / "volumes" / "tmp" / "written-to-emptydir").read_text() == "x"
    assert not Path("/written-to-root").exists()


@needs_root
def test_a_mount_point_inside_a_machine_filesystem_is_refused_not_created(tmp_path: Path) -> None:
    state = tmp_path / "pod"
    volumes = prepare_volumes(_service_account_pod(), state / "volumes", reader(maps={"kube-root-ca.crt": {}}))
    (state / "rootfs").mkdir()
    plan = {
        "argv": ["/bin/true"],
        "env": {"PATH": "/usr/bin:/bin"},
        "mounts": mount_plan(
            {"name": "c", "volumeMounts": [{"name": "tmp", "mountPath": "/proc/modelship-x"}]}, volumes
        ),
        "imagePaths": [],
        "rootfs": str(state / "rootfs"),
        "user": {},
    }
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-m",
            "e2e.cluster.podexec",
            str(plan_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    )
    assert result.returncode != 0
    assert "/proc/modelship-x does not exist and /proc is the machine's own filesystem" in result.stderr
