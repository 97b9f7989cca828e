"""The whole crabbot config: the router's sections plus the bot's (upstream, memory, admins,
platforms), read from one TOML file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from router.config import ConfigError, PrivacySettings, RouterConfig, Section, load_model

DEFAULT_SYSTEM_PROMPT = (
    "You are crabbot, a warm and helpful assistant in a family group chat. Answer in the language"
    " you were addressed in (Chinese, English or Japanese; keep Traditional or Simplified Chinese"
    " as the asker wrote it). Be brief for chit-chat, thorough for real tasks."
)


class UpstreamSettings(Section):
    base_url: str | None = None
    model: str | None = None
    timeout_s: float = Field(default=60.0, gt=0.0)
    max_retries: int = Field(default=1, ge=0, le=10)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = True  # the answer appears while it is written


class MemorySettings(Section):
    max_turns: int = Field(default=10, ge=0)  # exchanges: a message and the bot's reply
    max_tokens: int = Field(default=3000, ge=100)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


class ImageSettings(Section):
    enabled: bool = True  # photos and image attachments go to the model as image parts
    max_mb: float = Field(default=10.0, gt=0.0, le=20.0)  # Telegram's getFile stops at 20 MB


class VoiceSettings(Section):
    enabled: bool = True  # voice messages and audio files are transcribed (needs GROQ_API_KEY)
    model: str = "whisper-large-v3-turbo"
    base_url: str | None = None  # Groq's API by default
    timeout_s: float = Field(default=30.0, gt=0.0)
    max_duration_s: int = Field(default=600, ge=1)
    max_mb: float = Field(default=20.0, gt=0.0, le=25.0)  # Groq takes up to 25 MB
    show_transcript: bool = True  # the reply opens with "[voice 0:12] what was heard"


class BotPrivacySettings(PrivacySettings):
    """The router's privacy settings, and how long conversation memory is kept."""

    # Days a conversation's messages stay in memory (the history the model sees); then removed.
    memory_days: float = Field(default=30.0, gt=0.0)


class AdminSettings(Section):
    telegram: list[int] = []
    discord: list[int] = []
    console: bool = True


class AccessSettings(Section):
    """Who the bot serves besides the admins (bot/access.py); the terminal is always served."""

    everyone: bool = False  # true: anyone who can reach the bot (and spend its keys)
    telegram_users: list[int] = []  # served in any chat
    telegram_chats: list[int] = []  # everyone in these chats (a group's id is negative)
    discord_users: list[int] = []
    discord_channels: list[int] = []  # and the threads in them
    discord_servers: list[int] = []
    discord_roles: list[int] = []


class TelegramSettings(Section):
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    drafts: bool = True  # stream private replies with sendMessageDraft where the server has it
    edit_interval_s: float = Field(default=1.0, ge=0.0)  # between edits of a streamed reply
    group_edit_interval_s: float = Field(default=3.0, ge=0.0)
    # An album comes as one message a photo, with no sign of the last: it is answered once no
    # more of it has come for this long.
    album_wait_s: float = Field(default=1.0, gt=0.0, le=10.0)
    # Webhook mode: Telegram posts updates to webhook_url (HTTPS, e.g. a reverse proxy) which
    # forwards to webhook_listen:webhook_port/webhook_path. Unset = long polling.
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    webhook_path: str = "telegram"


class DiscordSettings(Section):
    sync_commands: bool = True
    edit_interval_s: float = Field(default=1.0, ge=0.0)  # between edits of a streamed reply


class CrabbotConfig(RouterConfig):
    upstream: UpstreamSettings = UpstreamSettings()
    memory: MemorySettings = MemorySettings()
    images: ImageSettings = ImageSettings()
    voice: VoiceSettings = VoiceSettings()
    admins: AdminSettings = AdminSettings()
    access: AccessSettings = AccessSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    privacy: BotPrivacySettings = BotPrivacySettings()


def load_config(path: Path | None = None, db_path: Path | None = None) -> CrabbotConfig:
    """Load and validate the config; `db_path` (the --db flag) overrides database.path."""
    config = load_model(CrabbotConfig, path)
    if db_path is not None:
        folder = db_path.expanduser().absolute().parent
        if not folder.is_dir():  # a typo in --db must not quietly start a second database
            raise ConfigError(f"database {db_path}: folder {folder} does not exist")
        config = config.model_copy(
            update={
                "database": config.database.model_copy(
                    update={"path": db_path.expanduser().absolute()}
                )
            }
        )
    return config
