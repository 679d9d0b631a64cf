"""Identity headers for the upstream, built once per principal."""

from __future__ import annotations

from gateway.config import HeaderNames
from gateway.principal import Principal


class IdentityHeaders:
    """Renders a principal as the configured identity headers.

    The rendered tuple is cached (bounded), keyed by exactly the fields it shows: every token
    of one user through one key (each its own principal, differing in ``token_id`` and
    ``expires_at``) shares one entry, so a repeated identity costs a dictionary lookup, and
    100,000 distinct live tokens of a few users do not fill the cache (a principal a rendered
    block was kept for held about 500 bytes each, for 10,000 of them).
    """

    def __init__(self, names: HeaderNames, *, cache_size: int = 10_000) -> None:
        self.names = names
        self._cache: dict[tuple[object, ...], tuple[tuple[str, str], ...]] = {}
        self._cache_size = cache_size

    def render(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        # SECURITY: the key holds every field the headers show, so no principal is ever given
        # the headers of another.
        key = (
            principal.account,
            principal.actor,
            principal.credential.value,
            principal.environment,
            principal.scopes,
            principal.user,
            principal.key_id,
        )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        n = self.names
        headers = [
            (n.account, principal.account),
            (n.actor, principal.actor),
            (n.credential, principal.credential.value),
            (n.environment, principal.environment),
            (n.scopes, " ".join(principal.scopes)),
        ]
        if principal.user is not None:
            headers.append((n.user, principal.user))
        if principal.key_id is not None:
            headers.append((n.key_id, principal.key_id))
        rendered = tuple(headers)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = rendered
        return rendered
