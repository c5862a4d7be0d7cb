"""Delivery of one notification over HTTP (:mod:`kizuna.notify.http1`), HTTPS (httpx) or MQTT
(aiomqtt, MQTT 3.1.1 and 5).

A sender raises :class:`DeliveryError` for anything that is not a success (a non-2xx status, a
timeout, a refused or closed connection, an address the outbound gate refuses), so the
dispatcher retries it. Its reason is the gate's summary: a subscriber learns that its endpoint
could not be reached, not how a port on the node's network answered.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from kizuna.errors import DeliveryError
from kizuna.metrics import NOTIFICATIONS_FAILED, NOTIFICATIONS_SENT
from kizuna.notify.http1 import PlainHttp
from kizuna.outbound import UNREACHABLE, OutboundGate, summary


@dataclass(slots=True)
class Message:
    """A notification ready to go: the body and the headers (HTTP) or metadata (MQTT)."""

    uri: str
    body: dict[str, Any]
    headers: dict[str, str]
    timeout: float
    notifier_info: dict[str, str] = field(default_factory=dict)


# httpcore's pool walks all its connections (a socket check each) for every request it queues:
# with 100 subscribers' requests under way in one pool, that walk took a third of the
# dispatcher's time in a py-spy profile. Requests take the pools in turn, each holding an eighth:
# 100 tasks x 20 POSTs to a local receiver took 5.3-5.7 s of CPU with 8 pools, 8.6-9.4 s with one.
POOLS = 8
# What a plain HTTP exchange may raise besides OSError: an answer cut short, a line too long.
BROKEN_ANSWER = (EOFError, ValueError, asyncio.LimitOverrunError)


class HttpSender:
    def __init__(self, gate: OutboundGate) -> None:
        self._plain = PlainHttp(gate)
        # Per-request timeouts keep a slow subscriber from holding others.
        limits = httpx.Limits(max_connections=512 // POOLS, max_keepalive_connections=128 // POOLS)
        self._clients = [gate.client(limits=limits) for _ in range(POOLS)]
        self._turn = itertools.cycle(self._clients)

    async def send(self, message: Message) -> int:
        body = orjson.dumps(message.body)
        try:
            if message.uri[:7].lower() == "http://":
                status = await self._plain.post(message.uri, message.headers, body, message.timeout)
            else:
                response = await next(self._turn).post(
                    message.uri, content=body, headers=message.headers, timeout=httpx.Timeout(message.timeout)
                )
                status = response.status_code
        except (*UNREACHABLE, *BROKEN_ANSWER) as exc:
            raise DeliveryError(summary(exc)) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")
        return status

    async def close(self) -> None:
        await self._plain.close()
        for client in self._clients:
            await client.aclose()


class MqttSender:
    """Publishes ``{"metadata": {...headers}, "body": notification}`` to the topic the URI's path
    names (clause 7.x binding). ``notifierInfo`` ``MQTT-Version`` (``mqtt3.1.1``, the default, or
    ``mqtt5.0``) and ``MQTT-QoS`` (0, 1, 2) choose the protocol and quality of service.

    The broker's address goes through the gate; plain MQTT connects to the checked address,
    MQTTS to the name (its certificate is verified against the name, which a rebinding to an
    internal host cannot satisfy)."""

    def __init__(self, gate: OutboundGate) -> None:
        self.gate = gate

    async def send(self, message: Message) -> int:
        import aiomqtt

        try:
            parts = urlsplit(message.uri)
            port = parts.port
        except ValueError:
            raise DeliveryError(f"MQTT endpoint {message.uri} is not a valid URL") from None
        topic = unquote(parts.path.lstrip("/"))
        if not topic or parts.hostname is None:
            raise DeliveryError(f"MQTT endpoint {message.uri} names no host or topic")
        secure = parts.scheme.lower() == "mqtts"
        version = message.notifier_info.get("MQTT-Version", "mqtt3.1.1")
        try:
            qos = int(message.notifier_info.get("MQTT-QoS", "0"))
        except ValueError:
            qos = 0
        payload = orjson.dumps({"metadata": message.headers, "body": message.body})
        port = port or (8883 if secure else 1883)
        try:
            async with asyncio.timeout(message.timeout):
                address = await self.gate.resolve(parts.hostname, port)
                async with aiomqtt.Client(
                    parts.hostname if secure else address,
                    port,
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password else None,
                    protocol=aiomqtt.ProtocolVersion.V5
                    if version == "mqtt5.0"
                    else aiomqtt.ProtocolVersion.V311,
                    tls_context=ssl.create_default_context() if secure else None,
                    timeout=message.timeout,
                ) as client:
                    await client.publish(topic, payload, qos=min(max(qos, 0), 2))
        except (aiomqtt.MqttError, TimeoutError, ValueError, *UNREACHABLE) as exc:
            raise DeliveryError(f"MQTT: {summary(exc)}") from None
        return 0

    async def close(self) -> None:
        return None


def channel_of(uri: str) -> str:
    """``mqtt`` or ``http``: the sender, and the ``channel`` label of the notification metrics."""
    return "mqtt" if uri.split(":", 1)[0].lower() in ("mqtt", "mqtts") else "http"


class Senders:
    """Every notification (outbox, periodic, csource) goes out here, so it is counted here."""

    def __init__(self, gate: OutboundGate) -> None:
        self.http = HttpSender(gate)
        self.mqtt = MqttSender(gate)

    async def send(self, message: Message) -> int:
        channel = channel_of(message.uri)
        try:
            status = await (self.mqtt if channel == "mqtt" else self.http).send(message)
        except DeliveryError:
            NOTIFICATIONS_FAILED[channel].inc()
            raise
        NOTIFICATIONS_SENT[channel].inc()
        return status

    async def close(self) -> None:
        await self.http.close()
        await self.mqtt.close()
