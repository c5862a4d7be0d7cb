"""Access control: who a request is from (subject, OIDC, API keys) and what it may do (permissions).

No HTTP here: the edge resolves credentials to a :class:`~kizuna.access.subject.Subject` and the
services ask :func:`~kizuna.access.permissions.granted`, or filter their store queries by the same
rules, so local rights and data-space agreements are one model decided in one place.
"""
