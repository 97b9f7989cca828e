"""`crabbot chat` in a real pseudo-terminal, as a person types: a multi-line paste is one
message, history survives a restart, Ctrl-C cancels an answer or quits at the prompt, Ctrl-D
quits."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import sys
import termios
from pathlib import Path

import pytest

from tests.db_helpers import fetch_sync

ROOT = Path(__file__).resolve().parent.parent
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[>=]|\r")


def _own_terminal() -> None:
    """In the child: a session of its own with the pty as its controlling terminal, so Ctrl-C
    typed there is a SIGINT, as in a real terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`crabbot chat` on a pty; `expect` waits for output, never for time."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process, self.master = process, master
        self.screen = ""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    async def start(cls, db: Path, env: dict[str, str], *extra: str) -> Terminal:
        master, slave = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "chat", "--db", str(db), "--name", "tester", *extra,
            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
            preexec_fn=_own_terminal,
        )  # fmt: skip
        os.close(slave)
        return cls(process, master)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.screen += ANSI.sub("", data.decode("utf-8", "replace"))
        self._changed.set()

    async def expect(self, pattern: str, count: int = 1, timeout: float = 60) -> None:
        async def wait() -> None:
            while self.screen.count(pattern) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"never saw {pattern!r} x{count}:\n{self.screen[-2000:]}"
            ) from None

    async def prompt_after(self, marker: str) -> None:
        """Wait until the prompt is back after the last `marker` (the chat is ready for keys)."""
        await self.expect(marker)

        async def wait() -> None:
            while "you>" not in self.screen.rsplit(marker, 1)[-1]:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), 60)

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    async def exit_code(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), 60)
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        return code


def chat_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GROQ_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    return env | {"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "120"} | extra


async def test_paste_is_one_message_history_survives_and_ctrl_c_and_ctrl_d_quit(seeded_db):
    term = await Terminal.start(seeded_db, chat_env())
    await term.expect("you>")
    term.send("早安\r")
    await term.prompt_after(" ms")
    traceback = (
        'Traceback (most recent call last):\n  File "report.py", line 12, in <module>\n'
        "    total = rows['amount']\nKeyError: 'amount'"
    )
    term.send(PASTE_START + traceback + PASTE_END + "\r")
    await term.expect(" ms", 2)
    await term.prompt_after(" ms")
    assert "strong · coding" in term.screen.split("KeyError: 'amount'")[-1]
    term.send("\x03")  # Ctrl-C at the prompt
    assert await term.exit_code() == 0
    assert term.screen.count(" ms") == 2, "the four pasted lines were one message"

    history_file = seeded_db.parent / "console_history"
    assert history_file.stat().st_mode & 0o777 == 0o600  # the family's words: owner only
    history = history_file.read_text(encoding="utf-8")
    assert "+早安" in history and "+KeyError: 'amount'" in history
    again = await Terminal.start(seeded_db, chat_env())
    await again.expect("you>")
    again.send("\x1b[A\r")  # up: the last message of the last run, the whole paste
    await again.prompt_after(" ms")
    assert "KeyError: 'amount'" in again.screen and "strong · coding" in again.screen
    again.send("\x04")  # Ctrl-D
    assert await again.exit_code() == 0


async def test_ctrl_c_cancels_an_answer_in_progress_and_the_chat_goes_on(seeded_db):
    asked = asyncio.Event()

    async def silent_provider(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.set()  # a request arrived; the answer never comes
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent_provider, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = chat_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    term = await Terminal.start(seeded_db, env)
    try:
        await term.expect("you>")
        term.send("tell me a story about a crab\r")
        await asyncio.wait_for(asked.wait(), 60)
        term.send("\x03")
        await term.prompt_after("(cancelled)")
        term.send("/help\r")
        await term.prompt_after("/whoami")
        term.send("\x04")
        assert await term.exit_code() == 0
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
async def test_sigterm_and_sighup_write_every_row_first(seeded_db, stop):
    """Issue 24, 7 and 14: a closed terminal (SIGHUP) or a kill (SIGTERM) loses no row; and
    `--conv` makes the window its own conversation, which /help names."""
    term = await Terminal.start(seeded_db, chat_env(), "--conv", "kitchen")
    await term.expect("you>")
    for n, text in enumerate(["早安", "what is 12 times 7", "おやすみなさい"], start=1):
        term.send(text + "\r")
        await term.prompt_after(" ms")
        await term.expect(" ms", n)
    term.send("/help\r")
    await term.prompt_after("another one.")
    assert "conversation console:kitchen" in term.screen
    term.process.send_signal(stop)
    assert await term.exit_code() == 128 + stop
    rows = fetch_sync(seeded_db, "SELECT conv_key, outcome FROM routing_log ORDER BY id")
    assert rows == [("console:kitchen", "routed")] * 3
