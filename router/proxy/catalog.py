"""The models the proxy names (`GET /v1/models`, `GET /v1/models/{id}`): auto, the tier aliases
and the configured tier models, each shown only to keys allowed to use it."""

from __future__ import annotations

from typing import Any

from router.config import ModelSettings
from router.proxy.access import AUTO, Access
from router.proxy.errors import model_not_found
from router.taxonomy import TIERS


def _entry(name: str) -> dict[str, Any]:
    own = name == AUTO or name in TIERS
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "crabbot" if own else "provider",
    }


def model_names(models: ModelSettings) -> list[str]:
    configured = [models.for_tier(tier) for tier in TIERS]
    return [AUTO, *TIERS, *dict.fromkeys(configured)]


def model_list(models: ModelSettings, access: Access, label: str | None) -> dict[str, Any]:
    names = [name for name in model_names(models) if access.allows(label, name)]
    return {"object": "list", "data": [_entry(name) for name in names]}


def model_entry(
    models: ModelSettings, access: Access, label: str | None, name: str
) -> dict[str, Any]:
    """One model's entry; 404 in OpenAI's words for a name the proxy does not name, or one this
    key may not use (a provider model outside the tiers is not looked up)."""
    if name not in model_names(models) or not access.allows(label, name):
        raise model_not_found(name)
    return _entry(name)
