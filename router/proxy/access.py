"""Who may call the proxy, and which models: client keys (each with an optional label, given as
`label:key`), the allowed-models rules of [proxy], global or per key label, and the namespace each
caller's session keys live in."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.requests import Request

from router.config import KEY_LABEL, ConfigError, ModelSettings, ProxySettings
from router.proxy.errors import unauthorized
from router.taxonomy import TIERS

AUTO = "auto"
ANY_MODEL = "*"
# The namespace of a proxy with no keys: "-" is no key label (a label starts with a letter).
OPEN_NAMESPACE = "-"


@dataclass(frozen=True)
class ClientKey:
    secret: bytes
    label: str | None

    @property
    def namespace(self) -> str:
        """Where this key's session keys live: its label, else a fingerprint of the key ("#"
        and 12 hex digits of its SHA-256, never a label, and saying nothing of the key)."""
        if self.label is not None:
            return self.label
        return "#" + hashlib.sha256(self.secret).hexdigest()[:12]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: its key's label (None: no label, or no keys) and its namespace."""

    label: str | None
    namespace: str

    def conv_key(self, session_key: str | None) -> str | None:
        """The router's conversation key for a client's session key: `proxy:<namespace>:<key>`,
        so no client reaches another's conversations, nor the bot's (`telegram:...`)."""
        return None if session_key is None else f"proxy:{self.namespace}:{session_key}"

    def user_key(self, speaker: str | None) -> str | None:
        """The router's key for a person a client names, in the same namespace: no client can
        speak as a bot user (`telegram:...`) or as another client's, and `crabbot forget --user
        proxy:<namespace>:<name>` erases them."""
        return None if speaker is None else f"proxy:{self.namespace}:{speaker}"


OPEN_CALLER = Caller(None, OPEN_NAMESPACE)


def parse_keys(entries: Iterable[str]) -> list[ClientKey]:
    """`key` or `label:key` each; an entry whose part before the first colon is not a label
    (letters, digits, _ and -) is a key with a colon in it."""
    keys = []
    for entry in entries:
        label, colon, secret = entry.partition(":")
        if colon and secret and KEY_LABEL.fullmatch(label):
            keys.append(ClientKey(secret.encode(), label))
        else:
            keys.append(ClientKey(entry.encode(), None))
    return keys


def _allowed_names(names: Sequence[str], models: ModelSettings) -> frozenset[str] | None:
    """The model names a rule lets through (None: any). A tier alias and its model are one
    model; `auto` is allowed when named, or when every model it could pick is allowed."""
    if ANY_MODEL in names:
        return None
    allowed = set(names)
    for tier in TIERS:
        model = models.for_tier(tier)
        if tier in allowed or model in allowed:
            allowed |= {tier, model}
    if all(tier in allowed for tier in TIERS):
        allowed.add(AUTO)
    return frozenset(allowed)


class Access:
    """Checks a request's key (a 401 when wrong) and says which models its label may use. A key
    is compared with every configured key, in constant time."""

    def __init__(
        self, settings: ProxySettings, models: ModelSettings, key_entries: Sequence[str]
    ) -> None:
        self.keys = parse_keys(key_entries)
        labels = {key.label for key in self.keys}
        for label in settings.allowed_models_by_key:
            if label not in labels:
                raise ConfigError(
                    f"proxy.allowed_models_by_key: no client key has the label {label!r}"
                    f" (give it in CRABBOT_PROXY_KEYS as {label}:<key>)"
                )
        self._default = (
            None
            if settings.allowed_models is None
            else _allowed_names(settings.allowed_models, models)
        )
        self._by_label = {
            label: _allowed_names(names, models)
            for label, names in settings.allowed_models_by_key.items()
        }

    @property
    def open(self) -> bool:
        """No client keys: anyone who can reach the proxy may call it."""
        return not self.keys

    @staticmethod
    def _offered(request: Request) -> bytes | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        return given.strip().encode()

    def _match(self, offered: bytes) -> ClientKey | None:
        # Compare with every key, so the time taken says nothing about which one nearly matched.
        matches = [(hmac.compare_digest(offered, key.secret), key) for key in self.keys]
        return next((key for matched, key in matches if matched), None)

    def identify(self, request: Request) -> Caller:
        """Who the caller is (its key's label and namespace); a 401 for a missing or wrong key
        when keys are set."""
        if self.open:
            return OPEN_CALLER
        offered = self._offered(request)
        if offered is None:
            raise unauthorized(
                "You didn't provide an API key: send it as 'Authorization: Bearer <key>'."
            )
        key = self._match(offered)
        if key is None:
            raise unauthorized("Incorrect API key provided.")
        return Caller(key.label, key.namespace)

    def authorize(self, request: Request) -> str | None:
        """The caller's key label (None: no label, or no keys at all); a 401 for a missing or
        wrong key when keys are set."""
        return self.identify(request).label

    def authorized(self, request: Request) -> bool:
        """True when the request may see more than that the proxy is up."""
        offered = self._offered(request)
        return self.open or (offered is not None and self._match(offered) is not None)

    def allows(self, label: str | None, model: str) -> bool:
        allowed = self._by_label.get(label, self._default) if label else self._default
        return allowed is None or model in allowed
