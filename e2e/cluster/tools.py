"""Build the control plane's binaries from the Go module proxy and cache them per version.

Every tool is built from a small wrapper module that requires the upstream module, because several
upstream modules (Kubernetes, etcd) carry ``replace`` lines that ``go install pkg@version`` refuses.
Binaries land in ``<cache>/tools/<name>-<version>/bin`` outside the repository, so only the first run pays.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.8"
PROMETHEUS_VERSION = "v0.309.1"  # Prometheus 3.9.1: its Go module is tagged v0.MAJOR*100+MINOR.PATCH
HELM_VERSION = "v3.19.5"
GATEWAY_API_VERSION = "v1.4.1"
INFERENCE_EXTENSION_VERSION = "v1.6.2"


class ToolError(RuntimeError):
    """A tool could not be built or found; the message says what to do about it."""


def cache_root() -> Path:
    """Where built tools live; outside the repo so a clean clone reuses them."""
    configured = os.environ.get("MODELSHIP_CACHE_DIR")
    base = Path(configured) if configured else Path.home() / ".cache" / "modelship"
    return base / "tools"


@dataclass(frozen=True)
class GoTool:
    """One upstream Go module and the main packages to build from it."""

    name: str
    module: str
    version: str
    packages: dict[str, str]  # binary name -> main package path
    ldflags: list[str] = field(default_factory=list)
    build_tags: list[str] = field(default_factory=list)
    staging_replaces: bool = False

    @property
    def directory(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    def binary(self, name: str) -> Path:
        return self.directory / "bin" / name

    def is_built(self) -> bool:
        return all(self.binary(name).is_file() for name in self.packages)


def _kubernetes_ldflags(version: str) -> list[str]:
    match = re.match(r"v(\d+)\.(\d+)", version)
    assert match, version
    major, minor = match.groups()
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return flags


KUBERNETES = GoTool(
    name="kubernetes",
    module="k8s.io/kubernetes",
    version=KUBERNETES_VERSION,
    packages={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        # The real node's agents, from the same module download and build cache.
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    },
    ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
    staging_replaces=True,
)
ETCD = GoTool(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=ETCD_VERSION,
    packages={"etcd": "go.etcd.io/etcd/server/v3"},
)
PROMETHEUS = GoTool(
    name="prometheus",
    module="github.com/prometheus/prometheus",
    version=PROMETHEUS_VERSION,
    packages={
        "prometheus": "github.com/prometheus/prometheus/cmd/prometheus",
        "promtool": "github.com/prometheus/prometheus/cmd/promtool",
    },
    # Only the discovery mechanisms we use, as upstream's own plugins.yml allows.
    build_tags=["remove_all_sd", "enable_kubernetes_sd"],
)
HELM = GoTool(
    name="helm",
    module="helm.sh/helm/v3",
    version=HELM_VERSION,
    packages={"helm": "helm.sh/helm/v3/cmd/helm"},
    ldflags=[f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"],
)
ALL_TOOLS = (ETCD, KUBERNETES, PROMETHEUS, HELM)
# Only the scale benchmark needs it: fake nodes whose pods it marks Running and Ready without running them.
KWOK_VERSION = "v0.8.0"
KWOK = GoTool(
    name="kwok", module="sigs.k8s.io/kwok", version=KWOK_VERSION, packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"}
)
# Only the InferencePool scenario needs it: the Gateway API Inference Extension's lightweight endpoint
# picker, which watches one InferencePool and its pods and reports serving once it has synced the pool.
ENDPOINT_PICKER = GoTool(
    name="lwepp",
    module="sigs.k8s.io/gateway-api-inference-extension",
    version=INFERENCE_EXTENSION_VERSION,
    packages={"lwepp": "sigs.k8s.io/gateway-api-inference-extension/cmd/lwepp"},
)
# Only the router benchmark needs it: an HTTP load generator with a fixed request rate.
HEY = GoTool(name="hey", module="github.com/rakyll/hey", version="v0.1.5", packages={"hey": "github.com/rakyll/hey"})


GO_FALLBACKS = ("/usr/local/go/bin/go",)  # where the official tarball installs Go, often not on PATH


def _go() -> str:
    go = shutil.which("go") or next((path for path in GO_FALLBACKS if Path(path).exists()), None)
    if go is None:
        raise ToolError(
            "the Go toolchain is missing: install Go 1.25 or newer (https://go.dev/doc/install) "
            "and put `go` on PATH, then run this again"
        )
    return go


def _run(command: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(command)}\n")
        sink.flush()
        result = subprocess.run(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise ToolError(
            f"`{' '.join(command)}` failed (exit {result.returncode}) in {cwd}.\n{tail}\n"
            f"Full log: {log}. Check that the Go module proxy is reachable (GOPROXY={env.get('GOPROXY', '')}) "
            f"and that there is free disk space; delete {cwd} to start the build over."
        )


def _staging_replaces(go: str, tool: GoTool, env: dict[str, str], workdir: Path) -> list[str]:
    """Kubernetes' go.mod points its staging modules at ./staging; point them at the published tags."""
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{tool.module}@{tool.version}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise ToolError(f"cannot download {tool.module}@{tool.version}: {out.stderr.strip() or out.stdout.strip()}")
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    staging_version = "v0." + tool.version.split(".", 1)[1]
    names = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.MULTILINE)
    return [f"\t{name} => {name} {staging_version}" for name in names]


def build(tool: GoTool, *, force: bool = False, out: TextSink | None = None) -> GoTool:
    """Build every binary of ``tool`` unless the cache already has them."""
    if tool.is_built() and not force:
        return tool
    go = _go()
    work = tool.directory / "src"
    work.mkdir(parents=True, exist_ok=True)
    (tool.directory / "bin").mkdir(exist_ok=True)
    log = tool.directory / "build.log"
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "")
    env["GOFLAGS"] = (env["GOFLAGS"] + " -mod=mod").strip()
    env["CGO_ENABLED"] = "0"
    replaces = _staging_replaces(go, tool, env, work) if tool.staging_replaces else []
    gomod = f"module modelship.local/tools/{tool.name}\n\ngo 1.25\n\nrequire {tool.module} {tool.version}\n"
    if replaces:
        gomod += "\nreplace (\n" + "\n".join(replaces) + "\n)\n"
    (work / "go.mod").write_text(gomod)
    (work / "tools.go").write_text(
        f"// Package tools is a wrapper that pins {tool.module} {tool.version}.\npackage tools\n"
    )
    started = time.monotonic()
    _emit(out, f"building {tool.name} {tool.version} (first run only; log: {log})")
    _run([go, "get", *[f"{pkg}@{tool.version}" for pkg in tool.packages.values()]], work, log, env)
    for binary, package in tool.packages.items():
        command = [go, "build", "-trimpath", "-o", str(tool.directory / "bin" / binary)]
        if tool.build_tags:
            command += ["-tags", ",".join(tool.build_tags)]
        command += ["-ldflags", " ".join(["-s", "-w", *tool.ldflags]), package]
        _run(command, work, log, env)
    _emit(out, f"built {tool.name} {tool.version} in {time.monotonic() - started:.0f}s")
    return tool


class TextSink:  # a protocol-like stand-in so callers can pass sys.stderr or a list-backed writer
    def write(self, text: str) -> object: ...


def _emit(out: TextSink | None, message: str) -> None:
    sink = out if out is not None else sys.stderr
    sink.write(f"[tools] {message}\n")


# Commands that come from Debian's packages rather than the Go module proxy, and the package of each.
DEBIAN_PACKAGES = {
    "buildah": "buildah",
    "debootstrap": "debootstrap",
    "containerd": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "nsenter": "util-linux",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "cmake": "cmake",
    "g++": "g++",
}


def require_debian_packages(*commands: str) -> None:
    """Install, with apt, the Debian packages that provide any of `commands` (names on PATH, or absolute
    paths) not there yet."""
    missing = sorted({DEBIAN_PACKAGES[c] for c in commands if shutil.which(c) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolError(f"missing {', '.join(missing)}: install them with `apt-get install {' '.join(missing)}`")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    for argv in (["apt-get", "update", "-qq"], install):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ToolError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-800:]}")


def _crd_directory(module: str, version: str, subdirectory: str) -> Path:
    """A folder of CRDs inside a Go module, as the Go module proxy serves it (downloaded when missing)."""
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path.home(),
        timeout=600,
    )
    if out.returncode != 0:
        raise ToolError(f"cannot download {module}@{version}: {out.stdout.strip()} {out.stderr.strip()}")
    directory = Path(json.loads(out.stdout)["Dir"]) / subdirectory
    if not directory.is_dir():
        raise ToolError(f"{module}@{version} has no {directory}")
    return directory


def gateway_api_crds() -> Path:
    """The Gateway API's standard-channel CRDs, from the sigs.k8s.io/gateway-api Go module."""
    return _crd_directory("sigs.k8s.io/gateway-api", GATEWAY_API_VERSION, "config/crd/standard")


def inference_extension_crds() -> Path:
    """The Gateway API Inference Extension's InferencePool CRD (inference.networking.k8s.io/v1)."""
    directory = _crd_directory(
        "sigs.k8s.io/gateway-api-inference-extension", INFERENCE_EXTENSION_VERSION, "config/crd/bases"
    )
    return directory / "inference.networking.k8s.io_inferencepools.yaml"


def module_source(tool: GoTool) -> Path:
    """The upstream module's files as the Go module proxy serves them (downloaded when missing), for the
    data a tool ships beside its code (kwok's stage configurations, say)."""
    result = subprocess.run(
        [_go(), "mod", "download", "-json", f"{tool.module}@{tool.version}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise ToolError(
            f"cannot download {tool.module}@{tool.version}: {result.stdout.strip()} {result.stderr.strip()}"
        )
    return Path(json.loads(result.stdout)["Dir"])


def build_all(*, force: bool = False) -> None:
    for tool in ALL_TOOLS:
        build(tool, force=force)
    # Used inside the clusters' network namespaces, where nothing can be downloaded.
    build(ENDPOINT_PICKER, force=force)
    gateway_api_crds()
    inference_extension_crds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or locate the local control plane's binaries.")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--print-paths", action="store_true", help="print the binaries' paths and exit")
    args = parser.parse_args(argv)
    if args.print_paths:
        for tool in ALL_TOOLS:
            for name in tool.packages:
                state = "ok" if tool.binary(name).is_file() else "missing"
                print(f"{name}\t{tool.binary(name)}\t{state}")
        return 0
    try:
        build_all(force=args.force)
    except ToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
