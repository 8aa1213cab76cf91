"""A private PostgreSQL cluster for the tests: initdb into a new directory
under /tmp, listening on 127.0.0.1 at a free port (and on a Unix socket in
that directory), started once per test session on first use and stopped
at its end. PostgreSQL refuses to run as root, so as root the cluster
belongs to and runs as the ``postgres`` system user that Debian's package
creates. Each test gets a schema of its own (``StorePlace``).

Also ``StorePlace``: one subscriber store, SQLite or PostgreSQL, that tests
open services on, once or several times (a restart, a second node)."""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.subscribers.service import SubscriberService
from tests.test_server import free_port

BACKENDS = ("sqlite", "postgresql")
SUPERUSER = "shield"
RUN_AS = "postgres"  # Debian's postgresql package creates this system user


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian keeps them per version."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = secrets.token_hex(12)
        self.dir = Path(tempfile.mkdtemp(prefix="rs-pg-"))  # not under root's 0700 pytest dir
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.running = False
        self._schemas = itertools.count(1)
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam(RUN_AS)
            except KeyError:
                pytest.skip(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr.strip()}\n{log}")

    def init(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()
        self.port = free_port()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c max_connections=50"
        )
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options)  # fmt: skip
        self.running = True

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        self.running = False

    def destroy(self) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, schema: str = "", *, password: bool = True, dbname: str = "postgres") -> str:
        """A connection string over TCP; ``schema``: the tables go there."""
        parts = [f"host=127.0.0.1 port={self.port} dbname={dbname} user={SUPERUSER}"]
        if password:
            parts.append(f"password={self.password}")
        if schema:
            parts.append(f"options='-csearch_path={schema}'")
        return " ".join(parts)

    def new_schema(self) -> str:
        """An empty schema of its own for one test."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._schemas)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name


_shared: PgCluster | None = None


def shared_cluster(config: pytest.Config) -> PgCluster:
    """The session's cluster, started on first use; skips the test when
    PostgreSQL is not installed (``make test`` installs it)."""
    global _shared
    if _shared is None:
        bindir = find_bindir()
        if bindir is None:
            pytest.skip(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "apt-get install postgresql, as make test does"
            )
        cluster = PgCluster(bindir)
        config.add_cleanup(cluster.destroy)
        cluster.init()
        cluster.start()
        _shared = cluster
    return _shared


@dataclass
class StorePlace:
    """Where a test's subscriber store lives: a SQLite file, or a schema of
    the session's PostgreSQL cluster."""

    backend: str
    path: Path
    dsn: str = ""
    schema: str = ""

    def open(self, lock_timeout: int = 5000) -> SubscriberService:
        """A service on this store, as a (re)started worker or node opens it."""
        if self.backend == "sqlite":
            return SubscriberService(self.path)
        from proxy.subscribers.pg_store import open_postgresql

        return SubscriberService(open_postgresql(self.dsn, lock_timeout))


def store_place(backend: str, tmp_path: Path, config: pytest.Config) -> StorePlace:
    if backend == "sqlite":
        return StorePlace(backend, tmp_path / "data" / "subscribers.sqlite3")
    cluster = shared_cluster(config)
    schema = cluster.new_schema()
    return StorePlace(backend, tmp_path, cluster.dsn(schema), schema)
