"""ASGI middleware, one concern a module, as Starlette's own are."""
