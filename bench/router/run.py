"""Router overhead: latency added by one router process, and its top request rate, against calling the
upstream directly and against nginx doing the same 90/10 weighted split, over a trivial upstream (nginx
answering a fixed JSON) so that no model dominates the figures.

    python -m bench.router.run [--rate 500] [--seconds 15]

Needs nginx (installs Debian's nginx-light when missing; run as root, or install it first) and builds
`hey` (github.com/rakyll/hey) from the Go module proxy into the tools cache. Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from e2e.cluster import tools

REPO = Path(__file__).resolve().parents[2]
BODY = json.dumps({"model": "bench", "prompt": "hello", "max_tokens": 4})
ANSWER = '{"id":"x","object":"text_completion","choices":[{"index":0,"text":"hi","finish_reason":"stop"}]}'


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("nginx is missing: install Debian's nginx-light (apt-get install nginx-light)")
    print("installing Debian's nginx-light (apt-get)", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "nginx-light"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(directory: Path, stable: int, canary: int, split: int) -> Path:
    config = f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  keepalive_requests 1000000;
  upstream split {{ server 127.0.0.2:{stable} weight=9; server 127.0.0.3:{canary} weight=1; keepalive 64; }}
  server {{ listen 127.0.0.2:{stable}; location / {{ default_type application/json;
            add_header x-modelship-revision stable; return 200 '{ANSWER}'; }} }}
  server {{ listen 127.0.0.3:{canary}; location / {{ default_type application/json;
            add_header x-modelship-revision canary; return 200 '{ANSWER}'; }} }}
  server {{ listen 127.0.0.4:{split}; location / {{ proxy_pass http://split; proxy_http_version 1.1;
            proxy_set_header Connection ""; }} }}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(config)
    return path


def hey(url: str, seconds: float, concurrency: int, rate: float | None) -> Run:
    command = [
        str(tools.HEY.binary("hey")),
        "-z",
        f"{seconds}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        BODY,
    ]
    if rate:
        command += ["-q", f"{rate / concurrency:g}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout

    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        if not match:
            raise RuntimeError(f"hey printed no {pattern!r}:\n{output}")
        return float(match.group(1))

    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", output))
    errors = sum(int(n) for code, n in codes.items() if code != "200") + len(re.findall(r"Error distribution", output))
    return Run(
        number(r"Requests/sec:\s+([\d.]+)"),
        number(r"50%+ in ([\d.]+) secs") * 1000,
        number(r"99%+ in ([\d.]+) secs") * 1000,
        errors,
    )


def wait_http(url: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second for the latency runs")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=10, help="client connections for the latency runs")
    args = parser.parse_args()
    tools.build(tools.HEY)
    nginx = ensure_nginx()
    stable, canary, split, router_port = free_port(), free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / sub).mkdir()
        config = nginx_config(directory, stable, canary, split)
        nginx_process = subprocess.Popen([nginx, "-c", str(config), "-g", "daemon off;"])
        routing = directory / "routing.json"
        routing.write_text(
            json.dumps(
                {
                    "routing": {
                        "version": 1,
                        "tracks": [
                            {"name": "stable", "revision": "stable", "weight": 90},
                            {"name": "canary", "revision": "canary", "weight": 10},
                        ],
                    },
                    "endpoints": {"stable": [f"127.0.0.2:{stable}"], "canary": [f"127.0.0.3:{canary}"]},
                }
            )
        )
        router = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "model_runtime",
                "router",
                "--routing-file",
                str(routing),
                "--host",
                "127.0.0.5",
                "--port",
                str(router_port),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            targets = {
                "direct": f"http://127.0.0.2:{stable}/v1/completions",
                "modelship router": f"http://127.0.0.5:{router_port}/v1/completions",
                "nginx split": f"http://127.0.0.4:{split}/v1/completions",
            }
            wait_http(targets["direct"].replace("/v1/completions", "/"))
            wait_http(f"http://127.0.0.5:{router_port}/health/ready")
            for url in targets.values():  # warm connections and caches alike
                hey(url, 2, args.concurrency, args.rate)
            even = {name: hey(url, args.seconds, 1, args.rate) for name, url in targets.items()}
            at_rate = {name: hey(url, args.seconds, args.concurrency, args.rate) for name, url in targets.items()}
            flat_out = {name: hey(url, args.seconds, 32, None) for name, url in targets.items()}
        finally:
            router.terminate()
            nginx_process.terminate()
            router.wait(10)
            nginx_process.wait(10)
    print(f"# router benchmark: {os.cpu_count()} CPUs, {args.seconds:g}s per run; top rate with 32 connections")
    for title, runs in (
        (f"{args.rate:g} req/s evenly paced (one connection)", even),
        (
            f"{args.rate:g} req/s from {args.concurrency} connections that hey paces in step "
            f"(bursts of {args.concurrency})",
            at_rate,
        ),
    ):
        base = runs["direct"]
        print(f"\n{title}\n")
        print("| path | P50 | P99 | added P50 | added P99 | errors | top req/s |")
        print("|---|---|---|---|---|---|---|")
        for name, run in runs.items():
            added = "-" if name == "direct" else f"{run.p50_ms - base.p50_ms:+.2f} ms"
            added99 = "-" if name == "direct" else f"{run.p99_ms - base.p99_ms:+.2f} ms"
            print(
                f"| {name} | {run.p50_ms:.2f} ms | {run.p99_ms:.2f} ms | {added} | {added99} | "
                f"{run.errors + flat_out[name].errors} | {flat_out[name].rps:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
