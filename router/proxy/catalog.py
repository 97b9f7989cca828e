"""The models the proxy names (`GET /v1/models`, `GET /v1/models/{id}`): auto, the tier aliases
and the configured tier models, each shown only to keys allowed to use it; any other id is the
provider's to answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.config import ModelSettings
from router.proxy.access import AUTO, Access
from router.proxy.errors import model_not_found
from router.proxy.gateway import Gateway
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


async def model_entry(
    models: ModelSettings,
    access: Access,
    label: str | None,
    name: str,
    provider_entry: Callable[[str], Awaitable[dict[str, Any] | None]],
) -> dict[str, Any]:
    """One model's entry: the proxy's own names, else the provider's; 404 in OpenAI's words for
    a model neither has, or one this key may not use."""
    if not access.allows(label, name):
        raise model_not_found(name)
    if name in model_names(models):
        return _entry(name)
    entry = await provider_entry(name)
    if entry is None:
        raise model_not_found(name)
    return entry


class CatalogEndpoint:
    """GET /v1/models and GET /v1/models/{model}, as this key may see them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def models(self, request: Request) -> Response:
        gateway = self.gateway
        label = gateway.authorize(request)
        return JSONResponse(model_list(gateway.router.config.models, gateway.access, label))

    async def model(self, request: Request) -> Response:
        gateway = self.gateway
        label = gateway.authorize(request)
        name = request.path_params["model"]
        models = gateway.router.config.models
        entry = await model_entry(models, gateway.access, label, name, gateway.provider.model)
        return JSONResponse(entry)
