"""The proxy's findings of issue 24's fault matrix (scripts/fault_matrix.py), each run against a
`crabbot proxy` process: returns what happened now, what was lost, and a verdict."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

from scripts.fault_provider import FaultProvider
from scripts.fault_proxy import KEYS, PROVIDER_KEY, Proxy, open_files, query, rss_mb
from scripts.scripted_groq import ScriptedGroq

Result = tuple[str, str, str]
CODING = "Write a Python function that merges two sorted lists without using sort()"
# Ten unlike chit-chat messages (near-duplicates are never added to the pool).
CHAT = (
    "the cat sat on my laptop all morning",
    "grandma's tomatoes won a prize at the fair",
    "our train was two hours late, we played cards",
    "Tom lost his first tooth at breakfast",
    "it snowed in April, the kids are thrilled",
    "we watched the rain all afternoon with cocoa",
    "dad finally fixed the squeaky gate",
    "the new puppy chewed my favourite slippers",
    "Lily sang in the school concert tonight",
    "the bakery on the corner closed for good",
)


def chat(text: str, model: str = "auto") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def session_keys(seed: Path, provider: FaultProvider) -> Result:
    """3: mallory sets the family's session key; the family's "why?" next, against the same
    turns in an untouched conversation."""
    async with Proxy(seed, provider.base_url, keys=KEYS) as proxy:
        async with proxy.client("mallory") as mallory, proxy.client("family") as family:
            steer = {"X-Session-Key": "telegram:-1001"}
            await mallory.post("/v1/chat/completions", json=chat(CODING), headers=steer)
            answers = {}
            # The control: the family's own coding question does carry to its "why?".
            own = {"X-Session-Key": "own"}
            await family.post("/v1/chat/completions", json=chat(CODING), headers=own)
            for session in ("own", "telegram:-1001", "untouched"):
                headers = {"X-Session-Key": session}
                answer = await family.post(
                    "/v1/chat/completions", json=chat("why?"), headers=headers
                )
                answers[session] = (
                    answer.headers.get("x-crabbot-tier"),
                    answer.headers.get("x-crabbot-source"),
                )
        await proxy.stop()
        keys = [
            k
            for (k,) in query(
                proxy.db, "SELECT DISTINCT conv_key FROM routing_log WHERE conv_key IS NOT NULL"
            )
        ]
    same = answers["telegram:-1001"] == answers["untouched"] != answers["own"]
    return (
        f"family's 'why?' after mallory's coding request on its session key: (tier, source)"
        f" {answers['telegram:-1001']}, in an untouched conversation {answers['untouched']},"
        f" after its own coding question {answers['own']}; conversations: {sorted(keys)}",
        "nothing",
        "fixed" if same else "open",
    )


async def locked_database(seed: Path, provider: FaultProvider, groq: ScriptedGroq) -> Result:
    """4: another program holds the write lock for 8 s while 12 new `auto` requests (shadow
    mode, the categorizer labelling, so pool additions queue) are answered."""
    config = '[routing]\nmode = "shadow"\n'
    async with Proxy(seed, provider.base_url, config, keys=KEYS, groq_url=groq.base_url) as proxy:
        async with proxy.client() as http:
            await http.post("/v1/chat/completions", json=chat("warm up, good morning"))
            blocker = sqlite3.connect(proxy.db, timeout=0, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            texts = [
                f"lock test {n}: what should we cook for the picnic on day {n}?" for n in range(12)
            ]
            latencies, statuses = [], []
            started = time.monotonic()
            for text in texts:
                t0 = time.monotonic()
                answer = await http.post("/v1/chat/completions", json=chat(text))
                latencies.append(time.monotonic() - t0)
                statuses.append(answer.status_code)
            await asyncio.sleep(max(0.0, 8.0 - (time.monotonic() - started)))
            blocker.execute("COMMIT")
            blocker.close()
        await proxy.stop()
    rows = query(proxy.db, "SELECT COUNT(*) FROM routing_log WHERE prompt LIKE 'lock test %'")[0][0]
    pool = count(proxy.db, "pool", "text", "lock test %")
    held = count(proxy.db, "pool_quarantine", "text", "lock test %")
    slowest = max(latencies)
    good = statuses.count(200) == 12 and rows == 12 and slowest < 2.0
    return (
        f"12 auto requests under an 8 s lock: {statuses.count(200)} x 200, slowest"
        f" {slowest:.2f} s (median {sorted(latencies)[6]:.2f} s); after release {rows}/12 rows,"
        f" {pool} labels learned + {held} in quarantine (one key's burst)",
        f"{12 - rows} rows" if rows < 12 else "nothing",
        "fixed" if good else "open",
    )


async def raw_status(port: int, head: bytes, body: bytes = b"") -> str:
    """The status line (or what happened) for a raw request."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 20)
        writer.close()
        return line.decode().split(" ", 2)[1] if line else "closed"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__


async def head_limits(seed: Path, provider: FaultProvider) -> Result:
    """5: huge and numerous headers without a key, then 1,100 half-open connections."""
    config = "[proxy]\nheader_timeout_s = 3.0\n"
    async with Proxy(seed, provider.base_url, config, keys=KEYS) as proxy:
        calls = provider.calls
        before = rss_mb(proxy.pid)
        big = b"X-Big: " + b"a" * 1_048_576 + b"\r\n"
        request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
        huge = [await raw_status(proxy.port, request + big + b"\r\n", b"{}") for _ in range(5)]
        many = b"".join(f"X-H{n}: v\r\n".encode() for n in range(10_000))
        numerous = await raw_status(proxy.port, request + many + b"\r\n", b"{}")
        after = rss_mb(proxy.pid)
        held = []
        for _ in range(1_100):
            try:
                held.append(await asyncio.open_connection("127.0.0.1", proxy.port))
            except OSError:
                break
        await asyncio.sleep(0.5)
        files, attackers_calls = open_files(proxy.pid), provider.calls - calls
        during = []
        for n in range(5):  # each a new connection, as a client past the limit makes
            async with proxy.client() as http:
                try:
                    answer = await http.post("/v1/chat/completions", json=chat(f"hello {n}"))
                    during.append(str(answer.status_code))
                except httpx.HTTPError as exc:
                    during.append(type(exc).__name__)
        async with proxy.client() as http:
            await asyncio.sleep(4.0)  # past header_timeout_s: the half-open ones are closed
            later = (await http.post("/v1/chat/completions", json=chat("hello again"))).status_code
        files_later = open_files(proxy.pid)
        for _, writer in held:
            writer.close()
    good = set(huge) == {"431"} and numerous == "431" and after - before < 50 and later == 200
    clean = set(during) == {"503"}
    return (
        f"5 x 1 MB header: {huge[0]} each; 10,000 headers: {numerous}; RSS {before:.0f} ->"
        f" {after:.0f} MB; 1,100 half-open: {files} fds held, 5 real requests then {during},"
        f" after the 3 s head timeout {later} ({files_later} fds); provider calls"
        f" {attackers_calls} from the attackers",
        "nothing",
        ("fixed" if clean else "mostly: a client past the limit during the flood got a reset")
        if good
        else "open",
    )


async def host_and_origin(seed: Path, provider: FaultProvider) -> Result:
    """6: a keyless proxy, a text/plain POST from another origin and with a foreign Host."""
    async with Proxy(seed, provider.base_url) as proxy:
        calls = provider.calls
        body = b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'
        statuses = {}
        for name, headers in {
            "Origin evil": f"Host: 127.0.0.1:{proxy.port}\r\nOrigin: https://evil.example\r\n",
            "Host evil": f"Host: evil.example:{proxy.port}\r\n",
            "both": f"Host: evil.example:{proxy.port}\r\nOrigin: https://evil.example\r\n",
        }.items():
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\n{headers}Content-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            statuses[name] = await raw_status(proxy.port, head, body)
        called = provider.calls - calls
    good = all(s.startswith("4") for s in statuses.values()) and called == 0
    return (f"keyless proxy, text/plain POST: {statuses}; provider calls {called}", "nothing",
            "fixed" if good else "open")  # fmt: skip


async def model_names(seed: Path, provider: FaultProvider) -> Result:
    """7: model names that cannot go in a header, each followed by a good request on the same
    keep-alive connection."""
    names = {"模型": "/v1/chat/completions", "a\r\nb": "/v1/chat/completions",
             "a\x00b": "/v1/chat/completions", "ÿĀ": "/v1/embeddings"}  # fmt: skip
    async with Proxy(seed, provider.base_url, keys=KEYS) as proxy:
        calls = provider.calls
        seen = []
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with proxy.client(limits=limits) as http:
            for name, path in names.items():
                body = {"model": name, "input": "hi"} if "embeddings" in path else chat("hi", name)
                bad = (await http.post(path, json=body)).status_code
                good = (
                    await http.post("/v1/chat/completions", json=chat("hi", "cheap"))
                ).status_code
                seen.append(f"{name!r}: {bad}, next {good}")
        called = provider.calls - calls - len(names)  # the good requests were called
        await proxy.stop()
    billed = query(
        proxy.db, "SELECT COUNT(*) FROM routing_log WHERE model IN (?, ?, ?, ?)", tuple(names)
    )[0][0]
    good = all(": 400, next 200" in s for s in seen) and called == 0 and billed == 0
    return ("; ".join(seen) + f"; provider calls for them {called}; rows `completed` {billed}",
            "nothing", "fixed" if good else "open")  # fmt: skip


def count(db: Path, table: str, column: str, like: str) -> int:
    return int(query(db, f"SELECT COUNT(*) FROM {table} WHERE {column} LIKE ?", (like,))[0][0])


async def deleted_file(
    seed: Path, provider: FaultProvider, groq: ScriptedGroq, restore: str = "copy"
) -> Result:
    """8: the database file removed under a running proxy in shadow mode, then put back: the
    same file (`restore` "link": the operator kept a hard link) or a backup copy made just
    before ("copy": crabbot.db* removed, a new file); routing-log rows and pool additions
    made while it was gone and after it is back."""
    config = '[routing]\nmode = "shadow"\n'
    async with Proxy(seed, provider.base_url, config, keys=KEYS, groq_url=groq.base_url) as proxy:
        async with proxy.client() as http:

            async def ask(text: str) -> int:
                return (await http.post("/v1/chat/completions", json=chat(text))).status_code

            await ask("gone test: before, a lovely morning")
            await asyncio.sleep(1.5)  # the log writer's flush
            backup = proxy.work / "backup.db"
            if restore == "link":
                os.link(proxy.db, backup)
                proxy.db.unlink()
            else:
                with sqlite3.connect(proxy.db) as conn, sqlite3.connect(backup) as copy:
                    conn.backup(copy)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{proxy.db}{suffix}").unlink(missing_ok=True)
            health_gone = (await http.get("/healthz")).status_code
            # Spaced out: one key's burst would wait in quarantine, not teach the pool.
            answers = []
            for text in CHAT[:5]:
                answers.append(await ask(f"gone test: while {text}"))
            metrics = (await http.get("/metrics")).text
            lost_metric = [
                m for m in metrics.splitlines() if m.startswith("crabbot_router_db_file_lost")
            ]
            if restore == "link":
                os.link(backup, proxy.db)
            else:
                shutil.copyfile(backup, proxy.db)
                os.chmod(proxy.db, 0o600)
            health_back = (await http.get("/healthz")).status_code
            for text in CHAT[5:]:
                answers.append(await ask(f"gone test: back {text}"))
        await proxy.stop()
        said = sum(
            int(line.split("log: ", 1)[1].split()[0])
            for line in proxy.stderr.read_text().splitlines()
            if "rows lost at shutdown" in line
        )
        rows = [
            count(proxy.db, "routing_log", "prompt", f"gone test: {w}%") for w in ("while", "back")
        ]
        pool = [
            count(proxy.db, table, "text", f"gone test: {w}%")
            for w in ("while", "back")
            for table in ("pool", "pool_quarantine")
        ]
    rows_ok = rows == [5, 5]
    pool_lost = 10 - sum(pool)
    lost = [] if rows_ok else [f"routing-log rows {10 - sum(rows)}/10"]
    lost += [f"pool labels {pool_lost}/10 (learned or quarantined)"] if pool_lost else []
    how = "a hard link to the same file" if restore == "link" else "a backup copy (a new file)"
    return (
        f"put back as {how}: /healthz while gone {health_gone}, once back {health_back};"
        f" {lost_metric[0] if lost_metric else 'no db_file_lost metric'}; answers"
        f" {answers.count(200)}/10 x 200; in the file after stop: log rows while gone"
        f" {rows[0]}/5, after back {rows[1]}/5; pool labels (learned or quarantined) while"
        f" gone {pool[0] + pool[1]}/5, after back {pool[2] + pool[3]}/5"
        + (f"; at stop the proxy logged {said} routing-log rows lost" if said else ""),
        "; ".join(lost) or "nothing",
        "fixed"
        if rows_ok and not pool_lost
        else ("rows: fixed" if rows_ok else "rows: OPEN") + ("; pool: OPEN" if pool_lost else ""),
    )


async def key_echo(seed: Path, provider: FaultProvider) -> Result:
    """10: a provider's 2xx answer that contains the provider key it was sent."""
    async with Proxy(seed, provider.base_url, keys=KEYS) as proxy:
        async with proxy.client() as http:
            answer = await http.post("/v1/chat/completions", json=chat("ECHO-KEY please", "cheap"))
        await proxy.stop()
        log = proxy.stderr.read_text()
    leaked = PROVIDER_KEY in answer.text
    traceback = "Traceback" in log
    return (
        f"2xx answer quoting the provider key: {answer.status_code}, key in the client's body:"
        f" {leaked}; a traceback in the proxy's log: {traceback}",
        "nothing" if not leaked else "the provider key",
        "fixed" if not leaked and not traceback else "open",
    )
