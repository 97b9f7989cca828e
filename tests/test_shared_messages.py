"""What processes on one PostgreSQL tell each other fits NOTIFY's payload (under 8000 bytes),
keeps no prompt text where prompts are not kept, and comes back as it was sent."""

from __future__ import annotations

import json

import numpy as np

from router.cluster.messages import (
    MAX_PAYLOAD,
    decode_turn,
    decode_unpool,
    encode_turn,
    encode_unpool,
)
from router.signals.continuity import PreviousTurn

DIM = 384


def unit_vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_a_turn_with_300_chinese_characters_and_its_vector_fits_and_comes_back():
    text = "寫一個把重複訂單刪掉的查詢" * 30  # 390 characters, 3 bytes each in UTF-8
    vector = unit_vector(1)
    turn = PreviousTurn("coding", 1_800_000_000.5, text)
    payload = encode_turn("a1b2c3d4", "proxy:app:family", "mom", turn, vector, keep_text=True)
    assert payload is not None and len(payload.encode()) <= MAX_PAYLOAD
    heard = decode_turn(payload, DIM)
    assert (heard.sender, heard.conv_key, heard.user_key) == ("a1b2c3d4", "proxy:app:family", "mom")
    assert (heard.turn.category, heard.turn.at, heard.turn.text) == ("coding", turn.at, text[:300])
    assert heard.turn.vector is not None
    assert float(heard.turn.vector @ vector) > 0.999  # float16 on the wire


def test_a_turn_sends_no_text_where_prompts_are_not_kept():
    turn = PreviousTurn("coding", 1.0, "my private question")
    payload = encode_turn("a", "c", None, turn, unit_vector(2), keep_text=False)
    assert payload is not None and "private" not in payload
    assert decode_turn(payload, DIM).turn.text == ""


def test_a_turn_too_big_for_a_notification_is_shortened_or_not_sent():
    turn = PreviousTurn("coding", 1.0, "x" * 300)
    long_key = encode_turn("a", "k" * 6_700, None, turn, unit_vector(3), keep_text=True)
    assert long_key is not None and len(long_key.encode()) <= MAX_PAYLOAD
    assert decode_turn(long_key, DIM).turn.text in ("x" * 120, "x" * 40, "")  # less text
    assert encode_turn("a", "k" * 9_000, None, turn, None, keep_text=True) is None


def test_an_erasure_of_many_pool_entries_goes_out_in_payloads_that_fit():
    hashes = {f"{n:064x}" for n in range(250)}
    payloads = encode_unpool("a", hashes)
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    assert set().union(*(decode_unpool(p)[1] for p in payloads)) == hashes


def test_a_reaction_goes_out_with_the_task_behind_it_and_that_task_s_vector():
    request, vector = PreviousTurn("coding", 10.0, "write a python script"), unit_vector(4)
    reaction = PreviousTurn("casual", 40.0, "lol thanks", task_behind=request)
    payload = encode_turn("a", "c", "kid", reaction, unit_vector(5), True, vector)
    assert payload is not None
    heard = decode_turn(payload, DIM).turn
    behind = heard.task_behind
    assert (heard.category, heard.text) == ("casual", "lol thanks")
    assert behind is not None
    assert (behind.category, behind.at, behind.text) == ("coding", 10.0, request.text)
    assert behind.vector is not None and float(behind.vector @ vector) > 0.999
    no_text = decode_turn(encode_turn("a", "c", "kid", reaction, None, False) or "", DIM).turn
    assert no_text.task_behind is not None and no_text.task_behind.text == ""


def test_a_reaction_too_big_with_its_task_behind_goes_out_without_it():
    wide = 1536  # a wider embedder's vectors: two of them no longer fit a notification
    rng = np.random.default_rng(6)
    vector, behind_vector = rng.standard_normal((2, wide)).astype(np.float32)
    request = PreviousTurn("coding", 10.0, "write a python script")
    reaction = PreviousTurn("casual", 40.0, "lol thanks", task_behind=request)
    payload = encode_turn("a", "c", "kid", reaction, vector, True, behind_vector)
    assert payload is not None and len(payload.encode()) <= MAX_PAYLOAD
    heard = decode_turn(payload, wide).turn
    assert (heard.category, heard.text, heard.task_behind) == ("casual", "lol thanks", None)
    assert heard.vector is not None


def test_how_sure_routing_was_of_a_turn_and_its_task_behind_comes_back():
    """Another process carries a turn's task only as far as the routing process was sure of
    it; a notification from a process that did not send it reads as sure."""
    request = PreviousTurn("analysis", 10.0, "is a fish a pet", confidence=0.43)
    reaction = PreviousTurn("casual", 40.0, "haha", task_behind=request, confidence=0.91)
    payload = encode_turn("a", "c", "kid", reaction, unit_vector(7), True, unit_vector(8))
    assert payload is not None
    heard = decode_turn(payload, DIM).turn
    assert heard.confidence == 0.91
    assert heard.task_behind is not None and heard.task_behind.confidence == 0.43
    body = json.loads(payload)
    del body["p"], body["b"]["p"]
    older = decode_turn(json.dumps(body), DIM).turn
    assert older.confidence == 1.0 and older.task_behind is not None
    assert older.task_behind.confidence == 1.0


def test_a_reply_read_with_a_quote_goes_out_with_its_sender_s_own_words_apart():
    """The other processes can cut the turn back to its sender's words when the quoted person is
    erased; a process before "w" sent a turn whose text is all its sender's."""
    reply = PreviousTurn("coding", 10.0, "fix this?\n\nKeyError: 'date'", own_words="fix this?")
    thanks = PreviousTurn("casual", 40.0, "thanks!", task_behind=reply)
    payload = encode_turn("a", "c", "mom", thanks, unit_vector(9), True, unit_vector(10))
    assert payload is not None
    behind = decode_turn(payload, DIM).turn.task_behind
    assert behind is not None
    assert (behind.text, behind.own_words) == (reply.text, "fix this?")
    assert decode_turn(payload, DIM).turn.own_words is None
    no_text = decode_turn(encode_turn("a", "c", "mom", reply, None, False) or "", DIM).turn
    assert (no_text.text, no_text.own_words) == ("", "")  # still marked as read with a quote
    body = json.loads(encode_turn("a", "c", "mom", reply, None, True) or "")
    del body["w"]
    assert decode_turn(json.dumps(body), DIM).turn.own_words is None
