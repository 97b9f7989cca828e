"""`crabbot proxy` as a process of its own for the fault matrix (scripts/fault_matrix.py): its
config and database in a scratch folder, started on a free port, waited for, stopped with a
signal; a seeded database made once and copied for each run."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROVIDER_KEY = "sk-provider-FAULT-MATRIX-0001"
KEYS = {"family": "key-family-0001", "mallory": "key-mallory-0002"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seeded(folder: Path) -> Path:
    """A database whose pool holds the embedded seed pool (`crabbot route` seeds it)."""
    db = folder / "seed.db"
    subprocess.run(
        [sys.executable, "-m", "bot.cli", "route", "hello", "--db", str(db)],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return db


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


class Proxy:
    """One `crabbot proxy` process: `config` is the TOML text, `keys` the client keys by label
    (none: a keyless proxy), `groq_url` a categorizer to use."""

    def __init__(
        self,
        seed: Path,
        provider_url: str,
        config: str = "",
        keys: dict[str, str] | None = None,
        groq_url: str | None = None,
    ) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="faults_"))
        atexit.register(shutil.rmtree, self.work, True)  # read after the proxy stops
        self.db = self.work / "crabbot.db"
        shutil.copyfile(seed, self.db)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        categorizer = (
            f'[categorizer]\nbase_url = "{groq_url}"\n'
            if groq_url
            else "[categorizer]\nenabled = false\n"
        )
        (self.work / "crabbot.toml").write_text(config + "\n" + categorizer)
        self.env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "OPENAI_BASE_URL": provider_url,
            "OPENAI_API_KEY": PROVIDER_KEY,
        }
        self.env.pop("GROQ_API_KEY", None)
        if groq_url:
            self.env["GROQ_API_KEY"] = "gsk-fault-matrix"
        if keys:
            self.env["CRABBOT_PROXY_KEYS"] = ",".join(f"{k}:{v}" for k, v in keys.items())
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr = self.work / "stderr.txt"

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *args: str) -> Proxy:
        command = [sys.executable, "-m", "bot.cli", "proxy", "--config"]
        command += [str(self.work / "crabbot.toml"), "--db", str(self.db), "--port"]
        command += [str(self.port), *args]
        with self.stderr.open("ab") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stderr=err)
        deadline = time.monotonic() + 180
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise SystemExit(f"the proxy exited: {self.stderr.read_text()[-2000:]}")
                try:
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise SystemExit("the proxy did not start in 180 s")

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(sig)
        try:
            return await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
            return await asyncio.to_thread(process.wait)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, label: str | None = "family", **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {KEYS[label]}"} if label else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60, **kwargs)
