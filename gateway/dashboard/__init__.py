"""The key dashboard: HTML pages on the admin listener, under ``/dashboard``.

Sign in with the admin token; list, create, rotate and revoke API keys per account; grant and
revoke caregiver relationships; read the latest audit events of this process. See
:mod:`gateway.dashboard.routes` for the pages and :mod:`gateway.dashboard.session` for the
session, CSRF and sign-in controls. The audit window it shows is fed by the public listener
through :mod:`gateway.observe.recent`, which imports nothing of the dashboard.
"""
