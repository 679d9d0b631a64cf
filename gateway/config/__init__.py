"""The gateway's settings: one YAML file, validated once into frozen, typed sections.

Each section is a pydantic model in its own module (``listeners``, ``store``, ``upstreams``, …)
with every field declared once: type, default and description. :mod:`.loader` reads the file,
expands ``${ENV}`` and turns the first failure into a :class:`ConfigError` naming the field
(``upstreams.live.url: not a URL``). The JSON Schema (``gateway config schema``) and the field
table in docs/configuration.md (:mod:`.doc`) are generated from the same models.
"""

from gateway.config.abuse import AbuseSettings
from gateway.config.api_keys import ApiKeySettings
from gateway.config.base import Section
from gateway.config.cors import CorsPolicy
from gateway.config.decision import DecisionSettings
from gateway.config.errors import ConfigError
from gateway.config.headers import HeaderNames, HeaderSettings
from gateway.config.limits import Limits
from gateway.config.listeners import AdminListener, Listener
from gateway.config.loader import Node
from gateway.config.rate_limits import RATE_LIMIT_PER, RateLimit, RateLimitSettings
from gateway.config.relationships import RelationshipSettings
from gateway.config.settings import Settings
from gateway.config.store import StoreSettings
from gateway.config.tokens import SigningKey, TokenSettings
from gateway.config.tracing import TracingSettings
from gateway.config.upstreams import ENVIRONMENTS, Upstream

__all__ = [
    "ENVIRONMENTS",
    "RATE_LIMIT_PER",
    "AbuseSettings",
    "AdminListener",
    "ApiKeySettings",
    "ConfigError",
    "CorsPolicy",
    "DecisionSettings",
    "HeaderNames",
    "HeaderSettings",
    "Limits",
    "Listener",
    "Node",
    "RateLimit",
    "RateLimitSettings",
    "RelationshipSettings",
    "Section",
    "Settings",
    "SigningKey",
    "StoreSettings",
    "TokenSettings",
    "TracingSettings",
    "Upstream",
]
