"""StreamedReply on a recording surface: a growing answer shown, then settled piece by piece."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from bot.split import split_message
from bot.streaming import StreamedReply
from tests.fakes.openai_api import stream_pieces
from tests.fence_helpers import code_answer, open_fence, parser_code


class RecordingSurface:
    """A Surface that remembers every piece it was asked to show or settle."""

    limit = 300

    def __init__(self) -> None:
        self.shown: list[tuple[int, str]] = []
        self.settled: list[tuple[int, str]] = []
        self.changed = asyncio.Condition()

    def size(self, text: str) -> int:
        return len(text)

    async def show(self, index: int, text: str) -> None:
        await self._record(self.shown, (index, text))

    async def settle(self, index: int, text: str) -> None:
        await self._record(self.settled, (index, text))

    async def _record(self, calls: list[tuple[int, str]], call: tuple[int, str]) -> None:
        async with self.changed:
            calls.append(call)
            self.changed.notify_all()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(condition), 10)


ANSWER = code_answer(parser_code(30))


async def test_a_growing_code_answer_settles_each_piece_once_with_its_block_closed():
    surface = RecordingSurface()
    reply = StreamedReply(surface, interval_s=0.0, counters=Counter())
    so_far = ""
    for number, word in enumerate(stream_pieces(ANSWER), start=1):
        so_far += word
        reply.update(so_far)
        # Each word changes the piece being written, so each update is shown once.
        await surface.wait_until(lambda number=number: len(surface.shown) == number)
    await reply.finish(ANSWER)
    pieces = split_message(ANSWER, surface.limit)
    assert len(pieces) > 3
    # A piece settled while the answer grew never changed afterwards: one settle per piece.
    assert surface.settled == list(enumerate(pieces))
    assert all(open_fence(piece) is None for piece in pieces)
    assert all(piece.startswith("```python\n") for piece in pieces[1:])
