"""A reply to the bot's answer finds the request that answer answered in the history, whatever
part of the answer the chat client quoted and however it showed its Markdown."""

from __future__ import annotations

from router.text import answered_request

POEM = "Leaves of amber, leaves of red,\nfalling softly on the bed.\n\n**Happy birthday, Grandma!**"
CODE = "```python\ndef add(a, b):\n    return a + b\n```\nCall `add(2, 3)` to get 5. " + "x" * 300
HISTORY = [
    {"role": "user", "content": "write a poem for grandma", "name": "Dad"},
    {"role": "assistant", "content": POEM + " A book of leaves."},
    {"role": "user", "content": "add two numbers in python", "name": "Mom"},
    {"role": "assistant", "content": [{"type": "text", "text": CODE}]},
]


def test_the_quoted_answer_names_its_request_and_its_asker() -> None:
    shown = "Leaves of amber, leaves of red,\nfalling softly on the bed.\n\nHappy birthday, Gran"
    assert answered_request(HISTORY, shown) == 0


def test_a_later_piece_of_a_long_answer_shown_without_markdown_still_matches() -> None:
    piece = "Call add(2, 3) to get 5. " + "x" * 120
    assert answered_request(HISTORY, piece) == 2


def test_a_quote_no_answer_in_memory_holds_is_no_request() -> None:
    assert answered_request(HISTORY, "an answer memory forgot long ago") is None
    assert answered_request(HISTORY, "🙂") is None
    assert answered_request(HISTORY, "OK") is None  # in "bOoK": too short to tell
    assert answered_request([], POEM) is None
