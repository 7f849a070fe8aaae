"""`python -m e2e.cluster up|down|status|build`: the local control plane from the command line."""

from __future__ import annotations

import argparse
import sys

from . import tools
from .controlplane import ClusterInfo, ControlPlane
from .processes import ComponentDied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument("--name", default="default", help="cluster name (several may run side by side)")
    parser.add_argument("--scrape-interval", default="1s", help="Prometheus scrape interval")
    args = parser.parse_args(argv)
    plane = ControlPlane(args.name, scrape_interval=args.scrape_interval)
    try:
        if args.command == "build":
            tools.build_all()
        elif args.command == "up":
            info = plane.up()
            print(f"export KUBECONFIG={info.kubeconfig}")
            print(f"# prometheus: {info.prometheus}   node: {info.node_ip}   state: {info.root}")
            print(f"# its addresses exist inside its network namespace: {plane.namespaces.net}")
            print(f"# enter it with: nsenter --net={plane.namespaces.net} -- bash")
        elif args.command == "down":
            plane.down()
            print(f"cluster {args.name!r} is down")
        else:
            plane.check()
            info = ClusterInfo.load(plane.root)
            print(f"cluster {args.name!r} is running; KUBECONFIG={info.kubeconfig}")
    except (tools.ToolError, ComponentDied, TimeoutError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except FileNotFoundError:
        print(f"error: cluster {args.name!r} is not running (no state in {plane.root})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
