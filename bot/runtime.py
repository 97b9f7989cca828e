"""Wires one bot process together: router, memory, upstream, agent, admin commands and the voice
transcriber on one database connection, opened and closed as a unit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bot.access import Access
from bot.admin import Admin
from bot.agent import Agent
from bot.config import CrabbotConfig
from bot.memory import Memory
from bot.transcriber import Transcriber
from bot.upstream import Upstream
from router import ModelRouter, Secrets, open_router
from router.embedding.embedder import Embedder
from router.taxonomy import Mode


def router_config(config: CrabbotConfig) -> CrabbotConfig:
    """When the bot does not route (upstream model "auto": the upstream routes; any other model
    named in config: every reply uses it), skip the local pool and the categorizer (no seeding,
    no model load, no Groq call), keeping only the database for the admin commands."""
    if not config.upstream.model:
        return config
    return config.model_copy(
        update={
            "local": config.local.model_copy(update={"enabled": False}),
            "categorizer": config.categorizer.model_copy(update={"enabled": False}),
        }
    )


@dataclass
class BotCore:
    config: CrabbotConfig
    router: ModelRouter
    memory: Memory
    upstream: Upstream
    agent: Agent
    admin: Admin
    transcriber: Transcriber
    # The bot's own failures and fallbacks (upstream errors, unreadable messages, Markdown sent
    # as plain text...), by name; the router counts its own on router.counters.
    counters: Counter[str]
    access: Access

    @classmethod
    async def open(
        cls,
        config: CrabbotConfig,
        secrets: Secrets | None = None,
        *,
        embedder: Embedder | None = None,
        mode_override: Mode | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> BotCore:
        secrets = secrets or Secrets()
        router = await open_router(
            router_config(config),
            secrets,
            embedder=embedder,
            mode_override=mode_override,
            progress=progress,
        )
        try:
            counters: Counter[str] = Counter()
            memory = await Memory.open(router.conn, config.memory, counters)
            upstream = Upstream(config.upstream, secrets, counters)
        except BaseException:
            await router.close()
            raise
        keep_s = config.privacy.memory_days * 24 * 3600
        router.retention.add("messages removed", lambda now: memory.remove_older_than(now - keep_s))
        router.erasures.also.append(memory.heed_erasures)  # another process's erasure
        agent = Agent(router, memory, upstream, config.memory.system_prompt, counters)
        admin = Admin(
            router,
            memory,
            config.admins,
            fixed_model=upstream.fixed_model,
            counters=counters,
            proxy=upstream.proxy,
        )
        router.erasures.also.append(admin.heed_erasures)  # the console's arrow keys
        transcriber = Transcriber(config.voice, secrets.groq_api_key)
        access = Access(config.access, counters)
        return cls(config, router, memory, upstream, agent, admin, transcriber, counters, access)

    async def close(self) -> None:
        await self.transcriber.close()
        await self.agent.close()
        await self.upstream.close()
        await self.memory.close()
        await self.router.close()
