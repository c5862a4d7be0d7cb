"""The dataspace HTTP edge: ``/.well-known/dspace-version``, the DSP 2025-1 HTTPS binding under
``/dsp`` (provider endpoints and consumer callbacks share paths: the node's callbackAddress is
its own ``/dsp`` base and every pid names one process of the node), the pull data plane under
``/dsp/data``, and the management API under ``/management/v1`` (plain JSON).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kizuna import paths
from kizuna.access.grants import Grants
from kizuna.config import Settings
from kizuna.dataspace import catalog as catalog_mod
from kizuna.dataspace import messages, negotiation, odrl, transfer
from kizuna.dataspace.auth import Directory, ParticipantAuth, make_auth
from kizuna.dataspace.catalog import CatalogService
from kizuna.dataspace.core import (
    AGREEMENT,
    FollowUp,
    Messenger,
    Node,
    Records,
    dsp_base,
    pull,
    run_follow_ups,
)
from kizuna.dataspace.dataplane import DataPlane
from kizuna.dataspace.negotiation import NegotiationService, _unreachable
from kizuna.dataspace.sealing import Sealer
from kizuna.dataspace.transfer import TransferService
from kizuna.errors import (
    BadRequestData,
    CatalogError,
    CounterpartyError,
    CounterpartyFailed,
    DspError,
    NegotiationError,
    NgsiLdError,
    ResourceNotFound,
    TransferError,
    Unauthenticated,
    Unauthorized,
)
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild.edge import subject_of
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.selection import MAX_OFFSET
from kizuna.ngsild.subscriptions import SubscriptionService
from kizuna.ngsild.temporal import TemporalService
from kizuna.outbound import OutboundGate
from kizuna.store import Store

JSON = "application/json"
TEMPORAL_PARAMS = frozenset({"timerel", "timeAt", "endTimeAt", "lastN", "timeproperty"})


def _json(
    body: Any, status: int = 200, follow_ups: list[FollowUp] | None = None, headers: Any = None
) -> Response:
    task = BackgroundTask(run_follow_ups, follow_ups) if follow_ups else None
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, background=task, headers=headers)


class DataspaceApi:
    def __init__(
        self,
        node: Node,
        auth: ParticipantAuth,
        entities: EntityService,
        contexts: ContextRegistry,
        subscriptions: SubscriptionService | None,
        grants: Grants,
        temporal: TemporalService | None = None,
    ) -> None:
        self.node = node
        self.auth = auth
        self.dataplane = DataPlane(node, entities, contexts, subscriptions, self.facts_for, grants, temporal)
        self.catalog = CatalogService(node, self.dataplane.publication_changed)
        self.negotiations = NegotiationService(
            node, self.catalog, self.facts_for, self.dataplane.agreement_changed
        )
        self.transfers = TransferService(node, self.catalog, self.dataplane)

    def facts_for(self, participant_id: str | None) -> odrl.Facts:
        known = self.node.directory.describe(participant_id)
        return odrl.Facts(assignee=participant_id, region=known.region, memberships=known.memberships)

    # -- the edge ------------------------------------------------------------------------------

    async def _incoming(self, request: Request, error: type[DspError]) -> tuple[Any, str | None]:
        """The JSON body (None for GET) and the authenticated sender (None with auth off)."""
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            sender, raw = await self.auth.identify(request.method, path, headers, request.body)
        except Unauthenticated as failure:
            raise Unauthorized(str(failure)) from None
        if request.method == "GET":
            return None, sender
        try:
            return request.app.state.limits.parse(raw), sender
        except NgsiLdError as refused:
            raise error(refused.detail) from None

    async def answers_catalog(self, request: Request) -> bool:
        """Whether the DSP catalog would answer this request's sender (a trusted participant's
        signed token, or anyone with DSP authentication off): the portals' listings show such a
        caller every dataset, and others the open ones only (:mod:`kizuna.catalogs.listing`)."""
        try:
            await self._incoming(request, CatalogError)
        except (Unauthorized, CatalogError):
            return False
        return True

    # -- version & catalog ---------------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        body = {
            "protocolVersions": [
                {
                    "version": "2025-1",
                    "path": paths.DSP,
                    "binding": "HTTPS",
                    "auth": {
                        "protocol": "kizuna-signed-request" if not _auth_off(self.auth) else "none",
                        "version": "1",
                    },
                }
            ]
        }
        return _json(messages.check(body, "VersionResponse"))

    async def catalog_request(self, request: Request) -> Response:
        body, _ = await self._incoming(request, CatalogError)
        offset = _int(request, "offset", 0, CatalogError)
        limit = _int(request, "limit", 50, CatalogError)
        if limit < 1 or limit > 500:
            raise CatalogError("limit must be between 1 and 500")
        catalog, total = await self.catalog.catalog(body, offset, limit)
        links = []
        base = str(request.url.replace(query=""))
        if offset + limit < total:
            links.append(f'<{base}?offset={offset + limit}&limit={limit}>; rel="next"')
        if offset > 0:
            links.append(f'<{base}?offset={max(0, offset - limit)}&limit={limit}>; rel="previous"')
        return _json(catalog, headers={"Link": ", ".join(links)} if links else None)

    async def dataset(self, request: Request) -> Response:
        await self._incoming(request, CatalogError)
        return _json(await self.catalog.dataset(request.path_params["dataset_id"]))

    # -- negotiations ---------------------------------------------------------------------------

    async def get_negotiation(self, request: Request) -> Response:
        _, sender = await self._incoming(request, NegotiationError)
        return _json(negotiation.ack(await self.negotiations.get(request.path_params["pid"], sender)))

    async def negotiation_request(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        answer, follow_ups = await self.negotiations.receive_request(body, sender)
        return _json(answer, 201, follow_ups)

    async def negotiation_offers(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        answer, follow_ups = await self.negotiations.receive_offer(body, sender)
        return _json(answer, 201, follow_ups)

    async def negotiation_counter_request(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        answer, follow_ups = await self.negotiations.receive_request(body, sender, request.path_params["pid"])
        return _json(answer, 200, follow_ups)

    async def negotiation_counter_offer(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        answer, follow_ups = await self.negotiations.receive_offer(body, sender, request.path_params["pid"])
        return _json(answer, 200, follow_ups)

    async def negotiation_events(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        follow_ups = await self.negotiations.receive_event(request.path_params["pid"], body, sender)
        return await self._negotiation_state(request.path_params["pid"], follow_ups)

    async def negotiation_verification(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        follow_ups = await self.negotiations.receive_verification(request.path_params["pid"], body, sender)
        return await self._negotiation_state(request.path_params["pid"], follow_ups)

    async def negotiation_agreement(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        follow_ups = await self.negotiations.receive_agreement(request.path_params["pid"], body, sender)
        return await self._negotiation_state(request.path_params["pid"], follow_ups)

    async def negotiation_termination(self, request: Request) -> Response:
        body, sender = await self._incoming(request, NegotiationError)
        await self.negotiations.receive_termination(request.path_params["pid"], body, sender)
        return await self._negotiation_state(request.path_params["pid"], [])

    async def _negotiation_state(self, pid: str, follow_ups: list[FollowUp]) -> Response:
        return _json(negotiation.ack(await self.negotiations.get(pid)), 200, follow_ups)

    # -- transfers ------------------------------------------------------------------------------

    async def get_transfer(self, request: Request) -> Response:
        _, sender = await self._incoming(request, TransferError)
        return _json(transfer.ack(await self.transfers.get(request.path_params["pid"], sender)))

    async def transfer_request(self, request: Request) -> Response:
        body, sender = await self._incoming(request, TransferError)
        answer, follow_ups = await self.transfers.receive_request(body, sender)
        return _json(answer, 201, follow_ups)

    def _transfer_message(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body, sender = await self._incoming(request, TransferError)
            pid = request.path_params["pid"]
            await self.transfers.receive(pid, kind, body, sender)
            return _json(transfer.ack(await self.transfers.get(pid)))

        return endpoint

    # -- data plane -----------------------------------------------------------------------------

    async def data_entities(self, request: Request) -> Response:
        return await self._data(request, temporal=False)

    async def data_temporal_entities(self, request: Request) -> Response:
        return await self._data(request, temporal=True)

    async def _data(self, request: Request, *, temporal: bool) -> Response:
        """A pull: the agreed data, narrowed by the consumer's ``q`` (over agreed attributes) and,
        for temporal history, by ``timerel``/``timeAt``/``endTimeAt``/``lastN``/``timeproperty``."""
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        options = set(request.query_params.get("options", "").split(","))
        limit = _int(request, "limit", 100, None)
        if not 1 <= limit <= 1000:
            raise BadRequestData("limit must be between 1 and 1000")
        entities, info = await self.dataplane.pull(
            token,
            purpose=request.headers.get("kizuna-purpose") or request.query_params.get("purpose"),
            limit=limit,
            offset=_int(request, "offset", 0, None),
            key_values="keyValues" in options,
            q=request.query_params.get("q") or None,
            temporal={k: v for k, v in request.query_params.items() if k in TEMPORAL_PARAMS}
            if temporal
            else None,
        )
        headers = {"Kizuna-Access-Count": str(info["accessCount"]), "Kizuna-Agreement": info["agreementId"]}
        if info["duties"]:
            headers["Kizuna-Duties"] = ",".join(info["duties"])
        return _json(entities, headers=headers)

    # -- management -----------------------------------------------------------------------------

    async def m_create_dataset(self, request: Request) -> Response:
        dataset = await self.catalog.create(subject_of(request), await plain_json(request))
        return _json(catalog_mod.management_view(dataset), 201)

    async def m_list_datasets(self, request: Request) -> Response:
        return _json([catalog_mod.management_view(d) for d in await self.catalog.list()])

    async def m_get_dataset(self, request: Request) -> Response:
        return _json(catalog_mod.management_view(await self.catalog.get(request.path_params["dataset_id"])))

    async def m_delete_dataset(self, request: Request) -> Response:
        await self.catalog.delete(subject_of(request), request.path_params["dataset_id"])
        return Response(status_code=204)

    async def m_remote_catalog(self, request: Request) -> Response:
        """Consumer convenience: fetch a counterparty's catalog (the request is signed by us)."""
        body = await plain_json(request)
        address = string_member(body, "counterPartyAddress")
        await self.node.messenger.vet(address, "counterPartyAddress")
        try:
            remote = await self.node.messenger.post(
                address, "catalog/request", messages.message("CatalogRequestMessage")
            )
        except CounterpartyError as error:
            raise _unreachable(error) from None
        if not isinstance(remote, dict) or remote.get("@type") != "Catalog":
            raise CounterpartyFailed(f"{address} did not answer a DSP Catalog")
        return _json(remote)

    async def m_start_negotiation(self, request: Request) -> Response:
        body = await plain_json(request)
        offer = body.get("offer")
        if not isinstance(offer, dict):
            raise BadRequestData("offer must be the offer object as seen in the remote catalog")
        counterparty = body.get("counterPartyId")
        if counterparty is not None and not isinstance(counterparty, str):
            raise BadRequestData("counterPartyId must be a string")
        record = await self.negotiations.start(
            string_member(body, "counterPartyAddress"), counterparty, offer, body.get("approval", "auto")
        )
        return _json({"id": record["id"], "state": record["state"]}, 201)

    async def m_list_negotiations(self, request: Request) -> Response:
        return _json([negotiation.management_view(r) for r in await self.negotiations.list() if r["state"]])

    async def m_get_negotiation(self, request: Request) -> Response:
        return _json(
            negotiation.management_view(await _mgmt(self.negotiations.get(request.path_params["pid"])))
        )

    async def m_negotiation_action(self, request: Request) -> Response:
        pid, action = request.path_params["pid"], request.path_params["action"]
        body = await plain_json(request, optional=True)
        service = self.negotiations
        actions: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "offer": lambda: service.offer(pid, body.get("offer")),
            "agree": lambda: service.agree(pid),
            "finalize": lambda: service.finalize(pid),
            "terminate": lambda: service.terminate(
                pid, body.get("reason") or "Terminated by the participant"
            ),
            "request": lambda: service.counter_offer(pid, body.get("offer")),
            "accept": lambda: service.accept(pid),
            "verify": lambda: service.verify(pid),
        }
        if action not in actions:
            raise ResourceNotFound(f"No negotiation action {action}")
        record = await _mgmt(actions[action]())
        return _json(negotiation.management_view(record))

    async def m_list_agreements(self, request: Request) -> Response:
        agreements, _ = await self.node.records.list(AGREEMENT)
        return _json(agreements)

    async def m_get_agreement(self, request: Request) -> Response:
        agreement = await self.node.records.get(AGREEMENT, request.path_params["agreement_id"])
        if agreement is None:
            raise ResourceNotFound(f"No agreement {request.path_params['agreement_id']}")
        return _json(agreement)

    async def m_start_transfer(self, request: Request) -> Response:
        body = await plain_json(request)
        record = await _mgmt(
            self.transfers.request(
                string_member(body, "counterPartyAddress"),
                string_member(body, "agreementId"),
                string_member(body, "format"),
                optional_string(body, "endpoint"),
                optional_string(body, "counterPartyId"),
                optional_string(body, "purpose"),
            )
        )
        return _json({"id": record["id"], "state": record["state"]}, 201)

    async def m_list_transfers(self, request: Request) -> Response:
        return _json([transfer.management_view(r) for r in await self.transfers.list() if r["state"]])

    async def m_get_transfer(self, request: Request) -> Response:
        return _json(transfer.management_view(await _mgmt(self.transfers.get(request.path_params["pid"]))))

    async def m_pull(self, request: Request) -> Response:
        """Read the provider's data under a pull transfer; the node holds its token."""
        record = await _mgmt(self.transfers.get(request.path_params["pid"]))
        url, token = transfer.pull_address(record, request.path_params["rest"], self.node.sealer)
        try:
            pulled = await pull(
                self.node.messenger.client,
                url,
                token,
                list(request.query_params.multi_items()),
                request.headers.get("kizuna-purpose"),
            )
        except CounterpartyError as error:
            raise CounterpartyFailed(str(error)) from None
        return Response(pulled.content, status_code=pulled.status, headers=pulled.headers)

    async def m_transfer_action(self, request: Request) -> Response:
        pid, action = request.path_params["pid"], request.path_params["action"]
        body = await plain_json(request, optional=True)
        service = self.transfers
        actions: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "start": lambda: service.start(pid),
            "resume": lambda: service.start(pid),
            "suspend": lambda: service.suspend(pid, body.get("reason") or "Suspended by the participant"),
            "complete": lambda: service.complete(pid),
            "terminate": lambda: service.terminate(
                pid, body.get("reason") or "Terminated by the participant"
            ),
        }
        if action not in actions:
            raise ResourceNotFound(f"No transfer action {action}")
        return _json(transfer.management_view(await _mgmt(actions[action]())))

    def version_route(self) -> Route:
        """Served at the root, outside every API, as DSP's version discovery requires."""
        return Route("/.well-known/dspace-version", self.version, methods=["GET"])

    def protocol_routes(self) -> list[BaseRoute]:
        """The DSP endpoints, relative to ``/dsp``; callers prove themselves with DSP tokens."""
        t = self._transfer_message
        return [
            Route("/catalog/request", self.catalog_request, methods=["POST"]),
            Route("/catalog/datasets/{dataset_id:path}", self.dataset, methods=["GET"]),
            Route("/negotiations/request", self.negotiation_request, methods=["POST"]),
            Route("/negotiations/offers", self.negotiation_offers, methods=["POST"]),
            Route("/negotiations/{pid}", self.get_negotiation, methods=["GET"]),
            Route("/negotiations/{pid}/request", self.negotiation_counter_request, methods=["POST"]),
            Route("/negotiations/{pid}/offers", self.negotiation_counter_offer, methods=["POST"]),
            Route("/negotiations/{pid}/events", self.negotiation_events, methods=["POST"]),
            Route(
                "/negotiations/{pid}/agreement/verification",
                self.negotiation_verification,
                methods=["POST"],
            ),
            Route("/negotiations/{pid}/agreement", self.negotiation_agreement, methods=["POST"]),
            Route("/negotiations/{pid}/termination", self.negotiation_termination, methods=["POST"]),
            Route("/transfers/request", self.transfer_request, methods=["POST"]),
            Route("/transfers/{pid}", self.get_transfer, methods=["GET"]),
            Route("/transfers/{pid}/start", t(transfer.START), methods=["POST"]),
            Route("/transfers/{pid}/completion", t(transfer.COMPLETE), methods=["POST"]),
            Route("/transfers/{pid}/suspension", t(transfer.SUSPEND), methods=["POST"]),
            Route("/transfers/{pid}/termination", t(transfer.TERMINATE), methods=["POST"]),
            Route("/data/entities", self.data_entities, methods=["GET"]),
            Route("/data/temporal/entities", self.data_temporal_entities, methods=["GET"]),
        ]

    def management_routes(self) -> list[BaseRoute]:
        """The connector's own API, relative to ``/management/v1``: node administrators only."""
        return [
            Route("/datasets", self.m_create_dataset, methods=["POST"]),
            Route("/datasets", self.m_list_datasets, methods=["GET"]),
            Route("/datasets/{dataset_id:path}", self.m_get_dataset, methods=["GET"]),
            Route("/datasets/{dataset_id:path}", self.m_delete_dataset, methods=["DELETE"]),
            Route("/catalog/request", self.m_remote_catalog, methods=["POST"]),
            Route("/negotiations", self.m_start_negotiation, methods=["POST"]),
            Route("/negotiations", self.m_list_negotiations, methods=["GET"]),
            Route("/negotiations/{pid}", self.m_get_negotiation, methods=["GET"]),
            Route("/negotiations/{pid}/{action}", self.m_negotiation_action, methods=["POST"]),
            Route("/agreements", self.m_list_agreements, methods=["GET"]),
            Route("/agreements/{agreement_id}", self.m_get_agreement, methods=["GET"]),
            Route("/transfers", self.m_start_transfer, methods=["POST"]),
            Route("/transfers", self.m_list_transfers, methods=["GET"]),
            Route("/transfers/{pid}", self.m_get_transfer, methods=["GET"]),
            Route("/transfers/{pid}/data/{rest:path}", self.m_pull, methods=["GET"]),
            Route("/transfers/{pid}/{action}", self.m_transfer_action, methods=["POST"]),
        ]


def _auth_off(auth: ParticipantAuth) -> bool:
    return type(auth).__name__ == "NoAuth"


def _int(request: Request, name: str, default: int, error: type[DspError] | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
        if not 0 <= value <= MAX_OFFSET:
            raise ValueError
        return value
    except ValueError:
        detail = f"{name} must be an integer from 0 to {MAX_OFFSET}"
        raise (error(detail) if error else BadRequestData(detail)) from None


def string_member(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequestData(f"{name} must be a non-empty string")
    return value


def optional_string(body: dict[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else string_member(body, name)


async def plain_json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw and optional:
        return {}
    body = request.app.state.limits.parse(raw)
    if not isinstance(body, dict):
        raise BadRequestData("The body must be a JSON object")
    return body


async def _mgmt(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Management calls answer ProblemDetails, not DSP error messages."""
    try:
        return await call
    except DspError as error:
        if error.status == 404:
            raise ResourceNotFound(error.detail) from None
        raise BadRequestData(error.detail) from None


def build(
    settings: Settings,
    store: Store,
    entities: EntityService,
    contexts: ContextRegistry,
    subscriptions: SubscriptionService | None,
    grants: Grants,
    gate: OutboundGate,
) -> DataspaceApi:
    """The dataspace half of a node, from the settings."""
    directory = Directory.load(settings.dsp_trusted_participants)
    records = Records(store)
    auth = make_auth(
        settings.dsp_auth,
        settings.participant_id,
        settings.dsp_key_file,
        directory,
        records.first_use,
        dsp_base(settings.public_base_url),
    )
    messenger = Messenger(auth, gate, timeout=settings.dsp_timeout)
    node = Node(
        participant_id=settings.participant_id,
        public_url=settings.public_base_url,
        records=records,
        messenger=messenger,
        directory=directory,
        audit=grants.audit,
        sealer=Sealer.from_key_file(settings.dsp_key_file),
        token_lifetime=settings.dsp_token_lifetime,
    )
    temporal = TemporalService(store, entities.policy, instance_limit=settings.temporal_instance_limit)
    return DataspaceApi(node, auth, entities, contexts, subscriptions, grants, temporal)
