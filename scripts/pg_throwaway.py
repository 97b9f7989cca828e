"""Start or stop a throwaway PostgreSQL cluster (temp folder, Unix socket, private port) for
tests, CI and benchmarks: `start` prints the URL, `stop DIR` stops it and removes the folder."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

USER = "crabbot"  # the cluster's superuser role; local connections are trusted (a private socket)


def bindir() -> Path:
    """PostgreSQL's programs: through pg_config, else Debian's versioned folder."""
    found = shutil.which("pg_config")
    if found is not None:
        return Path(subprocess.check_output([found, "--bindir"], text=True).strip())
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        sys.exit("pg_throwaway: PostgreSQL not found: apt-get install -y postgresql")
    return versions[-1].parent


def as_owner(argv: list[str]) -> list[str]:
    """initdb and postgres refuse root: run them as the `postgres` account when we are root."""
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        sys.exit("pg_throwaway: running as root needs a 'postgres' account (useradd -r postgres)")
    return ["runuser", "-u", "postgres", "--", *argv]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def url_of(folder: Path, port: int, database: str = "postgres") -> str:
    return f"postgresql://{USER}@/{database}?host={folder}&port={port}"


def start(parent: str | None) -> str:
    folder = Path(tempfile.mkdtemp(prefix="crabbot-pg-", dir=parent))
    folder.chmod(0o755)
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    bins = bindir()
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run(
        as_owner(
            [str(bins / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8"]
            + ["--no-sync", "--locale=C"]
        ),
        **quiet,  # type: ignore[arg-type]
    )
    options = (
        f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
        " -c full_page_writes=off -c max_connections=300"
    )
    subprocess.run(
        as_owner(
            [str(bins / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log")]
            + ["-w", "start"]
        ),
        **quiet,  # type: ignore[arg-type]
    )
    (folder / "port").write_text(str(port))
    return url_of(folder, port)


def stop(folder: Path) -> None:
    if (folder / "data" / "postmaster.pid").exists():
        subprocess.run(
            as_owner([str(bindir() / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate"])
            + ["stop"],
            stdout=subprocess.DEVNULL,
            check=False,
        )
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    begin = sub.add_parser("start", help="start a cluster; print its URL (its folder is in it)")
    begin.add_argument("--parent", help="where to make the temp folder (default: $TMPDIR)")
    end = sub.add_parser("stop", help="stop the cluster (its URL or folder) and remove it")
    end.add_argument("where", help="the URL `start` printed, or its folder")
    args = parser.parse_args()
    if args.command == "start":
        print(start(args.parent))
    else:
        where = str(args.where)
        if "host=" in where:
            where = where.split("host=", 1)[1].split("&", 1)[0]
        folder = Path(where)
        if not folder.name.startswith("crabbot-pg-"):
            sys.exit(f"pg_throwaway: {folder} is not a folder this script made")
        stop(folder)


if __name__ == "__main__":
    main()
