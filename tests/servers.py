"""Start real throwaway servers for tests and benchmarks: Redis and PostgreSQL.

Each server gets a free loopback port and a private temp directory, and is stopped
(and its directory removed) when the context exits. Nothing here ever connects to a
server it did not start: the machine's own Redis on 6379 or PostgreSQL on 5432 are
never touched.

Missing binaries are an error, not a skip: README.md says how to install them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

INSTALL_HINT = (
    "Install the test servers with: sudo apt-get install -y redis-server postgresql "
    "(see README.md, 'System packages')."
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def _find_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
        raise RuntimeError(f"`{name}` not found on PATH. {INSTALL_HINT}")
    return path


@dataclass
class RedisServer:
    host: str
    port: int
    password: str
    proc: subprocess.Popen
    dir: Path

    @property
    def feast_connection_string(self) -> str:
        return f"{self.host}:{self.port},db=0,password={self.password}"

    def client(self):
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password)

    def stop(self) -> None:
        """Stop the server (tests use this to simulate an outage)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def start(self) -> None:
        """(Re)start on the same port and password."""
        if self.proc.poll() is None:
            return
        self.proc = _spawn_redis(self.port, self.password, self.dir)


def _spawn_redis(port: int, password: str, directory: Path) -> subprocess.Popen:
    binary = _find_binary("redis-server")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--requirepass", password, "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, proc, 10, "redis-server")
    return proc


@contextlib.contextmanager
def redis_server(password: str = "test-only-password") -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, with a password."""
    directory = Path(tempfile.mkdtemp(prefix="pm-redis-"))
    port = free_port()
    server = RedisServer("127.0.0.1", port, password, _spawn_redis(port, password, directory), directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"


def _as_postgres_user() -> list[str]:
    # initdb and postgres refuse to run as root; drop to the `postgres` system user.
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root needs `runuser` to start PostgreSQL as an unprivileged user")
        return [runuser, "-u", "postgres", "--"]
    return []


@contextlib.contextmanager
def postgres_server(database: str = "pm_test") -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback port."""
    initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
    prefix = _as_postgres_user()
    directory = Path(tempfile.mkdtemp(prefix="pm-pg-"))
    if prefix:
        shutil.chown(directory, "postgres", "postgres")
    datadir, port, user, password = directory / "data", free_port(), "pm", "test-only-password"
    pwfile = directory / "pw"
    pwfile.write_text(password)
    if prefix:
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        subprocess.run(prefix + [initdb, "-D", str(datadir), "-U", user, "--pwfile", str(pwfile),
                                 "-A", "scram-sha-256", "--no-sync"],
                       check=True, capture_output=True)
        subprocess.run(prefix + [pg_ctl, "-D", str(datadir), "-w", "-t", "30", "-l", str(directory / "log"),
                                 "-o", f"-p {port} -h 127.0.0.1 -k {directory} -F", "start"],
                       check=True, capture_output=True)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        yield PostgresServer("127.0.0.1", port, user, password, database)
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(datadir), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
