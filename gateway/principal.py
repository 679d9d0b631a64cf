"""The one object that flows through the pipeline, and what the policy knows about its kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RateIdentity = Literal["key", "user", "subject_actor", "actor"]
Narrowing = Literal["none", "resource", "resource_required", "sdk"]


@dataclass(frozen=True, slots=True, eq=False)
class CredentialKind:
    """A kind of credential and the facts the route policy needs about it.

    Each ``gateway/authn/<kind>.py`` declares exactly one; equality is identity. ``name`` is what
    upstreams see in ``X-Auth-Credential`` and what policies name in ``allow``. The facts are
    declarative, so the policy (``gateway/authz``) reads them without knowing any kind:

    - ``user_bound``: bound to one user; a rule's ``bind`` parameter must equal its subject;
    - ``refusal``: the message when no rule allows this kind on a route;
    - ``rate_identity``: what a per-credential rate limit counts: the API key (``key``), the
      user (``user``), the subject and actor pair (``subject_actor``), the acting person
      (``actor``);
    - ``narrowing``: how its scopes narrow what the policy allows: not at all (``none``), by
      ``RESOURCE:ACTION`` scopes against a rule's ``resource``, where no scopes means not
      narrowed (``resource``) or means nothing allowed (``resource_required``), by SDK scope
      names against a rule's ``sdk_scope`` (``sdk``);
    - ``consumed_by``: for a single-use kind, the gateway-owned endpoint (a rule's ``handler``)
      that uses it up. On such a route the credential is authenticated by being consumed, one
      atomic store operation, and the endpoint is handed a principal marked ``consumed``.
    """

    name: str
    user_bound: bool
    refusal: str = "This credential does not have permission for this operation."
    rate_identity: RateIdentity = "user"
    narrowing: Narrowing = "none"
    consumed_by: str | None = None

    @property
    def value(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"CredentialKind({self.name!r})"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as verified by an authenticator.

    ``user`` is the subject whose data is reached (``None`` for account-wide credentials),
    ``actor`` who acts (the key id, the user, the caregiver, the signed-in person). ``scopes`` is
    empty when the credential is not narrowed. ``expires_at`` (epoch seconds) bounds how long a
    verification result may be cached. ``token_id`` is a non-secret handle on the credential (the
    digest of a mobile token, the ``jti`` of a JWT) used by handlers that act on the credential.
    ``consumed``: this request used the (single-use) credential up; nobody else ever will.
    """

    account: str
    credential: CredentialKind
    environment: str
    actor: str
    user: str | None = None
    scopes: tuple[str, ...] = ()
    key_id: str | None = None
    expires_at: float | None = None
    token_id: str | None = None
    consumed: bool = False

    @property
    def is_caregiver(self) -> bool:
        return self.user is not None and self.actor != self.user
