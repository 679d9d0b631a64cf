"""Identity headers for the upstream, built once per principal."""

from __future__ import annotations

from gateway.config import HeaderNames
from gateway.principal import Principal


class IdentityHeaders:
    """Renders a principal as the configured identity headers.

    Principals are frozen and hashable; the rendered tuple is cached (bounded) so a repeated
    credential costs a dictionary lookup.
    """

    def __init__(self, names: HeaderNames, *, cache_size: int = 10_000) -> None:
        self.names = names
        self._cache: dict[Principal, tuple[tuple[str, str], ...]] = {}
        self._cache_size = cache_size

    def render(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        cached = self._cache.get(principal)
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
        self._cache[principal] = rendered
        return rendered
