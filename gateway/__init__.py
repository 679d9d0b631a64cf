"""An authentication gateway for health-data APIs.

Every request flows once through one pipeline: extract the credential, authenticate it
(one module per credential kind, giving a :class:`~gateway.principal.Principal`), authorize it
against the route policy, mutate the request with identity headers, then forward it (proxy mode)
or answer (decision mode).
"""

__version__ = "0.1.0"
