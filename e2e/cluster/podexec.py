"""Run inside a pod's private mount namespace (started by `unshare --mount`): build the container's root as
a container runtime does, mount the pod's volumes at their container paths, make the root read-only if the
pod asks, switch to the pod's user and groups, then exec the container's command.

The root is an overlay of the machine's root filesystem with its writable layer on a tmpfs private to
this namespace, entered with chroot; the kernel's filesystems (/proc, /sys, /dev) are bound in as they
are, and the "image" (the repository and the Python environment) and the volumes by handle. So a mount
point the image lacks is created in that private layer, never on the machine's filesystem, and whatever
the container writes to its root vanishes with it.

    unshare --mount --propagation private -- python -m e2e.cluster.podexec PLAN.json
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

KERNEL_FILESYSTEMS = ("/proc", "/sys", "/dev")
PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h: what allowPrivilegeEscalation: false sets in a container


def _mount(*args: str) -> None:
    # -n: libmount would otherwise record the mount in /run/mount/utab, on the machine's /run.
    result = subprocess.run(["mount", "-n", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"podexec: mount {' '.join(args)} failed: {result.stderr.strip()}")


def _bind(handle: int, target: str) -> None:
    # --no-canonicalize: the kernel must follow the fd itself; a resolved path could lead into a new mount.
    _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{handle}", target)


def _unescape(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def kernel_mount_points(mountinfo: str) -> list[str]:
    """The kernel's filesystems a container runtime gives every container (/proc, /sys, /dev, with what
    is mounted below them), as this machine has them mounted."""
    points = {_unescape(line.split()[4]) for line in mountinfo.splitlines() if len(line.split()) > 4}
    return [point for point in KERNEL_FILESYSTEMS if point in points]


def enter_private_root(rootfs: Path) -> None:
    """Overlay the machine's root with a writable layer on a tmpfs of this namespace's own, bind the other
    filesystems in, and chroot there. `rootfs` is an empty directory in the pod runner's state."""
    _mount("-t", "tmpfs", "-o", "mode=0700,size=512m", "tmpfs", str(rootfs))
    upper, work, merged = rootfs / "upper", rootfs / "work", rootfs / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    _mount("-t", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", "overlay", str(merged))
    for point in kernel_mount_points(Path("/proc/self/mountinfo").read_text()):
        # An overlay shows none of the filesystems mounted below its lower layer; the kernel's come back
        # as they are. The machine's others (a tmpfs /run, /tmp) are not part of the "image", as in a
        # container; the image paths (repository, Python) and the volumes are bound in by handle below.
        _mount("--rbind", point, f"{merged}{point}")
    os.chroot(merged)
    os.chdir("/")


class MountPointRefused(SystemExit):
    """A volume's mount point would have to be created on one of the machine's own filesystems."""


def make_mount_point(target: str, is_directory: bool, writable_devices: set[int]) -> None:
    """Create a missing mount point as a container runtime does: a directory for a directory source, an
    empty file for a file, and only on a filesystem this container owns (its root layer, a cover, or a
    volume mounted before it), never on one of the machine's that is bound in."""
    path = Path(target)
    if path.exists() or path.is_symlink():
        if path.is_dir() != is_directory:
            kind = "directory" if is_directory else "file"
            raise MountPointRefused(f"podexec: cannot mount a {kind} at {target}: the image has it as the other kind")
        return
    existing = next(parent for parent in path.parents if parent.exists())
    if os.stat(existing).st_dev not in writable_devices:
        raise MountPointRefused(
            f"podexec: {target} does not exist and {existing} is the machine's own filesystem; "
            "mount the volume somewhere the container's root provides"
        )
    if is_directory:
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def apply(plan: dict[str, object]) -> None:
    mounts = plan.get("mounts", [])
    image = plan.get("imagePaths", [])
    rootfs = plan.get("rootfs")
    assert isinstance(mounts, list)
    assert isinstance(image, list)
    assert isinstance(rootfs, str), "the plan names no rootfs directory"
    # Hold every source open first: a mount over /tmp would otherwise hide sources that live under /tmp
    # (the pod runner's state does). Binding from /proc/PID/fd/N reaches them whatever is mounted since,
    # and the handle, not the path, says whether a source is a directory.
    handles = {mount["source"]: os.open(mount["source"], os.O_PATH) for mount in mounts}
    image_handles = {path: os.open(path, os.O_PATH) for path in image if Path(path).exists()}
    user = plan.get("user") or {}
    assert isinstance(user, dict)
    enter_private_root(Path(rootfs))
    writable_devices = {os.stat("/").st_dev}
    covers = _closed_ancestors(image) if user.get("uid") else []
    for directory in covers:
        # A non-root user cannot pass a directory like /root (mode 0700) on the way to the "image" (the
        # Python environment may live under it): cover it with an empty, passable tmpfs; the image paths
        # are bound back below, and nothing else of the host directory is visible, as in a container.
        _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", directory)
        writable_devices.add(os.stat(directory).st_dev)
    for mount in mounts:
        source, target = mount["source"], mount["target"]
        make_mount_point(target, stat.S_ISDIR(os.fstat(handles[source]).st_mode), writable_devices)
        _bind(handles[source], target)
        writable_devices.add(os.stat(target).st_dev)
        if mount.get("readOnly"):
            _mount("-o", "remount,bind,ro", target)
    # The "image" (the repository and its Python environment) must stay visible even when a volume is
    # mounted over a directory it lives in (an emptyDir at /tmp over a checkout under /tmp).
    for path, handle in image_handles.items():
        if not Path(path).exists() or not os.path.samestat(os.stat(path), os.fstat(handle)):
            make_mount_point(path, True, writable_devices)
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
