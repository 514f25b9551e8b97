"""A real Postgres server for tests: Debian's `postgresql` package, a throwaway cluster on a free port.

The tests need a real server (types, transactions, dlt's postgres destination), not a stand-in. The package's
own cluster is left alone: `initdb` makes a new one in a temporary folder, `pg_ctl` starts it on a free port of
127.0.0.1 with its socket in that folder, and it is stopped and deleted after. `initdb` and `postgres` refuse to
run as root, so as root every server command runs as the `postgres` user (through `runuser`); as anyone else
they run as that user. Over TCP the superuser needs its password (scram-sha-256), as any real server would ask
(dlt's postgres destination insists on one); the server listens on loopback only and lives for one session.

`make postgres-server` (and `.ci/run`) installs the package; `find_bin_dir` finds its binaries without naming
a version (Debian keeps them in /usr/lib/postgresql/<version>/bin, off the PATH).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

#: a folder holding initdb, pg_ctl and postgres, to use instead of the ones found
PG_BIN_ENV = "PG_BIN"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
OS_USER = "postgres"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """This machine cannot run the test server; the message says what is missing."""


class PostgresStartError(RuntimeError):
    """The server is installed but a command failed: a real failure, never a reason to skip."""


def _version(bin_dir: Path) -> tuple[int, ...]:
    name = bin_dir.parent.name
    return tuple(int(part) for part in name.split(".")) if name.replace(".", "").isdigit() else ()


def find_bin_dir() -> Path | None:
    """The folder of the server binaries: $PG_BIN, else the newest Debian version, else the PATH's."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    candidates += sorted(DEBIAN_ROOT.glob("*/bin"), key=_version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in SERVER_BINARIES):
            return folder
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One running cluster; `url(database)` reaches it as the superuser over TCP on 127.0.0.1."""

    def __init__(self, bin_dir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.password = secrets.token_hex(12)
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.run_as = run_as
        self.data = root / "data"
        self.log = root / "server.log"

    @classmethod
    def start(cls) -> PostgresServer:
        """initdb, configure and start a cluster; PostgresUnavailable if this machine cannot."""
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable(
                f"no Postgres server binaries ({', '.join(SERVER_BINARIES)}) under {DEBIAN_ROOT}/*/bin, on the PATH "
                f"or in ${PG_BIN_ENV}: install Debian's package with `make postgres-server`"
            )
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PostgresUnavailable(f"running as root and there is no `{OS_USER}` user to run Postgres as "
                                          "(Debian's postgresql package creates it)") from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root and `runuser` is missing (util-linux)")
        root = Path(tempfile.mkdtemp(prefix="bento-pg-"))
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        server = cls(bin_dir, root, free_port(), OS_USER if owner else None)
        try:
            server._init_and_start(owner.pw_uid if owner else None)
        except BaseException:
            server.stop()
            raise
        return server

    def _command(self, binary: str, *args: str) -> list[str]:
        argv = [str(self.bin_dir / binary), *args]
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else argv

    def _run(self, binary: str, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        result = subprocess.run(self._command(binary, *args), cwd=self.root, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=timeout)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresStartError(f"{binary} {' '.join(args[:1])} failed ({result.returncode}): "
                                      f"{result.stderr.strip()[-2000:]}\n{log}")

    def _init_and_start(self, uid: int | None) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if uid is not None:
            os.chown(pwfile, uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync")
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            # a throwaway cluster: durability costs time and buys nothing here
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# bento-dlt test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S))

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder; safe to call twice."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._command("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w"),
                           cwd=self.root, capture_output=True, stdin=subprocess.DEVNULL, timeout=START_TIMEOUT_S)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        import psycopg2  # the [postgres] extra

        con: Any = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password,
                                    dbname="postgres")
        try:
            con.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
            with con.cursor() as cur:
                cur.execute(statement)
        finally:
            con.close()

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
