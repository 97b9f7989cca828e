"""Hosts for the cluster benchmark: network namespaces on one bridge (or, without namespaces,
all on 127.0.0.1), the processes started on them, and a teardown that leaves nothing behind
(every process stopped, every namespace deleted, the work folder removed), also on Ctrl-C,
SIGTERM or an error.

Each run's hosts are namespaces named cb<pid>-<role>; the bridge lives in a namespace of its own
(cb<pid>-switch), so nothing is added to the machine's own network and runs never meet."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SUBNET = "10.77.0"  # the hosts' /24, inside this run's own namespaces
STOP_GRACE_S = 10.0  # a process asked to stop (SIGTERM) gets this long before SIGKILL
_STALE = re.compile(r"^cb(\d+)-")
_STALE_FOLDER = re.compile(r"^crabbot-cluster-(?:pg)?(\d+)-")


class ClusterError(Exception):
    """A host or process that could not be set up: one line saying which and why."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60.0) -> str:
    """A short command; its stdout. A failure raises ClusterError with the command's stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, the kernel refusing), else None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cb{os.getpid()}-probe"
    try:
        run(["ip", "netns", "add", probe])
    except ClusterError as error:
        return f"`ip netns add` failed: {error}"
    run(["ip", "netns", "delete", probe], check=False)
    return None


def _delete_namespace(name: str) -> None:
    """The namespace gone, and whatever still ran in it (a deleted namespace's processes would
    otherwise go on running in it, unnamed)."""
    for pid in run(["ip", "netns", "pids", name], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "delete", name], check=False)


def remove_stale(namespaces: bool) -> list[str]:
    """What an earlier run left behind when it could not clean up (it was SIGKILLed): its
    namespaces and their processes (with `namespaces`), its temporary folders. A run's names
    carry its pid."""
    removed = []
    listed = run(["ip", "netns", "list"], check=False) if namespaces else ""
    for line in listed.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _STALE.match(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_namespace(name)
            removed.append(name)
    for folder in Path(tempfile.gettempdir()).glob("crabbot-cluster-*"):
        match = _STALE_FOLDER.match(folder.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def workdir(kind: str) -> Path:
    """A new temporary folder named for this run (so a later run can tell it is stale)."""
    return Path(tempfile.mkdtemp(prefix=f"crabbot-cluster-{kind}{os.getpid()}-"))


@dataclass(frozen=True)
class Host:
    """One machine of the cluster: its role, its address, its namespace (None: this machine)."""

    role: str
    address: str
    netns: str | None

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run on this host."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)


@dataclass
class Process:
    """A long-running process on a host; its output goes to a log file, and `ready` is set once
    it has printed a line starting with the expected text."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ready_prefix: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    # How it was started (host, argv, env, cwd), for Cluster.restart.
    launch: tuple[Host, Sequence[str], Mapping[str, str] | None, Path | None] | None = None

    def wait_ready(self, limit_s: float) -> str:
        """The ready line; a ClusterError if the process exits first or takes too long."""
        deadline = time.monotonic() + limit_s
        while not self.ready.wait(0.2):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                # The reader thread may still be writing the last lines.
                time.sleep(0.2)
                why = "exited" if self.popen.poll() is not None else f"not ready in {limit_s:.0f} s"
                tail = "".join(self.lines[-15:])
                raise ClusterError(f"{self.name} {why}; last lines of {self.log}:\n{tail}")
        return next((line for line in self.lines if line.startswith(self.ready_prefix)), "")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE_S."""
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()


def _relay(process: Process, stream: object) -> None:
    with process.log.open("a", encoding="utf-8") as out:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode(errors="replace")
            out.write(line)
            out.flush()
            process.lines.append(line)
            del process.lines[:-200]
            if process.ready_prefix and line.startswith(process.ready_prefix):
                process.ready.set()


class Cluster:
    """The hosts of one run and what runs on them. A context manager: leaving it (normally, on
    an error, on Ctrl-C) stops every process and deletes every namespace and the work folder."""

    def __init__(self, use_netns: bool, keep_files: bool = False) -> None:
        self.use_netns = use_netns
        self.keep_files = keep_files
        self.prefix = f"cb{os.getpid()}"
        self.workdir = workdir("")
        self.hosts: dict[str, Host] = {}
        self.processes: list[Process] = []
        self.cleanups: list[tuple[str, object]] = []  # (what, callable) run before the namespaces
        self._namespaces: list[str] = []
        self._switch: str | None = None
        self._ports: dict[str, str] = {}  # a host's role -> its port on the bridge

    def __enter__(self) -> Cluster:
        remove_stale(self.use_netns)
        if self.use_netns:
            self._switch = self._namespace("switch")
            run(["ip", "-n", self._switch, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", self._switch, "link", "set", "br0", "up"])
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _namespace(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        return name

    def add_host(self, role: str) -> Host:
        """A new host: a namespace with one veth on the bridge and the next address (or, without
        namespaces, this machine at 127.0.0.1)."""
        if not self.use_netns:
            host = Host(role, "127.0.0.1", None)
        else:
            assert self._switch is not None
            netns = self._namespace(role)
            address = f"{SUBNET}.{len(self.hosts) + 2}"
            port = f"v{len(self.hosts)}"
            veth = ("type", "veth", "peer", "name", "eth0", "netns", netns)
            run(["ip", "-n", self._switch, "link", "add", port, *veth])
            run(["ip", "-n", self._switch, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", netns, "link", "set", "eth0", "up"])
            run(["ip", "-n", netns, "link", "set", "lo", "up"])
            host = Host(role, address, netns)
            self._ports[role] = port
        self.hosts[role] = host
        return host

    def set_link(self, host: Host, up: bool) -> None:
        """Plug `host` into the bridge or pull its cable: pulled, whatever it sends or is sent
        vanishes with no reset, as in a partition or a power cut."""
        assert self._switch is not None, "a link to cut needs network namespaces"
        state = "up" if up else "down"
        run(["ip", "-n", self._switch, "link", "set", self._ports[host.role], state])

    @property
    def subnet(self) -> str:
        return f"{SUBNET}.0/24" if self.use_netns else "127.0.0.1/32"

    def start(
        self,
        name: str,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready: str = "",
        cwd: Path | None = None,
    ) -> Process:
        """`argv` on `host`, in a session of its own (a Ctrl-C here reaches it only through
        close()), its stdout and stderr in <workdir>/<name>.log."""
        popen = subprocess.Popen(
            host.command(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        process = Process(name, popen, self.workdir / f"{name}.log", ready)
        process.launch = (host, argv, env, cwd)
        if not ready:
            process.ready.set()
        threading.Thread(target=_relay, args=(process, popen.stdout), daemon=True).start()
        self.processes.append(process)
        return process

    def restart(self, process: Process, name: str) -> Process:
        """`process` started again as it was (its log in <workdir>/<name>.log)."""
        assert process.launch is not None
        host, argv, env, cwd = process.launch
        return self.start(name, host, argv, env=env, ready=process.ready_prefix, cwd=cwd)

    def on_close(self, what: str, action: object) -> None:
        """`action()` at close, before the processes are stopped (e.g. stopping PostgreSQL)."""
        self.cleanups.append((what, action))

    def close(self) -> None:
        """Everything this run made, gone; each step runs even if one before it failed."""
        # A second Ctrl-C during teardown must not leave namespaces behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for what, action in reversed(self.cleanups):
                try:
                    action()  # type: ignore[operator]
                except Exception as error:  # noqa: BLE001 - teardown goes on
                    print(f"cleanup: {what} failed: {error}", file=sys.stderr)
            self.cleanups.clear()
            for process in reversed(self.processes):
                process.stop()
            for name in reversed(self._namespaces):
                _delete_namespace(name)
            self._namespaces.clear()
            if not self.keep_files:
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
