"""`crabbot route` as a user runs it: a subprocess on a seeded database, no network, no keys."""

from __future__ import annotations

import json
import os
import subprocess

from tests.cli_helpers import run_crabbot

ENV = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}


def crabbot(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_crabbot(*args, env=ENV, stdin=stdin)


def test_route_prints_the_decision(seeded_db):
    result = crabbot("route", "--db", str(seeded_db), "--mode", "live", "幫我寫代碼")
    assert result.returncode == 0, result.stderr
    for label in ("category", "tier", "model", "confidence", "source", "latency"):
        assert label in result.stdout
    assert "strong" in result.stdout and "coding" in result.stdout


def test_route_json_in_shadow_without_a_key_lets_the_local_signal_decide_and_says_so(seeded_db):
    """A key never set is a configuration, not an outage: no fallback, no error."""
    result = crabbot("route", "--db", str(seeded_db), "--json", "早安 今天好冷")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["mode"] == "shadow" and decision["source"] == "knn"
    assert decision["tier"] == "cheap" and "error" not in decision
    assert decision["knn"]["category"] == decision["category"]
    assert result.stderr.count("GROQ_API_KEY is not set") == 1


def test_empty_text_is_an_error_with_status_2(seeded_db):
    result = crabbot("route", "--db", str(seeded_db), "   ")
    assert result.returncode == 2
    assert "empty" in result.stderr and result.stdout == ""


def test_stdin_stream_keeps_order_and_survives_bad_lines(seeded_db):
    script = "write a python script that merges 3 csv files"
    lines = [
        json.dumps({"text": script, "conv_key": "a", "at": 100}),
        "this is not json",
        json.dumps({"text": "why?", "conv_key": "a", "at": 112}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "why?", "conv_key": "b", "at": 112}),
        json.dumps({"text": script, "conv_key": "c", "at": 100}),
        json.dumps({"text": "why?", "conv_key": "c", "at": 100 + 12 * 3600}),
    ]
    result = crabbot("route", "--db", str(seeded_db), "--mode", "live", stdin="\n".join(lines))
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 7
    assert out[1] == {"line": 2, "error": out[1]["error"]} and "JSON" in out[1]["error"]
    assert out[3]["line"] == 4 and "empty" in out[3]["error"]
    assert "line 2:" in result.stderr and "line 4:" in result.stderr
    assert out[0]["category"] == out[2]["category"] == "coding"
    assert out[4]["category"] != "coding", "no context: the follow-up alone is not coding"
    assert out[6]["category"] == out[4]["category"], "half a day later the context is gone"
    for decision in (out[0], out[2], out[4], out[5], out[6]):
        assert {"category", "tier", "model", "confidence", "source", "latency_ms"} <= set(decision)
    assert result.returncode == 1


def test_mode_flag_is_for_one_run_only(seeded_db):
    off = crabbot("route", "--db", str(seeded_db), "--mode", "off", "--json", "hello")
    assert json.loads(off.stdout)["source"] == "fixed"
    stored = crabbot("route", "--db", str(seeded_db), "--json", "hello")
    assert json.loads(stored.stdout)["mode"] == "shadow"


def test_bad_config_names_the_key(tmp_path, seeded_db):
    config = tmp_path / "bad.toml"
    config.write_text('[local]\nmin_confidence = 3\n[routing]\nmode = "live"\n')
    result = crabbot("route", "--config", str(config), "--db", str(seeded_db), "hi")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "local.min_confidence" in result.stderr
    config.write_text("[local]\nneighbours = 3\n")
    result = crabbot("route", "--config", str(config), "hi")
    assert "local.neighbours: unknown key" in result.stderr


def test_at_must_be_plausible_unix_seconds(seeded_db):
    """Issue 24, 12: milliseconds and Inf are refused with an error naming them."""
    lines = [
        json.dumps({"text": "hi there", "at": 1796419000000}),
        '{"text": "hi there", "at": 1e400}',
        json.dumps({"text": "hi there", "at": 1796419000}),
    ]
    result = crabbot("route", "--db", str(seeded_db), "--mode", "live", stdin="\n".join(lines))
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert "1796419000000" in out[0]["error"] and "milliseconds" in out[0]["error"]
    assert "inf" in out[1]["error"]
    assert out[2]["tier"] == "cheap"
    assert result.returncode == 1


def test_conv_flag_holds_the_stdin_lines_that_name_no_conversation(seeded_db):
    """`--conv` is the stream's conversation: a follow-up keeps its task without a "conv_key" on
    every line; a line's own key still wins."""
    lines = [
        json.dumps({"text": "write a python script that merges 3 csv files", "at": 100}),
        json.dumps({"text": "why?", "at": 112}),
        json.dumps({"text": "why?", "conv_key": "elsewhere", "at": 112}),
    ]
    stdin = "\n".join(lines)
    live = ("route", "--db", str(seeded_db), "--mode", "live")
    result = crabbot(*live, "--conv", "fam", stdin=stdin)
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["category"] for d in out[:2]] == ["coding", "coding"]
    assert out[2]["category"] != "coding", "another conversation: no context"
    without = crabbot(*live, stdin=stdin)
    assert json.loads(without.stdout.splitlines()[1])["category"] != "coding"


def test_a_replayed_group_names_who_speaks_and_each_turn_follows_its_own_speaker(seeded_db):
    """Grandma's poem request between Kenji's coding request and his "why?" does not become his
    context when the lines say who speaks; without "user" it does, as it would in a bot that
    could not tell them apart."""
    turns = [
        ("kenji", "write a python script that merges 3 csv files", 100),
        ("grandma", "寫一首生日詩給阿公 要押韻", 105),
        ("kenji", "why?", 112),
    ]
    named = [json.dumps({"text": t, "user": u, "at": at}) for u, t, at in turns]
    live = ("route", "--db", str(seeded_db), "--mode", "live", "--conv", "family")
    result = crabbot(*live, stdin="\n".join(named))
    assert result.returncode == 0, result.stderr
    tiers = [json.loads(line)["tier"] for line in result.stdout.splitlines()]
    assert tiers == ["strong", "medium", "strong"]
    unnamed = [json.dumps({"text": t, "at": at}) for _, t, at in turns]
    mixed = crabbot(*live, stdin="\n".join(unnamed))
    assert [json.loads(line)["tier"] for line in mixed.stdout.splitlines()][2] == "medium"


def test_a_speaker_or_reply_that_is_not_text_is_an_error_for_that_line_alone(seeded_db):
    lines = [
        json.dumps({"text": "hello", "user": 42}),
        json.dumps({"text": "hello", "reply_to": ["x"]}),
        json.dumps({"text": "hello", "user": "x" * 300}),
        json.dumps({"text": "hello", "user": "mom", "reply_to": "早安", "reply_user": "dad"}),
    ]
    result = crabbot("route", "--db", str(seeded_db), stdin="\n".join(lines))
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o.get("error") for o in out[:3]] == [
        '"user" must be a string',
        '"reply_to" must be a string',
        '"user" is over 256 characters',
    ]
    assert out[3]["tier"] == "cheap"
    assert result.returncode == 1
