"""Content before context, and whose context: a clear request keeps its own tier seconds after
chatter, and in a group each person's turn reads their own previous turn (real bundled model)."""

from __future__ import annotations

import httpx
import pytest

from router import EmptyMessageError, ModelRouter, RoutingDecision, Secrets
from router import open_router as build_router
from router.signals.classifier import LocalAnswer
from router.signals.continuity import CLEAR_TASK, PreviousTurn, content_first
from router.store.erasure import Scope
from router.text import split_quote
from tests.conftest import make_config
from tests.db_helpers import fetch_dicts
from tests.pg_backend import copy_seeded
from tests.proxy_helpers import CLIENT_KEY, running_proxy, user

START = 1_800_000_000.0


async def open_router(db, embedder) -> ModelRouter:
    return await build_router(
        make_config(db, "live"), Secrets(groq_api_key=None), embedder=embedder
    )


@pytest.mark.parametrize(
    ("chatter", "request_", "tier"),
    [
        (
            "早安大家！今天天氣真好",
            "Pythonでファイルを一行ずつ読むコードを書いてください",
            "strong",
        ),
        ("早上好呀 ☀️", "每个班分数第二高的学生怎么查, mysql 5.7", "strong"),
        (
            "[sticker: cat waving]",
            "ModuleNotFoundError: No module named 'pandas' how do I fix",
            "strong",
        ),
        (
            "lol",
            "A train leaves at 3:40 at 72 mph, another at 4:10 at 90 mph: when does it catch up?",
            "strong",
        ),
    ],
)
async def test_a_clear_request_seconds_after_chatter_keeps_its_own_tier(
    seeded_db, embedder, chatter, request_, tier
):
    router = await open_router(seeded_db, embedder)
    try:
        alone = await router.route(request_)
        await router.route(chatter, conv_key="family", at=START)
        after = await router.route(request_, conv_key="family", at=START + 5)
    finally:
        await router.close()
    assert alone.tier == tier
    assert after.tier == tier, (after.category, after.source, after.confidence)


async def test_a_short_follow_up_still_carries_its_task(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    try:
        await router.route("早安", conv_key="family", at=START)
        await router.route(
            "寫一個 SQL 把重複的訂單刪掉，只留最新的一筆", conv_key="family", at=START + 4
        )
        follow_up = await router.route("why?", conv_key="family", at=START + 20)
    finally:
        await router.close()
    assert (follow_up.tier, follow_up.source) == ("strong", "prior")


async def test_in_a_group_each_person_reads_their_own_previous_turn(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    grandson, grandma = "telegram:101", "telegram:202"
    try:
        await router.route(
            "write a python script that merges the employee tables from 3 databases",
            conv_key="group",
            at=START,
            user_key=grandson,
        )
        await router.route("早安 大家吃飽沒", conv_key="group", at=START + 3, user_key=grandma)
        his = await router.route("why?", conv_key="group", at=START + 9, user_key=grandson)
        hers = await router.route("哈哈 好啊", conv_key="group", at=START + 12, user_key=grandma)
    finally:
        await router.close()
    assert (his.tier, his.category, his.source) == ("strong", "coding", "prior")
    assert hers.tier == "cheap"


async def test_a_reply_to_someone_elses_request_carries_it_only_when_it_asks_for_more(
    seeded_db, embedder
):
    """Dad's reply to mom's SQL question is his own chatter, unless it asks for more of her
    task; the same read through a proxy, from the names in the history."""
    request = "SQLで、先月1回もログインしてないユーザーを抽出したい"
    chatter, more = "週末なのにまだ仕事してるの？", "MySQLならどう書く？"
    history = [
        {"role": "user", "name": "mom", "content": request},
        {"role": "assistant", "content": "(answer)"},
    ]
    router = await open_router(seeded_db, embedder)
    mom, dad = "telegram:1", "telegram:2"
    try:
        asked = await router.route(request, conv_key="group", at=START, user_key=mom)
        his = await router.route(
            chatter, conv_key="group", at=START + 20, user_key=dad, replied_to=request
        )
        then = await router.route(
            more, conv_key="group", at=START + 40, user_key=dad, replied_to=request
        )
        stateless = await router.route(chatter, history=history, name="dad", replied_to=request)
    finally:
        await router.close()
    assert asked.tier == "strong"
    assert (his.tier, his.category) == ("cheap", "casual")
    assert (then.tier, then.category) == ("strong", "coding")
    assert stateless.tier == "cheap"


async def test_a_stateless_history_with_names_reads_the_speakers_own_turns(seeded_db, embedder):
    history = [
        {"role": "user", "name": "kenji", "content": "write a bash loop that renames every .JPG"},
        {"role": "assistant", "content": "(answer)"},
        {"role": "user", "name": "grandma", "content": "おはよう〜今日は寒いね"},
        {"role": "assistant", "content": "(answer)"},
    ]
    router = await open_router(seeded_db, embedder)
    try:
        his = await router.route("why?", history=history, name="kenji")
        hers = await router.route("why?", history=history, name="grandma")
    finally:
        await router.close()
    assert (his.tier, his.category) == ("strong", "coding")
    assert hers.tier != "strong"


def _answer(tier: str, confidence: float) -> LocalAnswer:
    category = {"cheap": "casual", "medium": "analysis", "strong": "coding"}[tier]
    return LocalAnswer(category, tier, confidence, [])


def test_content_first_never_lets_context_lower_a_confident_message():
    assert content_first(_answer("strong", 0.7), _answer("cheap", 0.9), 0.5).tier == "strong"
    # Not confident enough alone: the context decides.
    assert content_first(_answer("strong", 0.4), _answer("cheap", 0.9), 0.5).tier == "cheap"
    # The context may raise a tier (a vague "why?" after a coding task).
    assert content_first(_answer("cheap", 0.9), _answer("strong", 0.8), 0.5).tier == "strong"


@pytest.mark.parametrize(
    ("sent", "words", "quoted"),
    [
        (
            "why?\n\n(replying to Mom:)\n> write a poem\n> about cats",
            "why?",
            "write a poem\nabout cats",
        ),
        ("> write a poem about cats\nshorter pls", "shorter pls", "write a poem about cats"),
        ("no quote in this one", "no quote in this one", None),
        ("> a quote and no words", "> a quote and no words", None),
        ("is a > b in python?", "is a > b in python?", None),
    ],
)
def test_a_reply_sent_as_one_message_splits_into_its_words_and_the_quote(sent, words, quoted):
    assert split_quote(sent) == (words, quoted)


async def test_a_reply_through_the_proxy_routes_on_its_words_with_the_quote_as_context(
    tmp_path, seeded_template, embedder, provider
):
    copy_seeded(seeded_template, tmp_path / "proxy.db")
    coding = "寫一個 SQL 把重複的訂單刪掉，只留最新的一筆"
    reply = f"謝謝！我試試看\n\n(replying to Mom:)\n> {coding}"  # as the bot sends a reply
    async with (
        running_proxy(tmp_path / "proxy.db", embedder, provider.base_url) as proxy,
        httpx.AsyncClient() as http,
    ):
        for text in (coding, reply):
            response = await http.post(
                proxy.url + "/chat/completions",
                json={"model": "auto", "messages": user(text)},
                headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Session-Key": "family"},
            )
            assert response.status_code == 200, response.text
        rows = await proxy.settled_rows("TRUE", 2)
    # The thanks is cheap: the SQL it quotes is its context, not words it says.
    assert [row["tier"] for row in rows] == ["strong", "cheap"]
    assert rows[1]["prompt"] == "謝謝！我試試看"


async def test_a_reply_to_the_bot_s_answer_through_the_proxy_reads_the_request_it_answered(
    tmp_path, seeded_template, embedder, provider
):
    """The bot in auto mode sends its memory and the reply (its answer quoted) to the proxy:
    the quote stands for the request it answered, never for words of the reply."""
    copy_seeded(seeded_template, tmp_path / "proxy.db")
    coding = "Write a Python function that removes duplicates from a list but keeps the order"
    answer = "```python\ndef dedupe(xs):\n    return list(dict.fromkeys(xs))\n```\nOrder is kept."
    shown = "def dedupe(xs):\n    return list(dict.fromkeys(xs))\nOrder is kept."
    history = [
        {"role": "user", "name": "Dad", "content": coding},
        {"role": "assistant", "content": answer},
    ]
    quoted = "\n".join(f"> {line}" for line in shown.split("\n"))
    # The request went through the proxy first, as the bot sends every message.
    sent = [[{"role": "user", "name": "Dad", "content": coding}]]
    for name, words in (("Dad", "thanks!! works now"), ("Mom", "now in JavaScript")):
        reply = f"{words}\n\n(replying to crabbot:)\n{quoted}"
        sent.append([*history, {"role": "user", "name": name, "content": reply}])
    async with (
        running_proxy(tmp_path / "proxy.db", embedder, provider.base_url) as proxy,
        httpx.AsyncClient() as http,
    ):
        for messages in sent:
            response = await http.post(
                proxy.url + "/chat/completions",
                json={"model": "auto", "messages": messages},
                headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Session-Key": "family"},
            )
            assert response.status_code == 200, response.text
        asked, thanks, more = await proxy.settled_rows("TRUE", 3)
    assert asked["tier"] == "strong"
    # Read under the words, the code answer made the thanks a coding message (strong).
    assert (thanks["prompt"], thanks["tier"]) == ("thanks!! works now", "cheap")
    # Mom asked nothing before: the request the answer answered is what she goes on with.
    assert (more["prompt"], more["category"], more["tier"]) == (
        "now in JavaScript",
        "coding",
        "strong",
    )


SQL_REQUEST = "SQLで、先月1回もログインしてないユーザーを抽出したい"
SQL_ANSWER = "SELECT * FROM users WHERE last_login < date_trunc('month', now()); See you at dinner!"


async def test_a_family_message_an_answer_also_says_is_read_as_the_family_s(seeded_db, embedder):
    """Dad's "See you at dinner!" is his, even when an earlier answer ended with the same words:
    Mom's reply to it is chatter, whether the bot says whose it is or the history does."""
    history = [
        {"role": "user", "name": "mom", "content": SQL_REQUEST},
        {"role": "assistant", "content": SQL_ANSWER},
        {"role": "user", "name": "dad", "content": "See you at dinner!"},
        {"role": "assistant", "content": "(answer)"},
    ]
    reply = "ok, what should I cook?"
    router = await open_router(seeded_db, embedder)
    try:
        told = await router.route(
            reply, history, name="mom", replied_to="See you at dinner!", replied_answer=False
        )
        read = await router.route(reply, history, name="mom", replied_to="See you at dinner!")
    finally:
        await router.close()
    assert (told.tier, read.tier) == ("cheap", "cheap"), (told.category, read.category)


@pytest.mark.parametrize(
    "remembered", [SQL_REQUEST, f"[voice] {SQL_REQUEST}", f'{SQL_REQUEST} (replying to dad: "hm")']
)
async def test_thanks_on_an_answer_stays_cheap_however_memory_kept_the_request(
    seeded_db, embedder, remembered
):
    """The request an answer answered, as memory keeps it (a voice mark, a quote's reminder),
    is the context of a reply to that answer, in the process that routed it and after a
    restart: never words under the reply's."""
    history = [
        {"role": "user", "name": "mom", "content": remembered},
        {"role": "assistant", "content": SQL_ANSWER},
    ]
    thanks = "thanks!! works now"
    router = await open_router(seeded_db, embedder)
    try:
        asked = await router.route(SQL_REQUEST, conv_key="c", at=START, user_key="mom")
        same = await router.route(
            thanks,
            history,
            "c",
            START + 30,
            "mom",
            "mom",
            replied_to=SQL_ANSWER,
            replied_answer=True,
        )
    finally:
        await router.close()
    embedder.clear_cache()  # a new process: nothing embedded yet
    restarted = await open_router(seeded_db, embedder)
    try:
        later = await restarted.route(
            thanks,
            history,
            "c",
            START + 60,
            "mom",
            "mom",
            replied_to=SQL_ANSWER,
            replied_answer=True,
        )
    finally:
        await restarted.close()
    assert asked.tier == "strong"
    for decision in (same, later):
        assert (decision.text, decision.tier) == (thanks, "cheap"), decision.category


PRINT_REQUEST = "write a python script that prints every line of a file"


@pytest.mark.parametrize(
    ("reaction", "then", "tier"),
    [
        ("lol thanks", "wait, why does it print a blank line after each one?", "strong"),
        ("thanks!", "hmm now it says permission denied", "strong"),
        ("lol thanks", "haha my son will love it", "cheap"),
    ],
)
async def test_a_turn_after_a_reaction_can_go_back_to_the_task_behind_it(
    seeded_db, embedder, reaction, then, tier
):
    """A request, the same person's reaction, then a turn about the request: it goes on with
    the request's task, not the reaction's; in the process that routed them, after a restart
    (read back from the log) and through a proxy (the history alone). More chatter stays
    chatter."""
    history = [
        {"role": "user", "content": PRINT_REQUEST},
        {"role": "assistant", "content": "(answer)"},
        {"role": "user", "content": reaction},
        {"role": "assistant", "content": "(answer)"},
    ]
    router = await open_router(seeded_db, embedder)
    try:
        alone = await router.route(then)
        for conv in ("here", "restarted"):
            await router.route(PRINT_REQUEST, conv_key=conv, at=START, user_key="kid")
            await router.route(reaction, conv_key=conv, at=START + 30, user_key="kid")
        same = await router.route(then, conv_key="here", at=START + 50, user_key="kid")
        stateless = await router.route(then, history=history)
    finally:
        await router.close()
    embedder.clear_cache()  # a new process: nothing embedded, nothing kept
    restarted = await open_router(seeded_db, embedder)
    try:
        if restarted.shared is not None:  # on PostgreSQL the log is read once, at start
            await restarted.shared.until(
                lambda: restarted.context.held("restarted", "kid") is not None, 10.0
            )
        later = await restarted.route(then, conv_key="restarted", at=START + 50, user_key="kid")
    finally:
        await restarted.close()
    if tier == "strong":
        assert alone.tier != "strong"  # the words alone do not say it
    for decision in (same, later, stateless):
        assert decision.tier == tier, (decision.category, decision.confidence)


async def test_a_long_request_is_not_embedded_again_for_the_turns_after_it(seeded_db, embedder):
    """The context keeps 300 characters of a turn; the turns after a longer one read its
    vector, not the cut words embedded a second time: one embedding a message."""
    pasted = "my script crashes, here is all of it:\n" + "\n".join(
        f"row_{i} = load_row({i})  # keep row {i} of the sheet" for i in range(12)
    )
    router = await open_router(seeded_db, embedder)
    embedder.clear_cache()  # what earlier tests embedded is not this conversation's
    embedded = []
    try:
        for offset, text in enumerate((pasted, "lol thanks", "why?")):
            before = embedder.cache_misses
            decision = await router.route(text, conv_key="c", at=START + 20 * offset)
            embedded.append((embedder.cache_misses - before, decision.tier))
    finally:
        await router.close()
    assert len(pasted) > 300
    assert embedded == [(1, "strong"), (1, "cheap"), (1, "strong")]


async def test_a_reply_to_the_bot_s_answer_to_a_reaction_can_still_go_back_to_the_task(
    seeded_db, embedder
):
    """A request, "lol thanks", the bot's "you're welcome", then a reply to that answer about
    the request: it goes back to the request's task through the reaction."""
    welcome = "You're welcome! Have fun with it."
    then = "wait, why does it print a blank line after each one?"
    history = [
        {"role": "user", "name": "kid", "content": PRINT_REQUEST},
        {"role": "assistant", "content": "(the script)"},
        {"role": "user", "name": "kid", "content": "lol thanks"},
        {"role": "assistant", "content": welcome},
    ]
    router = await open_router(seeded_db, embedder)
    try:
        await router.route(PRINT_REQUEST, conv_key="c", at=START, user_key="kid", name="kid")
        await router.route("lol thanks", conv_key="c", at=START + 30, user_key="kid", name="kid")
        reply = await router.route(
            then,
            history,
            "c",
            START + 50,
            "kid",
            "kid",
            replied_to=welcome,
            replied_answer=True,
        )
    finally:
        await router.close()
    assert reply.tier == "strong", (reply.category, reply.confidence)


async def test_a_reset_between_a_request_and_its_reaction_leaves_nothing_behind(
    seeded_db, embedder
):
    """A turn heard from another process after a /reset does not bring back the task from
    before it."""
    router = await open_router(seeded_db, embedder)
    try:
        request = PreviousTurn("coding", START, PRINT_REQUEST)
        reaction = PreviousTurn("casual", START + 30, "lol thanks", task_behind=request)
        router.context.heard_reset("c", START + 10)
        assert router.context.heard("c", reaction, "kid")
        held = router.context.held("c", "kid")
        after = await router.route("why?", conv_key="c", at=START + 50, user_key="kid")
    finally:
        await router.close()
    assert held is not None and held.task_behind is None
    assert after.tier == "cheap"


OPINION = "I think the bridge downtown will never get fixed, the city has no money"


@pytest.mark.parametrize(
    ("then", "sure", "unsure"),
    [
        ("yeah and the potholes on our street are even worse", "medium", "cheap"),
        ("what if we wait two years", "medium", "medium"),
    ],
)
async def test_a_turn_after_one_routing_was_unsure_of_is_held_to_it_less(
    seeded_db, embedder, then, sure, unsure
):
    """Chatter misread as a task (an opinion read as analysis at 0.4) does not hold the
    speaker's next chatter to it; a follow-up that asks for more still goes on with it."""
    router = await open_router(seeded_db, embedder)
    try:
        alone = await router.route(then)
        tiers = []
        for confidence in (1.0, 0.4):
            conv = f"family-{confidence}"
            opinion = PreviousTurn("analysis", START, OPINION, confidence=confidence)
            router.context.remember(conv, opinion, "dad")
            after = await router.route(then, conv_key=conv, at=START + 30, user_key="dad")
            tiers.append(after.tier)
    finally:
        await router.close()
    assert alone.tier == "cheap"
    assert tiers == [sure, unsure]


async def test_how_sure_routing_was_of_a_turn_is_kept_and_read_back_after_a_restart(
    seeded_db, embedder
):
    """The request's confidence stays with it in memory and in the log, and with the task
    behind the speaker's reaction to it."""
    router = await open_router(seeded_db, embedder)
    try:
        request = await router.route(PRINT_REQUEST, conv_key="c", at=START, user_key="kid")
        held = router.context.held("c", "kid")
        reaction = await router.route("lol thanks", conv_key="c", at=START + 30, user_key="kid")
    finally:
        await router.close()
    restarted = await open_router(seeded_db, embedder)
    try:
        if restarted.shared is not None:  # on PostgreSQL the log is read once, at start
            await restarted.shared.until(
                lambda: restarted.context.held("c", "kid") is not None, 10.0
            )
        read_back = await restarted.context.previous_turn("c", "kid")
    finally:
        await restarted.close()
    assert request.confidence is not None and request.confidence < 1.0
    assert held is not None and held.confidence == request.confidence
    assert read_back is not None and read_back.task_behind is not None
    assert read_back.confidence == pytest.approx(reaction.confidence, abs=1e-6)
    assert read_back.task_behind.confidence == pytest.approx(request.confidence, abs=1e-6)


ROADWORKS_CHATTER = [
    "I wonder why they never finish the roadworks before winter",
    "I guess the contractors get paid either way",
    "Maybe the mayor's cousin owns the company, that would explain a lot",
]


async def test_chatter_misread_as_a_task_does_not_hold_a_whole_chain_of_chatter_to_it(
    seeded_db, embedder
):
    """Dad's opinion read as analysis at 0.85 (not clearly a task) carries his next musings
    only as far as each was carried itself: routing is less sure of the task turn by turn, so
    live mode soon asks the LLM (which reads chatter as chatter) instead of holding the chain
    to the misread's 0.85."""
    router = await open_router(seeded_db, embedder)
    try:
        opinion = PreviousTurn("analysis", START, OPINION, confidence=0.85)
        router.context.remember("family", opinion, "dad")
        decisions, held = [], []
        for n, text in enumerate(ROADWORKS_CHATTER, start=1):
            decision = await router.route(
                text, conv_key="family", at=START + 20 * n, user_key="dad"
            )
            decisions.append(decision)
            kept = router.context.held("family", "dad")
            held.append(kept.confidence if kept is not None else None)
        alone = await router.route(ROADWORKS_CHATTER[-1])
        bar = router.config.local.min_confidence
    finally:
        await router.close()
    assert alone.tier == "cheap"
    # The premise: every musing goes on with the misread task, none of them as sure of it as
    # a clearly named task (content first's bar) would lend.
    assert [d.category for d in decisions] == ["analysis"] * len(ROADWORKS_CHATTER)
    sureness = [d.confidence or 0.0 for d in decisions]
    assert all(sure < CLEAR_TASK for sure in sureness), sureness
    assert held == pytest.approx(sureness), "no turn is lent the misread task's sureness"
    assert sureness == sorted(sureness, reverse=True) and sureness[-1] < bar, sureness


async def test_a_thread_of_follow_ups_does_not_wear_its_task_away(seeded_db, embedder):
    """A follow-up carried at a low confidence ("now with comments": strong, but unsure) leaves
    its task as sure as the request that named it, so the next follow-ups are still decided
    without the LLM in live mode."""
    follow_ups = ["make it shorter", "now with comments", "why?", "and skip the png ones"]
    router = await open_router(seeded_db, embedder)
    try:
        request = await router.route(PHOTO_REQUEST, conv_key="c", at=START, user_key="kid")
        decisions = []
        for n, text in enumerate(follow_ups, start=1):
            decision = await router.route(text, conv_key="c", at=START + 20 * n, user_key="kid")
            decisions.append(decision)
        held = router.context.held("c", "kid")
        bar = router.config.context.min_confidence
    finally:
        await router.close()
    assert request.tier == "strong" and request.confidence is not None
    assert [d.tier for d in decisions] == ["strong"] * len(follow_ups)
    assert held is not None and held.confidence >= request.confidence
    assert all((d.confidence or 0.0) >= bar for d in decisions[2:]), [
        d.confidence for d in decisions
    ]


PHOTO_REQUEST = "write a python script that renames all photos in a folder by date taken"


async def kid_asks_why_then_chats(router: ModelRouter, kid: str) -> None:
    """A coding request, "why?" (carried as coding), then chatter: "why?" is no longer the
    kid's last turn."""
    for text, after in (
        ("write a python function that removes duplicate rows from a csv file", 0),
        ("why?", 20),
        ("ok brb dinner", 60),
    ):
        decision = await router.route(text, conv_key="group", at=START + after, user_key=kid)
        router.finish(decision, "routed")


async def kid_replies_to_his_why(router: ModelRouter, kid: str) -> RoutingDecision:
    """After dinner, the kid replies to his own "why?"."""
    return await router.route(
        "still confused about this part",
        conv_key="group",
        at=START + 600,
        user_key=kid,
        replied_to="why?",
        replied_author=kid,
    )


async def test_a_reply_to_an_older_message_reads_it_as_it_was_routed(seeded_db, embedder):
    """A reply can quote any recent message, not only its sender's last: the kid's reply to his
    own "why?" goes on with the coding task that "why?" was routed to (read alone, "why?" is
    chatter)."""
    router = await open_router(seeded_db, embedder)
    try:
        await kid_asks_why_then_chats(router, "telegram:7")
        reply = await kid_replies_to_his_why(router, "telegram:7")
    finally:
        await router.close()
    assert (reply.tier, reply.category, reply.source) == ("strong", "coding", "prior")


async def test_an_erased_person_s_older_turns_are_no_reply_s_context(seeded_db, embedder):
    router = await open_router(seeded_db, embedder)
    try:
        await kid_asks_why_then_chats(router, "telegram:7")
        await router.erase(Scope(user_key="telegram:7"))
        reply = await kid_replies_to_his_why(router, "telegram:7")
    finally:
        await router.close()
    assert (reply.tier, reply.source) != ("strong", "prior")


async def test_a_reply_to_a_message_never_routed_logs_only_its_sender_s_words(seeded_db, embedder):
    """Routing reads the quote under the reply's words, but the routing log keeps only the
    grandson's: grandma's words stay where her erasure reaches them."""
    quote = "下禮拜六中午大家回來吃飯，我煮佛跳牆"
    router = await open_router(seeded_db, embedder)
    try:
        reply = await router.route(
            "要帶什麼嗎？",
            conv_key="group",
            at=START,
            user_key="telegram:1",
            replied_to=quote,
            replied_author="telegram:2",
        )
        router.finish(reply, "routed")
        await router.log.flush(5.0)
        rows = await router.conn.fetch_all(
            "SELECT prompt FROM routing_log WHERE conv_key = ?", ("group",)
        )
    finally:
        await router.close()
    assert [row["prompt"] for row in rows] == ["要帶什麼嗎？"]


DAD_SAYS = "my python script crashes with KeyError: 'date' when it reads the orders csv"
MOM_ASKS = "帮他看看这个怎么改"
MOM, DAD = "telegram:1", "telegram:2"


async def mom_replies_to_dad(router: ModelRouter) -> RoutingDecision:
    """Mom replies to Dad's message, which was never sent to the bot: routing reads her words
    with his under them."""
    decision = await router.route(
        MOM_ASKS,
        conv_key="group",
        at=START,
        user_key=MOM,
        name="mom",
        replied_to=DAD_SAYS,
        replied_author="dad",
    )
    router.finish(decision, "routed")
    return decision


def kept_texts(router: ModelRouter, conv_key: str) -> list[str]:
    """Every turn the router keeps of the conversation: the speakers' last and the recent ones."""
    return [turn.text for _, turn in router.context._quotable(conv_key)]


async def test_erasing_a_quoted_person_takes_their_words_out_of_the_replier_s_context(
    seeded_db, embedder
):
    """Dad's erasure reaches the routing context kept for Mom's reply that quoted him: her words
    stay, with the task they were routed to, and his go; an erasure in another conversation
    leaves this one's quote alone."""
    router = await open_router(seeded_db, embedder)
    try:
        reply = await mom_replies_to_dad(router)
        held = router.context.held("group", MOM)
        assert held is not None and DAD_SAYS in held.text  # routing read both
        await router.erase(Scope(conv_key="elsewhere", user_key=DAD))
        assert any(DAD_SAYS in text for text in kept_texts(router, "group"))
        await router.erase(Scope(user_key=DAD))
        held = router.context.held("group", MOM)
        kept = kept_texts(router, "group")
    finally:
        await router.close()
    assert held is not None
    assert (held.text, held.category, held.at) == (MOM_ASKS, reply.category, START)
    assert held.vector is None  # the vector was of her words with his
    assert kept and all(DAD_SAYS not in text for text in kept), kept


async def test_erasing_a_quoted_person_reaches_the_task_behind_the_replier_s_thanks(
    seeded_db, embedder
):
    """Mom's "thanks!" after her reply keeps the reply's task open behind it: Dad's erasure
    cuts that task back to Mom's words too, and the task stays."""
    router = await open_router(seeded_db, embedder)
    try:
        reply = await mom_replies_to_dad(router)
        thanks = await router.route("thanks!", conv_key="group", at=START + 30, user_key=MOM)
        await router.erase(Scope(conv_key="group", user_key=DAD))
        held = router.context.held("group", MOM)
    finally:
        await router.close()
    assert (reply.category, thanks.category) == ("coding", "casual")
    assert held is not None and held.text == "thanks!"
    behind = held.task_behind
    assert behind is not None and (behind.text, behind.category) == (MOM_ASKS, "coding")
    assert behind.vector is None


async def test_a_quoted_reply_heard_without_its_words_is_no_context_after_an_erasure(
    seeded_db, embedder
):
    """A reply heard from a process that keeps no prompts carries only its vector (of the words
    with the quote): an erasure takes that vector, and with no words left the turn is let go,
    rather than kept as an empty context for Mom's next question."""
    router = await open_router(seeded_db, embedder)
    vector = (await router.embedder.aembed([MOM_ASKS]))[0]
    heard = PreviousTurn("coding", START, "", vector=vector, own_words="")
    try:
        router.context.heard("group", heard, MOM)
        assert router.context.held("group", MOM) is not None
        await router.erase(Scope(user_key=DAD))
        held = router.context.held("group", MOM)
        kept = kept_texts(router, "group")
    finally:
        await router.close()
    assert held is None
    assert kept == []


async def test_a_bare_reply_is_routed_on_the_quote_and_keeps_none_of_it_past_its_erasure(
    seeded_db, embedder
):
    """Mom mentions the bot with no words on Dad's message: his message is the request (coding),
    her log row holds none of his words, and his erasure lets go of the context turn that held
    them (no words of hers are left in it)."""
    router = await open_router(seeded_db, embedder)
    try:
        with pytest.raises(EmptyMessageError):
            await router.route(" ", conv_key="group", user_key=MOM)
        decision = await router.route(
            "", conv_key="group", at=START, user_key=MOM, replied_to=DAD_SAYS, replied_author="dad"
        )
        router.finish(decision, "routed")
        before = kept_texts(router, "group")
        await router.erase(Scope(user_key=DAD))
        held = router.context.held("group", MOM)
        after = kept_texts(router, "group")
    finally:
        await router.close()
    rows = await fetch_dicts(seeded_db, "SELECT prompt, category FROM routing_log")
    assert (decision.category, decision.tier) == ("coding", "strong")
    assert rows == [{"prompt": "", "category": "coding"}]
    assert before and set(before) == {DAD_SAYS}
    assert held is None and after == []
