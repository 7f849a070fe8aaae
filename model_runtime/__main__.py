"""`python -m model_runtime serve` (the inference server) and `python -m model_runtime router`."""

from __future__ import annotations

import asyncio
import logging
import sys

from .settings import SettingsError, parse

USAGE = "usage: python -m model_runtime {serve,router} [options]   (--help after the command for options)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args or args[0] not in ("serve", "router"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    if command == "router":
        from .router.main import main as router_main

        return int(router_main(rest))
    try:
        settings = parse(rest)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from .app import serve

    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
