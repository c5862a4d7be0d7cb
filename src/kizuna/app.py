"""The ASGI application: routes, the store's lifetime, and errors as ProblemDetails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

from kizuna import __version__, metrics, paths
from kizuna.access.apikeys import ApiKeys
from kizuna.access.audit import AuditTrail
from kizuna.access.authenticator import Authenticator, access_mode, is_loopback
from kizuna.access.grants import Grants
from kizuna.access.policy import AccessPolicy
from kizuna.audit_routes import AuditApi
from kizuna.cadde.consumer import CaddeConsumer
from kizuna.cadde.provider import CaddeProvider
from kizuna.cadde.routes import CaddeConsumerApi, CaddeProviderApi
from kizuna.catalogs.listing import Publisher, Site
from kizuna.catalogs.routes import CatalogApi
from kizuna.config import Settings
from kizuna.console.event_routes import ConsoleEventsApi
from kizuna.console.events import ChangeStreams
from kizuna.console.map_routes import ConsoleMapApi
from kizuna.console.routes import Console
from kizuna.dataspace.routes import build as build_dataspace
from kizuna.errors import NgsiLdError, ServiceUnavailable
from kizuna.jsonld.contexts import ContextRegistry, load_context_map
from kizuna.limits import InputLimits, PageLimits
from kizuna.metrics_routes import MetricsApi, MetricsServer
from kizuna.middleware.admins_only import AdminsOnly
from kizuna.middleware.audit import AuditRefusals
from kizuna.middleware.authentication import Authentication
from kizuna.middleware.body_limit import BodyLimit
from kizuna.middleware.json_bodies import JsonBodiesOnly
from kizuna.middleware.metrics import RequestMetrics
from kizuna.middleware.new_tenants import NewTenants
from kizuna.middleware.same_origin import SameOriginOnly
from kizuna.middleware.source_warnings import SourceWarnings
from kizuna.middleware.trailing_slash import TrailingSlash
from kizuna.ngsild.context_routes import ContextApi
from kizuna.ngsild.csource_routes import CsourceApi
from kizuna.ngsild.csources import RegistrationService
from kizuna.ngsild.discovery import DiscoveryApi
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.forwarding import Federation
from kizuna.ngsild.forwarding_calls import node_name
from kizuna.ngsild.history import prune_history_forever
from kizuna.ngsild.hosted_contexts import HostedContexts
from kizuna.ngsild.matching import SubscriptionCache
from kizuna.ngsild.permission_routes import PermissionApi
from kizuna.ngsild.routes import NgsiLdApi
from kizuna.ngsild.subscription_routes import CSOURCE_SUBSCRIPTIONS, SUBSCRIPTIONS, SubscriptionApi
from kizuna.ngsild.subscriptions import CsourceSubscriptions, EntitySubscriptions, SubscriptionService
from kizuna.ngsild.temporal import TemporalService
from kizuna.ngsild.temporal_params import parse_retention
from kizuna.ngsild.temporal_routes import TemporalApi
from kizuna.ngsiv2.reads import V2Reads
from kizuna.ngsiv2.routes import SERVICE as FIWARE_SERVICE
from kizuna.ngsiv2.routes import NgsiV2Api
from kizuna.notify.dispatcher import Dispatcher, DispatcherConfig
from kizuna.openapi.document import OpenApiRoute
from kizuna.outbound import OutboundGate
from kizuna.problems import EXCEPTION_HANDLERS
from kizuna.processes import die_with_supervisor
from kizuna.retention import prune_forever
from kizuna.store import open_store

log = logging.getLogger("kizuna")


def mount(path: str, routes: Sequence[BaseRoute], middleware: Sequence[Middleware] = ()) -> Mount:
    """A Mount whose router never redirects: :class:`TrailingSlash` already serves both forms,
    and a redirect would point a client at a path the node resolved differently (``%2F`` in an
    id decodes to a slash)."""
    return Mount(path, app=Router(list(routes), redirect_slashes=False), middleware=middleware)


def own_addresses(settings: Settings) -> list[str]:
    """The ``host:port`` forms a forwarded request would reach this node by (its public URL is
    the node name, known to the forwarder already)."""
    port = settings.port
    hosts = {settings.host, "localhost", "127.0.0.1", "[::1]"}
    if settings.host in ("0.0.0.0", "::"):
        hosts.add(socket.gethostname())
    return [f"{host}:{port}" for host in hosts]


def create_app(settings: Settings) -> Starlette:
    store = open_store(settings.store)
    outbound = httpx.AsyncClient(timeout=settings.context_fetch_timeout, follow_redirects=False)

    async def fetch_json(url: str) -> Any:
        """Issuer metadata and keys; transport failures are OSError to the token verifier."""
        try:
            response = await outbound.get(url)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise OSError(f"{url}: {error}") from error
        return response.json()

    try:
        authenticator = Authenticator.from_settings(settings, fetch_json, ApiKeys(store).find)
        mode, _ = access_mode(settings)
        gate = OutboundGate.for_node(
            settings.outbound_allow, open_loopback_node=mode == "none" and is_loopback(settings.host)
        )
    except ValueError as error:
        raise SystemExit(f"kizuna: {error}") from None
    context_map = load_context_map(settings.context_map) if settings.context_map else None
    registry = ContextRegistry(
        context_map,
        fetch_timeout=settings.context_fetch_timeout,
        max_context_bytes=settings.max_context_bytes,
        gate=gate,
    )
    subscription_cache = SubscriptionCache(registry)
    policy = AccessPolicy(store)
    dispatcher = Dispatcher(
        store,
        registry,
        base_url=settings.public_base_url,
        config=DispatcherConfig.from_settings(settings),
        outbound=gate,
        policy=policy,
    )
    audit = AuditTrail(store)
    grants = Grants(store, policy, audit)
    entities = EntityService(store, policy, subscription_cache, dispatcher.wake)
    temporal = TemporalService(store, policy, instance_limit=settings.temporal_instance_limit)
    federation = Federation(
        entities,
        store,
        registry,
        node=node_name(settings.public_base_url),
        timeout=settings.forward_timeout,
        cache_seconds=settings.registration_cache_seconds,
        gate=gate,
        own_addresses=own_addresses(settings),
        temporal=temporal,
    )
    ngsild = NgsiLdApi(
        entities,
        registry,
        federation=federation,
    )
    contexts = HostedContexts(registry, store)
    entity_subscriptions = SubscriptionService(
        store,
        registry,
        EntitySubscriptions(store, on_change=subscription_cache.invalidate, settle=dispatcher.settle),
        implicit_context=contexts.add_implicit,
        gate=gate,
    )
    csource_subscriptions = SubscriptionService(
        store,
        registry,
        CsourceSubscriptions(store, notifier=dispatcher.csources, settle=dispatcher.settle),
        implicit_context=contexts.add_implicit,
        gate=gate,
    )
    dataspace = build_dataspace(settings, store, entities, registry, entity_subscriptions, grants, gate)
    dispatcher.gate = dataspace.dataplane  # push transfers: each notification is a counted access
    registrations = RegistrationService(
        store, notifier=dispatcher.csources, on_change=federation.registrations_changed, gate=gate
    )

    try:
        retention = None if not settings.history_retention else parse_retention(settings.history_retention)
    except NgsiLdError as error:
        raise SystemExit(f"kizuna: invalid history retention: {error}") from None
    try:
        change_retention = parse_retention(settings.change_retention)
    except NgsiLdError as error:
        raise SystemExit(f"kizuna: invalid change retention: {error}") from None
    change_streams = ChangeStreams(store, policy, max_streams=settings.console_max_streams)

    def heard(topic: str, key: str) -> None:
        """What another process (or this one) committed: drop or refresh what is kept in memory."""
        everything = topic == "*"
        if everything or topic == "subscriptions":
            subscription_cache.invalidate(None if everything else key)
        if everything or topic == "contexts":
            contexts.follow(None if everything else key)
        if everything or topic in ("outbox", "subscriptions"):
            dispatcher.wake()
        if everything or topic == "permissions":
            policy.changed(None if everything else key)
        if everything or topic == "registrations":
            federation.registrations_changed(None if everything else key)
        if everything or topic == "entities":
            change_streams.wake(None if everything else key)

    store.listen(heard)
    metrics_api = MetricsApi(store)
    counting = settings.metrics == "on"
    metrics_server = None
    if counting:

        def written(seconds: float) -> None:
            metrics.STORE_TRANSACTION.observe(seconds)
            metrics.pool_used(store.pool_usage())

        store.time_writes(written)
        if settings.metrics_port is not None:
            metrics_server = MetricsServer(metrics_api, settings.metrics_host, settings.metrics_port)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        await contexts.sync()
        await dispatcher.start()
        if metrics_server is not None:
            await metrics_server.start()
        metrics.started()
        log.info("kizuna %s serving with store %s", __version__, settings.store)
        pruner = None if retention is None else asyncio.create_task(prune_history_forever(store, retention))
        change_pruner = asyncio.create_task(
            prune_forever(store.prune_changes, change_retention, "entity changes")
        )
        try:
            yield
        finally:
            change_pruner.cancel()
            if pruner is not None:
                pruner.cancel()
            if metrics_server is not None:
                await metrics_server.stop()
            metrics.stopped()
            await dispatcher.stop()
            await federation.close()
            await outbound.aclose()
            await store.close()

    async def health(request: Request) -> Response:
        """Liveness: the process answers (also ``/health/live``). It reads nothing, so a load
        balancer probing it often costs the node nothing."""
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def ready(request: Request) -> Response:
        """Readiness: the store answers a query within 2 s, and its schema is the one this code
        writes. A node whose database is gone is alive but not ready; so is one whose store a
        newer release migrated after it started (an upgrade under way: it should be replaced)."""
        try:
            mismatch = await asyncio.wait_for(store.schema_mismatch(), 2.0)
        except Exception as error:
            log.warning("not ready: the store does not answer: %s", error)
            raise ServiceUnavailable("The node's store does not answer") from None
        if mismatch is not None:
            log.warning("not ready: %s", mismatch)
            raise ServiceUnavailable(f"The node's store is not at its schema version: {mismatch}")
        return Response(b'{"status":"ready"}', media_type="application/json")

    # Every NGSI-LD API acts for the subject the request proves (anonymous without credentials).
    ngsi_ld = [
        *ngsild.routes(),
        *SubscriptionApi(entity_subscriptions, registry, path=SUBSCRIPTIONS).routes(),
        *TemporalApi(temporal, registry, federation).routes(),
        *CsourceApi(registrations, registry).routes(),
        *SubscriptionApi(csource_subscriptions, registry, path=CSOURCE_SUBSCRIPTIONS).routes(),
        *DiscoveryApi(entities, registry, federation).routes(),
        *ContextApi(contexts, settings.public_base_url).routes(),
        mount(
            "/auth",
            routes=PermissionApi(grants, registry).routes(),
        ),
    ]
    # /metrics on the main port, behind the one admins-only check (everyone's, with --auth none).
    scraped_here = (
        [metrics_api.route([Middleware(Authentication, authenticator=authenticator), Middleware(AdminsOnly)])]
        if counting and metrics_server is None
        else []
    )
    site = Site(
        settings.public_base_url,
        Publisher(settings.participant_id, settings.publisher_name or settings.participant_id),
    )
    cadde: list[BaseRoute] = []
    if settings.cadde != "off":
        provider = CaddeProvider(
            dataspace.catalog,
            site,
            dataspace.dataplane,
            provider_id=settings.cadde_provider_id or settings.participant_id,
            contracts=settings.cadde == "all",
        )
        cadde = CaddeProviderApi(provider, dataspace.answers_catalog).routes()
    cadde_consumer = CaddeConsumerApi(CaddeConsumer(dataspace.node, dataspace.transfers))
    # The console's pages come first: a Mount under /console (its event stream) must not catch them.
    console_on = settings.console == "on"
    console = Console(settings).routes() if console_on else []
    routes: list[BaseRoute] = [
        # First: a router tries its routes in order and NGSI-LD requests are nearly all the traffic;
        # last, each of them matched the templates of all the others (16 by default) before its own.
        mount(
            paths.NGSI_LD,
            ngsi_ld,
            middleware=[
                Middleware(Authentication, authenticator=authenticator),
                Middleware(NewTenants, store=store, max_tenants=settings.max_tenants),
                Middleware(SourceWarnings),
            ],
        ),
        *console,
        Route("/health", health, methods=["GET"]),
        Route("/health/live", health, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        OpenApiRoute(),
        *scraped_here,
        dataspace.version_route(),
        mount(paths.DSP, dataspace.protocol_routes()),
        *CatalogApi(dataspace.catalog, site, dataspace.answers_catalog).routes(),
        *cadde,
        mount(
            paths.MANAGEMENT,
            routes=[*dataspace.management_routes(), *cadde_consumer.routes(), *AuditApi(audit).routes()],
            middleware=[
                Middleware(SameOriginOnly),
                Middleware(JsonBodiesOnly),
                Middleware(Authentication, authenticator=authenticator),
                Middleware(AdminsOnly),
            ],
        ),
        mount(
            paths.NGSI_V2,
            NgsiV2Api(V2Reads(entities), registry, settings.ngsiv2_context).routes(),
            middleware=[
                Middleware(Authentication, authenticator=authenticator, tenant_header=FIWARE_SERVICE)
            ],
        ),
        mount(
            paths.CONSOLE,
            ConsoleEventsApi(
                change_streams,
                registry,
                lifetime=settings.console_stream_lifetime,
                heartbeat=settings.console_heartbeat,
            ).routes()
            + (ConsoleMapApi(entities, registry).routes() if console_on else []),
            middleware=[Middleware(Authentication, authenticator=authenticator, tenant_param="tenant")],
        ),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(TrailingSlash),
            # Inside TrailingSlash, which hands on a copy of the scope: this one sees the route.
            *([Middleware(RequestMetrics, routes=routes)] if counting else []),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
            Middleware(AuditRefusals, trail=audit),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.page_limits = PageLimits(settings.default_limit, settings.max_limit)
    app.state.limits = InputLimits(
        json_depth=settings.max_json_depth,
        array_items=settings.max_array_items,
        object_members=settings.max_attributes,
        batch_entities=settings.max_batch_entities,
        geometry_positions=settings.max_geometry_positions,
    )
    app.state.store = store
    app.state.contexts = registry
    app.state.dispatcher = dispatcher
    app.state.dataspace = dataspace
    return app


def app_from_env() -> Starlette:
    """Factory for the HTTP server's workers: each process reads its Settings from KIZUNA_*
    variables, and a worker process ends with the node that spawned it."""
    die_with_supervisor()
    return create_app(Settings.from_env())
