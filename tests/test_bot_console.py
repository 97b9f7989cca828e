"""The console adapter and the CLI entry points of the bot."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from bot.adapters.console import decision_line, run_console
from bot.agent import Reply
from bot.cli import build_parser, main
from bot.upstream import MISSING_HINT
from tests.bot_helpers import open_core
from tests.fakes.openai_api import FakeOpenAI


def scripted(lines: list[str]):
    queue = list(lines)

    async def read() -> str | None:
        return queue.pop(0) if queue else None

    return read


def capture() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None), buffer


async def test_console_without_upstream_routes_and_says_what_to_set(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    out, buffer = capture()
    try:
        await run_console(
            core,
            "grandpa",
            scripted(["Good morning!", "/routing mode off", "what is 2+2", "/quit", "never"]),
            out,
        )
    finally:
        await core.close()
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("no upstream configured: set OPENAI_API_KEY")
    decision_lines = [line for line in lines if " ms" in line]
    assert len(decision_lines) == 2
    # No categorizer here: the bundled local classifier decides, the same way every run.
    assert decision_lines[0].startswith("cheap · casual · gpt-4.1-nano · knn · ")
    assert "routing mode: live → off" in lines
    assert decision_lines[1].startswith("medium · gpt-4.1-mini · fixed")


async def test_console_chat_with_upstream(seeded_db, embedder):
    upstream = await FakeOpenAI().start()
    core = await open_core(seeded_db, embedder, upstream.base_url)
    out, buffer = capture()
    try:
        await run_console(core, "grandpa", scripted(["hello crab", "/reset"]), out)
    finally:
        await core.close()
        await upstream.stop()
    text = buffer.getvalue()
    model = upstream.models[0]
    assert f"[{model}] grandpa: hello crab" in text
    assert f" · {model} · " in text
    assert "Forgot this conversation (2 messages) and its routing context." in text
    assert "no upstream" not in text


async def test_console_survives_a_failing_message(seeded_db, embedder, monkeypatch):
    core = await open_core(seeded_db, embedder, None)
    out, buffer = capture()

    async def broken_reset(conv_key: str) -> str:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(core.admin, "reset", broken_reset)
    try:
        await run_console(core, "grandpa", scripted(["/reset", "Good morning!"]), out)
    finally:
        await core.close()
    lines = buffer.getvalue().splitlines()
    assert "error: RuntimeError; the chat goes on" in lines
    # The next message is still answered (routed; no upstream here).
    assert lines[-1].startswith("cheap · casual · gpt-4.1-nano · knn · ")
    assert lines[-1].endswith(" ms")


def test_decision_line_says_why_there_is_no_decision():
    assert decision_line(Reply("hi", None, "auto")) == "model auto (the upstream routes)"
    assert decision_line(Reply("hi", None, "my-model")) == "model my-model (fixed in config)"


def test_parser_knows_the_bot_commands():
    parser = build_parser()
    assert parser.parse_args(["chat", "--name", "me"]).name == "me"
    assert parser.parse_args(["run", "discord"]).platform == "discord"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "irc"])


@pytest.mark.parametrize(("platform", "variable"), [("telegram", "TELEGRAM_BOT_TOKEN"),
                                                     ("discord", "DISCORD_BOT_TOKEN")])  # fmt: skip
def test_run_without_a_token_says_which_to_set(tmp_path, monkeypatch, capsys, platform, variable):
    monkeypatch.delenv(variable, raising=False)
    assert main(["run", platform, "--db", str(tmp_path / "x.db")]) == 2
    assert capsys.readouterr().err.strip() == f"error: set {variable} to run on {platform}"
    assert not (tmp_path / "x.db").exists()


def test_run_without_an_upstream_stops_before_opening_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:token")
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["run", "telegram", "--db", str(tmp_path / "x.db")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {MISSING_HINT}"
    # No database was created, so no pool was seeded and no model loaded.
    assert not (tmp_path / "x.db").exists()


class WatchedBuffer(io.StringIO):
    """A terminal buffer that wakes whoever waits for some text to appear on it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)

    async def shows(self, text: str) -> None:
        while text not in self.getvalue():
            self.written.clear()
            await self.written.wait()


async def test_console_streamed_reply_appears_while_it_is_written(seeded_db, embedder):
    upstream = await FakeOpenAI().start()
    upstream.reply = lambda body: "Good morning to you, grandpa, and to the cat."
    buffer = WatchedBuffer()
    out = Console(file=buffer, width=200, color_system=None)
    seen_mid_stream: list[str] = []

    async def gate(sent: str) -> None:
        # The next word is held back until the words sent so far are on the screen.
        await asyncio.wait_for(buffer.shows(sent), 10)
        seen_mid_stream.append(buffer.getvalue())

    upstream.gate = gate
    core = await open_core(seeded_db, embedder, upstream.base_url)
    try:
        await run_console(core, "grandpa", scripted(["good morning"]), out)
    finally:
        await core.close()
        await upstream.stop()
    # Before the last word was sent, everything before it was already on the screen.
    assert "Good morning to you, grandpa, and to the" in seen_mid_stream[-1]
    assert "cat." not in seen_mid_stream[-1]
    lines = buffer.getvalue().splitlines()
    # Printed piece by piece, the answer still reads as one line, once, then the decision.
    assert lines.count("Good morning to you, grandpa, and to the cat.") == 1
    assert lines[-1].endswith(" ms")


async def test_console_broken_stream_keeps_what_was_shown_and_apologizes(seeded_db, embedder):
    upstream = await FakeOpenAI().start()
    upstream.reply = lambda body: "First words arrive and then the line goes dead."
    upstream.cut_stream_after = 3
    out, buffer = capture()
    core = await open_core(seeded_db, embedder, upstream.base_url)
    try:
        await run_console(core, "grandpa", scripted(["tell me a story"]), out)
    finally:
        await core.close()
        await upstream.stop()
    text = buffer.getvalue()
    assert text.count("First words arrive") == 1
    assert text.index("First words arrive") < text.index("ms")
    apology_line = next(line for line in text.splitlines()[2:] if line.strip())
    assert "First words" not in apology_line
