"""crabbot's model router: names a message's task and sends it to the cheapest tier that fits."""

from router.builder import open_router
from router.config import ConfigError, RouterConfig, Secrets, load_router_config
from router.decision import RoutingDecision, SignalAnswer
from router.router import EmptyMessageError, ModelRouter
from router.taxonomy import MODES, TIERS, Taxonomy

__all__ = [
    "MODES",
    "TIERS",
    "ConfigError",
    "EmptyMessageError",
    "ModelRouter",
    "RouterConfig",
    "RoutingDecision",
    "Secrets",
    "SignalAnswer",
    "Taxonomy",
    "load_router_config",
    "open_router",
]
