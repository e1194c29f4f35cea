"""The ``hookkit`` command: ``init``, ``check`` and ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hookkit._version import __version__

# Each command imports what it needs when it runs: `hookkit stacks` and
# `hookkit top` are asked for while something is wrong, and should not wait
# for the drop-in, every sink and prometheus_client to import first.


def cmd_init(args: argparse.Namespace) -> int:
    """Write the drop-in config file."""
    from hookkit._dropin.load import CONFIG_FILE_TEXT

    path = args.path
    if os.path.exists(path) and not args.force:
        print(f"hookkit init: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    with open(path, "w") as config:
        config.write(CONFIG_FILE_TEXT)
    print(f"wrote {path}; run: gunicorn -c {path} app:app")
    return 0


def cmd_check(_args: argparse.Namespace) -> int:
    """Print the effective settings; non-zero on any problem."""
    from hookkit._aggregate.directory import ENV_DIR, check_named_directory
    from hookkit._core.settings import ConfigError
    from hookkit._dropin import assemble
    from hookkit._dropin.load import read_user_config, user_config_path
    from hookkit._master_http.webconfig import load_web_config
    from hookkit._sinks.tracing.config import TracingConfig

    try:
        path = user_config_path(os.environ)
        assemble.begin_config_load()
        try:
            user = read_user_config(path) if path else {}
        finally:
            assemble.finish_loading()
        settings, sinks = assemble.preview(os.environ, user)
        tracing = TracingConfig.load(settings)
        if settings.metrics:
            load_web_config(settings.metrics_web_config)
            named = os.environ.get(ENV_DIR, "").strip()
            if named:
                check_named_directory(named)
    except ConfigError as exc:
        print(f"hookkit check: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"hookkit check: reading the gunicorn config failed: {exc!r}", file=sys.stderr)
        return 2
    print(f"hookkit {__version__}")
    print(f"gunicorn config applied by the drop-in: {path or '(none)'}")
    print(f"sinks: {', '.join(sinks) or '(none)'}")
    width = max(len(name) for name, _ in settings.as_rows())
    for name, value in settings.as_rows():
        print(f"{name:<{width}}  {value}")
    print("tracing: " + ", ".join(f"{key}={value}" for key, value in tracing.describe().items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the reference server tour."""
    from hookkit._face.demo import main as demo_main

    return demo_main(json_output=args.json, dirty=args.dirty)


def cmd_top(args: argparse.Namespace) -> int:
    """A live view of a master's workers (one snapshot in a pipe)."""
    from hookkit._face.top import main as top_main

    return top_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="hookkit", description="Observability for gunicorn.")
    parser.add_argument("--version", action="version", version=f"hookkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write ./hookkit.conf, the drop-in gunicorn config")
    init.add_argument("--path", default="hookkit.conf", help="where to write it")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)
    check = sub.add_parser("check", help="print the effective settings; non-zero on a problem")
    check.set_defaults(func=cmd_check)
    demo = sub.add_parser("demo", help="run a real gunicorn through every hook")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument("--dirty", action="store_true", help="also run a dirty app (gunicorn 25+)")
    demo.set_defaults(func=cmd_demo)
    top = sub.add_parser("top", help="a live view of gunicorn's workers, from /status.json")
    from hookkit._face.top import add_arguments as top_arguments

    top_arguments(top)
    top.set_defaults(func=cmd_top)
    from hookkit._face.stacks_cli import add_parser as add_stacks_parser

    add_stacks_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hookkit`` command."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
