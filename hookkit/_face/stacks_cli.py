"""``hookkit stacks [URL]``: the current stack of every thread of every
worker (greenlets and asyncio tasks too), from the master's
``/stacks.json``, as text.

No ptrace is involved: each worker's own thread answers the master over a
socketpair (``hookkit._sinks.status.stacks``), so this works where py-spy
and gdb cannot (no ``CAP_SYS_PTRACE``, non-dumpable workers). A worker that
cannot answer within the deadline (stuck in C code holding the GIL) is
listed as not answering.

The endpoint serves stacks only on a loopback bind or with basic auth
(stacks reveal code paths): ``--user`` sends credentials, the password read
from a prompt or from the environment variable ``--password-env`` names.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, TextIO

from hookkit._face.fetch import FetchError, fetch_json

DEFAULT_URL = "http://127.0.0.1:9191"

# Why a worker is listed as not answering, for a reader.
REASONS = {
    "timeout": "no answer in time (stuck in C code holding the GIL, or swamped);"
    " it was not waited for",
    "closed": "its channel is closed (it is exiting)",
    "no_channel": "it was started before stacks were gathered (a reload replaced the sink?)",
    "busy": "another request for stacks held the channels",
    "garbled": "its answer could not be read",
}


def add_parser(sub: Any) -> None:
    """The ``stacks`` subcommand, on ``hookkit``'s subparsers."""
    stacks = sub.add_parser(
        "stacks",
        help="print the stack of every thread of every worker (no ptrace)",
        description="Print the current stack of every thread of every worker, from the"
        " master's /stacks.json (hookkit's metrics endpoint).",
    )
    stacks.add_argument(
        "url", nargs="?", default=DEFAULT_URL, help=f"the endpoint (default {DEFAULT_URL})"
    )
    stacks.add_argument("--user", help="basic auth user; the password is asked for")
    stacks.add_argument(
        "--password-env",
        metavar="NAME",
        help="read the password from the environment variable NAME instead of a prompt"
        " (not a HOOKKIT_* name: gunicorn with hookkit refuses unknown ones)",
    )
    stacks.add_argument("--cacert", help="PEM file of the CA of the endpoint's certificate")
    stacks.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    stacks.set_defaults(func=cmd_stacks)


def read_password(user: str | None, password_env: str | None) -> str | None:
    """The password for ``user``: from ``password_env``, else a prompt.
    Raises ``FetchError`` for an unusable variable."""
    if password_env is not None:
        if password_env.upper().startswith("HOOKKIT_"):
            raise FetchError(
                f"--password-env {password_env}: choose a name outside HOOKKIT_*"
                " (gunicorn with hookkit stops on an unknown HOOKKIT_* variable)"
            )
        if user is None:
            raise FetchError("--password-env needs --user")
        if password_env not in os.environ:
            raise FetchError(f"--password-env {password_env}: the variable is not set")
        return os.environ[password_env]
    if user is None:
        return None
    return getpass.getpass(f"password for {user}: ")


def cmd_stacks(args: argparse.Namespace) -> int:
    """Fetch and print the stacks; 1 with a message on any failure."""
    url = args.url.rstrip("/")
    if not url.endswith("/stacks.json"):
        url += "/stacks.json"
    try:
        password = read_password(args.user, args.password_env)
        document = fetch_json(
            url, user=args.user, password=password, cacert=args.cacert, timeout=args.timeout
        )
    except FetchError as exc:
        print(f"hookkit stacks: {exc}", file=sys.stderr)
        return 1
    if not isinstance(document, dict) or not isinstance(document.get("workers"), list):
        print(f"hookkit stacks: {url}: not a stacks document", file=sys.stderr)
        return 1
    print_stacks(document, sys.stdout)
    return 0


def print_stacks(document: dict[str, Any], out: TextIO) -> None:
    """The document as text: per worker, its threads, greenlets and tasks."""
    workers = document.get("workers") or []
    silent = document.get("not_answering") or []
    for worker in workers:
        print(f"worker pid {worker.get('pid')} (age {worker.get('age')})", file=out)
        if worker.get("error"):
            print(f"  error while gathering: {worker['error']}", file=out)
        for kind, label in (("threads", "thread"), ("greenlets", "greenlet"), ("tasks", "task")):
            for entry in worker.get(kind) or []:
                print(f"\n  {label} {entry.get('name')} ({entry.get('id')}):", file=out)
                for line in str(entry.get("stack", "")).rstrip("\n").splitlines():
                    print(f"  {line}", file=out)
        left_out = worker.get("left_out") or 0
        if left_out:
            print(f"\n  ... {left_out} more left out (the answer is bounded to 1 MiB)", file=out)
        print(file=out)
    for worker in silent:
        reason = str(worker.get("reason", "timeout"))
        print(
            f"worker pid {worker.get('pid')} (age {worker.get('age')}): not answering:"
            f" {REASONS.get(reason, reason)}",
            file=out,
        )
    if not workers and not silent:
        print("no workers", file=out)
    seconds = document.get("seconds")
    if isinstance(seconds, (int, float)):
        print(f"(gathered in {seconds:.3f} s)", file=out)
