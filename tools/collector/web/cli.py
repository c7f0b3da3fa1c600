"""The dashboard's commands (mounted by tools/collector/cli.py):

    python -m tools.collector web --db URL [--host H] [--port 8081] [--roll-every 30]
    python -m tools.collector user --db URL NAME --role viewer|operator|administrator
                                   [--password-stdin] [--remove | --list]
    python -m tools.collector rollup --db URL [--rebuild]

`web` serves the pages on their own listener (not the devices' port) under uvicorn and brings the
summary tables up to date every --roll-every seconds. `user` creates or replaces an account; the
password is asked twice on a terminal, or read from the first line of stdin.
"""

import getpass
import logging
import sys
import threading

from . import auth, rollup

log = logging.getLogger("collector.web")


def add_commands(sub, with_db):
    s = with_db(sub.add_parser("web", help="serve the operators' pages (dashboard)"))
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8081)
    s.add_argument("--roll-every", type=float, default=30.0, help="s between summary updates")
    s.add_argument("--log-level", default="info")
    s = with_db(sub.add_parser("user", help="create, replace, remove or list dashboard users"))
    s.add_argument("name", nargs="?")
    s.add_argument("--role", choices=auth.ROLES)
    s.add_argument("--password-stdin", action="store_true")
    s.add_argument("--remove", action="store_true")
    s.add_argument("--list", action="store_true")
    s = with_db(sub.add_parser("rollup", help="bring the dashboard's summary tables up to date"))
    s.add_argument("--rebuild", action="store_true", help="forget them and build them again")
    return {"web": cmd_web, "user": cmd_user, "rollup": cmd_rollup}


def cmd_user(args, store):
    if args.list:
        for u in auth.users(store):
            print("%s\t%s" % (u["name"], u["role"]))
        return 0
    if not args.name:
        raise ValueError("give a user name")
    if args.remove:
        n = auth.remove_user(store, args.name)
        print("removed" if n else "no such user")
        return 0 if n else 1
    if not args.role:
        raise ValueError("--role is required")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password for %s: " % args.name)
        if getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ")
    auth.add_user(store, args.name, password, args.role)
    print("user %s: %s" % (args.name, args.role))
    return 0


def cmd_rollup(args, store):
    n = rollup.rebuild(store) if args.rebuild else rollup.rollup(store)
    print("%d records summarised" % n)
    return 0


def cmd_web(args, store):
    import uvicorn

    from .pages import create_web_app

    app = create_web_app(store, roll_every=args.roll_every)
    stop = threading.Event()

    def roll():
        while not stop.wait(args.roll_every):
            try:
                rollup.rollup(store)
            except Exception as e:  # noqa: BLE001  (the database: next round)
                log.exception("rollup failed: %s", e)

    threading.Thread(target=roll, daemon=True).start()
    print("dashboard on http://%s:%d/" % (args.host, args.port), flush=True)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            proxy_headers=False,
            server_header=False,
        )
    finally:
        stop.set()
    return 0
