"""A throwaway PostgreSQL 15 server on one cluster host: Debian's binaries (`pg_config --bindir`)
run as the `postgres` account (initdb and postgres refuse root), a data folder of its own,
listening on the host's address with trust for the cluster's subnet only; restarted on demand,
stopped and removed at the cluster's close."""

from __future__ import annotations

import pwd
import shutil
import time
from pathlib import Path

from cluster_hosts import Cluster, ClusterError, Host, run, workdir

DATABASE = "crabbot"
USER = "crabbot"
ACCOUNT = "postgres"  # the unprivileged account Debian's postgresql package creates


def bindir() -> Path:
    """Where initdb, pg_ctl and postgres are (a ClusterError when PostgreSQL is missing)."""
    if shutil.which("pg_config") is None:
        raise ClusterError("PostgreSQL is not installed (apt-get install -y postgresql)")
    path = Path(run(["pg_config", "--bindir"]).strip())
    if not (path / "initdb").exists():
        raise ClusterError(f"no initdb in {path} (apt-get install -y postgresql)")
    return path


class PostgresServer:
    """One server on `host`:`port`; `url` is what the proxies are given."""

    def __init__(self, cluster: Cluster, host: Host, port: int = 5432) -> None:
        self.cluster = cluster
        self.host = host
        self.port = port
        self.bin = bindir()
        try:
            account = pwd.getpwnam(ACCOUNT)
        except KeyError as error:
            raise ClusterError(f"no `{ACCOUNT}` account to run PostgreSQL as") from error
        # Not under the cluster's work folder: postgres must be able to reach its own files.
        self.root = workdir("pg")
        shutil.chown(self.root, account.pw_uid, account.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        cluster.on_close("PostgreSQL", self.remove)

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{self.host.address}:{self.port}/{DATABASE}"

    def _as_postgres(self, argv: list[str], timeout: float = 120.0) -> str:
        return run(self.host.command(["runuser", "-u", ACCOUNT, "--", *argv]), timeout=timeout)

    def _ctl(self, *args: str) -> str:
        return self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), *args])

    def start(self) -> None:
        """initdb, the access rules, the server, the role and the database."""
        self._as_postgres(
            [
                *(str(self.bin / "initdb"), "-D", str(self.data), "-U", ACCOUNT),
                *("--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"),
            ]
        )
        # Local socket for the harness; TCP from the cluster's subnet only, nothing else.
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\nhost all all {self.cluster.subnet} trust\n", encoding="utf-8"
        )
        settings = (
            f"listen_addresses = '{self.host.address}'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
        )
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(settings)
        self._ctl("-l", str(self.log), "-w", "start")
        self.sql(f"CREATE ROLE {USER} LOGIN")
        self.sql(f"CREATE DATABASE {DATABASE} OWNER {USER}")

    def restart(self) -> float:
        """A fast restart (open connections dropped, as a failover or an upgrade would); its
        seconds, until the server accepts connections again."""
        started = time.monotonic()
        self._ctl("-l", str(self.log), "-m", "fast", "-w", "restart")
        return time.monotonic() - started

    def sql(self, statement: str, database: str = "postgres") -> str:
        """One statement through psql on the local socket; its unaligned output."""
        return self._as_postgres(
            [
                *(str(self.bin / "psql"), "-h", str(self.root), "-p", str(self.port)),
                *("-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", statement),
            ]
        ).strip()

    def connections(self) -> int | None:
        """Client connections to the crabbot database now (None while the server is down)."""
        query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DATABASE}'"
        try:
            return int(self.sql(query))
        except (ClusterError, ValueError):
            return None

    def log_lines(self, text: str) -> int:
        """How many lines of the server's log contain `text` (e.g. "too many clients")."""
        try:
            return sum(text in line for line in self.log.read_text(encoding="utf-8").splitlines())
        except OSError:
            return 0

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._ctl("-m", "fast", "-w", "-t", "20", "stop")
            except ClusterError:
                self._ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, lines: int = 20) -> str:
        try:
            return "".join(self.log.read_text(encoding="utf-8").splitlines(True)[-lines:])
        except OSError:
            return ""
