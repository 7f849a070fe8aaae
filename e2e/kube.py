"""The clients the scenarios, the demo and the benchmarks share: kubectl of the server's version, and a
poll that, when it times out, says what was not ready and why."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from e2e.cluster import tools


class Kubectl:
    """kubectl of the server's version, pointed at the test cluster."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = str(tools.KUBERNETES.binary("kubectl"))

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(
        self, manifest: str, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        extra = ["-n", namespace] if namespace else []
        return self("apply", "--server-side", "--field-manager=e2e", *extra, "-f", "-", stdin=manifest, check=check)

    def wait_established(self, crd: str, timeout: float = 30) -> None:
        """Polled rather than `kubectl wait --for=condition=Established`, which fails outright when it reads
        a CRD before the API server has written any condition (kubernetes/kubernetes#66439)."""
        query = '{.status.conditions[?(@.type=="Established")].status}'
        wait_until(
            lambda: self("get", "crd", crd, "-o", f"jsonpath={query}", check=False).stdout.strip() == "True",
            f"CRD {crd} to be established",
            timeout,
        )


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float,
    interval: float = 0.25,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll until `condition()` is truthy and return its value; fail with `what` after `timeout`, and with
    what `explain()` says of the objects involved (see e2e.diagnose)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as error:  # the object may not exist yet
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    message = f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
    if explain is not None:
        try:
            message += "\n" + explain()
        except Exception as error:  # the explanation must never hide the timeout itself
            message += f"\n(could not gather why: {type(error).__name__}: {error})"
    raise AssertionError(message)
