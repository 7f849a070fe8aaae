"""Run inside a pod's private mount namespace (started by `unshare --mount`): mount the pod's volumes at
their container paths, make the root filesystem read-only if the pod asks, switch to the pod's user and
groups, then exec the container's command. Mounts made here are invisible to the host and vanish with
the process.

    unshare --mount --propagation private -- python -m e2e.cluster.podexec PLAN.json
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h: what allowPrivilegeEscalation: false sets in a container


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"podexec: mount {' '.join(args)} failed: {result.stderr.strip()}")


def _bind(handle: int, target: str) -> None:
    # --no-canonicalize: the kernel must follow the fd itself; a resolved path could lead into a new mount.
    _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{handle}", target)


def apply(plan: dict[str, object]) -> None:
    mounts = plan.get("mounts", [])
    image = plan.get("imagePaths", [])
    assert isinstance(mounts, list)
    assert isinstance(image, list)
    # Hold every source open first: a mount over /tmp would otherwise hide sources that live under /tmp
    # (the pod runner's state does). Binding from /proc/PID/fd/N reaches them whatever is mounted since.
    handles = {mount["source"]: os.open(mount["source"], os.O_PATH) for mount in mounts}
    image_handles = {path: os.open(path, os.O_PATH) for path in image if Path(path).exists()}
    user = plan.get("user") or {}
    assert isinstance(user, dict)
    covers = _closed_ancestors(image) if user.get("uid") else []
    for directory in covers:
        # A non-root user cannot pass a directory like /root (mode 0700) on the way to the "image" (the
        # Python environment may live under it): cover it with an empty, passable tmpfs; the image paths
        # are bound back below, and nothing else of the host directory is visible, as in a container.
        _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", directory)
    for mount in mounts:
        source, target = mount["source"], mount["target"]
        # Mount points must exist; like a container runtime we create them (empty) if the image lacks them.
        if Path(source).is_dir():
            Path(target).mkdir(parents=True, exist_ok=True)
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).touch(exist_ok=True)
        _bind(handles[source], target)
        if mount.get("readOnly"):
            _mount("-o", "remount,bind,ro", target)
    # The "image" (the repository and its Python environment) must stay visible even when a volume is
    # mounted over a directory it lives in (an emptyDir at /tmp over a checkout under /tmp).
    for path, handle in image_handles.items():
        if not Path(path).exists() or not os.path.samestat(os.stat(path), os.fstat(handle)):
            Path(path).mkdir(parents=True, exist_ok=True)
            _bind(handle, path)
    for handle in [*handles.values(), *image_handles.values()]:
        os.close(handle)
    if plan.get("readOnlyRootFilesystem"):
        for directory in ["/", *covers]:
            _mount("-o", "remount,ro" if directory != "/" else "remount,bind,ro", directory)


def _closed_ancestors(paths: list[str]) -> list[str]:
    """The outermost directories on the way to `paths` that others may not pass through."""
    closed: list[str] = []
    for path in paths:
        for ancestor in reversed(Path(path).parents):
            if any(ancestor == Path(c) or Path(c) in ancestor.parents for c in closed):
                break
            if ancestor.is_dir() and not os.stat(ancestor).st_mode & stat.S_IXOTH:
                closed.append(str(ancestor))
                break
    return closed


def become(user: dict[str, Any]) -> None:
    """Drop to the pod's user: groups first (that needs root), then the uid, which also drops every
    capability, as `capabilities: drop: [ALL]` with a non-root user does in a container."""
    if user.get("noNewPrivileges"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if user.get("uid") is None:
        return
    os.setgroups([int(g) for g in user.get("groups") or []])
    os.setgid(int(user["gid"]))
    os.setuid(int(user["uid"]))


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    apply(plan)
    argv = plan["argv"]
    env = plan["env"]
    os.chdir(plan.get("workingDir") or "/")
    become(plan.get("user") or {})
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        # Shown in the container's log and as its exit code, as a runtime's "executable not found" would be.
        print(f"podexec: cannot run {argv[0]!r}: {error}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main()
