"""The local PostgreSQL cluster: Debian's server packages, a cluster of our own, run as ``postgres``.

``initdb`` refuses to run as root, so when we are root the cluster is initialised and started as the
``postgres`` user (``runuser``). It listens on 127.0.0.1 only, on a port that does not clash with a
system server (55432 by default), with no Unix socket; password authentication (SCRAM), the password
made at first start and kept in ``.local/postgres.password`` (mode 0600).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pipeline.errors import ServiceError
from pipeline.services.common import ServiceStatus, port_open, require_free, wait_until
from pipeline.settings import LOCAL_DB_NAME, LOCAL_DB_USER, Settings, local_password_file

PG_USER = "postgres"


def _pg_bin() -> Path:
    """The newest installed server's bin folder, installing Debian's packages when there is none."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            "PostgreSQL's server is not installed; install Debian's `postgresql` package "
            "(apt-get install -y postgresql), or set DATABASE_URL to use a server of your own."
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ServiceError(
                f"Installing PostgreSQL with `{' '.join(cmd)}` failed (exit {proc.returncode}); "
                "install the `postgresql` package by hand or set DATABASE_URL."
            )
    # Debian's package starts its own cluster on 5432; ours is separate and that one is left alone.
    return _pg_bin()


def _postgres_uid() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        raise ServiceError(
            "There is no `postgres` user to run the database as; install Debian's `postgresql` package."
        ) from None


def _reachable_by_postgres(path: Path) -> bool:
    """Whether the postgres user can search every folder down to ``path``'s nearest existing ancestor."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    return (
        subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(probe)], check=False).returncode
        == 0
    )


def cluster_dir(settings: Settings) -> Path:
    """Where the cluster lives: ``.local/postgres``, unless the postgres user cannot reach that folder.

    A checkout under a private home (``/root`` is mode 0700) is out of the postgres user's reach; then
    the cluster goes to ``/var/lib/tipline/<hash of the state folder>/postgres`` and a pointer file in
    the state folder says so. No permission of any existing folder is changed.
    """
    local = settings.postgres_dir
    pointer = settings.state_dir / "postgres.location"
    if pointer.exists():
        return Path(pointer.read_text().strip())
    if os.geteuid() != 0 or (local / "data").exists() or _reachable_by_postgres(local):
        return local
    digest = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:12]
    elsewhere = Path("/var/lib/tipline") / digest / "postgres"
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    pointer.write_text(f"{elsewhere}\n")
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    elsewhere.parent.chmod(0o755)
    return elsewhere


class LocalPostgres:
    """Start, stop and inspect the project's own PostgreSQL cluster."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.dir = cluster_dir(settings)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", PG_USER, "--", *argv]
        return argv

    def _prepare_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        pg = _postgres_uid()
        os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        probe = subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-w", str(self.dir)], check=False)
        if probe.returncode != 0:
            raise ServiceError(
                f"The postgres user cannot write to {self.dir}; set TIPLINE_STATE_DIR to a folder it can reach."
            )

    def _initdb(self, bin_dir: Path) -> None:
        password = secrets.token_urlsafe(24)
        pw_tmp = self.dir / "initdb.pw"
        pw_tmp.write_text(password + "\n")
        if os.geteuid() == 0:
            pg = _postgres_uid()
            os.chown(pw_tmp, pg.pw_uid, pg.pw_gid)
        pw_tmp.chmod(0o600)
        cmd = self._as_owner(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                LOCAL_DB_USER,
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={pw_tmp}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        pw_tmp.unlink(missing_ok=True)
        if proc.returncode != 0:
            (self.dir / "initdb.log").write_text(proc.stdout + proc.stderr)
            raise ServiceError(f"initdb failed for {self.data}; see {self.dir / 'initdb.log'}.")
        pw_file = local_password_file(self.s.state_dir)
        pw_file.parent.mkdir(parents=True, exist_ok=True)
        pw_file.write_text(password + "\n")
        pw_file.chmod(0o600)

    def _check_version(self, bin_dir: Path) -> None:
        version_file = self.data / "PG_VERSION"
        if version_file.exists():
            found = version_file.read_text().strip()
            wanted = bin_dir.parent.name
            if found != wanted:
                raise ServiceError(
                    f"The PostgreSQL data folder {self.data} was made by PostgreSQL {found}, but version {wanted} "
                    "is installed; nothing was deleted: move that folder away (or set TIPLINE_STATE_DIR) and retry."
                )

    def _url(self) -> str:
        from pipeline.settings import local_database_url

        return local_database_url(self.s.state_dir, self.s.pg_port)

    def _accepts(self, dbname: str | None = None) -> bool:
        url = self.s.database_url if self.s.database_external else self._url()
        try:
            extra: dict[str, Any] = {"dbname": dbname} if dbname else {}
            with psycopg.connect(url, connect_timeout=2, **extra):
                return True
        except psycopg.Error:
            return False

    def _create_database(self) -> None:
        with psycopg.connect(self._url(), dbname="postgres", autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (LOCAL_DB_NAME,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(LOCAL_DB_NAME)))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and port_open(self.s.pg_port)

    def up(self, *, timeout: float = 60.0) -> ServiceStatus:
        if self.s.database_external:
            return self.status()
        if self.running():
            wait_until(lambda: self._accepts("postgres"), timeout=timeout, what="PostgreSQL", log=self.log)
            self._create_database()
            return self.status()
        require_free(self.s.pg_port, "PostgreSQL", "TIPLINE_PG_PORT")
        bin_dir = _pg_bin()
        self._prepare_dirs()
        self._check_version(bin_dir)
        if not (self.data / "PG_VERSION").exists():
            self._initdb(bin_dir)
        if os.geteuid() == 0:
            pg = _postgres_uid()
            if not self.log.exists():
                self.log.touch()
            os.chown(self.log, pg.pw_uid, pg.pw_gid)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.s.pg_port} -c unix_socket_directories='' -c max_connections=200"
        cmd = self._as_owner(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"PostgreSQL did not start (pg_ctl exit {proc.returncode}); see {self.log}.")
        wait_until(lambda: self._accepts("postgres"), timeout=timeout, what="PostgreSQL", log=self.log)
        self._create_database()
        return self.status()

    def down(self) -> None:
        if self.s.database_external or not (self.data / "postmaster.pid").exists():
            return
        bin_dir = _pg_bin()
        cmd = self._as_owner([str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        subprocess.run(cmd, capture_output=True, text=True, check=False)

    def status(self) -> ServiceStatus:
        if self.s.database_external:
            return ServiceStatus(
                "postgresql",
                self._accepts(),
                _hide_password(self.s.database_url),
                "(external: not managed)",
                False,
            )
        ok = self.running() and self._accepts()
        return ServiceStatus(
            "postgresql",
            ok,
            f"127.0.0.1:{self.s.pg_port}/{LOCAL_DB_NAME}",
            str(self.log),
            managed=True,
            detail=f"data {self.data}" if ok else "stopped",
        )


def _hide_password(url: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)
