"""A real, throw-away PostgreSQL server for tests and benchmarks.

`PgServer` runs Debian's initdb/pg_ctl from /usr/lib/postgresql/*/bin in a temporary directory on a
free loopback port, and removes it afterwards. PostgreSQL refuses to run as root, so as root it
runs as the `postgres` system user (through runuser). `fast=True` turns off fsync: right for
tests, wrong for figures meant to reflect a real deployment.

Tests use the `pg_server` fixture (import it into the test module); it skips only when no
PostgreSQL binaries are installed.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if os.path.exists(os.path.join(d, "pg_ctl")) and os.path.exists(os.path.join(d, "initdb")):
            return d
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, fast=True):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise FileNotFoundError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.fast = fast
        self.tmp = None
        self.port = None

    def _run(self, *cmd, check=True):
        cmd = [os.path.join(self.bindir, cmd[0])] + list(cmd[1:])
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)

    def start(self):
        """Start the server; on any failure (or an interrupt) what was started is removed."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        self.tmp = tempfile.mkdtemp(prefix="pgtest-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        data = os.path.join(self.tmp, "data")
        self.port = _free_port()
        self._run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = "-c listen_addresses=127.0.0.1 -c port=%d -k %s -c max_connections=100" % (
            self.port,
            self.tmp,
        )
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        res = self._run(
            "pg_ctl",
            "-D",
            data,
            "-o",
            opts,
            "-l",
            os.path.join(self.tmp, "log"),
            "-w",
            "start",
            check=False,
        )
        if res.returncode != 0:
            log = ""
            try:
                with open(os.path.join(self.tmp, "log"), encoding="utf-8") as f:
                    log = f.read()[-2000:]
            except OSError:
                pass
            self.stop()
            raise RuntimeError("pg_ctl start failed: %s %s %s" % (res.stdout, res.stderr, log))
        self._wait()
        return self

    def _wait(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not come up on port %d" % self.port)

    def restart(self):
        """Stop (immediate: like a crash) and start again on the same data and port."""
        data = os.path.join(self.tmp, "data")
        # restart keeps the command-line options (port, socket dir) from postmaster.opts.
        self._run(
            "pg_ctl",
            "-D",
            data,
            "-m",
            "immediate",
            "-l",
            os.path.join(self.tmp, "log"),
            "-w",
            "restart",
        )
        self._wait()

    def url(self, dbname="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

    def create_db(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "%s"' % name)
            conn.execute('CREATE DATABASE "%s"' % name)
        return self.url(name)

    def stop(self):
        if self.tmp is None:
            return
        data = os.path.join(self.tmp, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="session")
def pg_server():
    if pg_bindir() is None:
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    server = PgServer(fast=True).start()
    try:
        yield server
    finally:
        server.stop()
