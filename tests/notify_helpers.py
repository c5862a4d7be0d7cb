"""Helpers for the notification tests: a scriptable HTTP receiver and a real mosquitto."""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {check}")
        time.sleep(interval)


class Receiver:
    """A subscriber on a loopback port. ``script`` holds what to do with the next requests:
    ``"500"``, ``"hang"`` (no answer for ``hang_seconds``), ``"close"`` (drop the connection) or
    ``"slow"`` (take the notification, as ``received`` shows at once, and answer after
    ``hang_seconds``)."""

    def __init__(self, port: int = 0, hang_seconds: float = 2.0) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.attempts = 0
        self.script: list[str] = []
        self.hang_seconds = hang_seconds
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                with receiver.lock:
                    receiver.attempts += 1
                    action = receiver.script.pop(0) if receiver.script else "ok"
                if action == "close":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "hang":
                    time.sleep(receiver.hang_seconds)
                    self.close_connection = True
                    return
                if action == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received.append(
                        ({k.lower(): v for k, v in self.headers.items()}, json.loads(raw))
                    )
                if action == "slow":
                    time.sleep(receiver.hang_seconds)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.request_queue_size = 1024
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.received]

    def entities(self) -> list[dict[str, Any]]:
        return [item for body in self.bodies for item in body["data"]]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.bodies) >= n, timeout)
        return self.bodies

    def wait_for_entities(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Changes queued while a notification is in flight may arrive together in the next one:
        count entities, not notifications, where the test is about what is notified."""
        wait_until(lambda: len(self.entities()) >= n, timeout)
        return self.entities()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mosquitto:
    """A real broker on a free loopback port with a temporary configuration."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            raise AssertionError(
                "mosquitto is not installed: the MQTT tests need it (apt-get install mosquitto; .ci/run does)"
            )
        self.port = port or free_port()
        config = tmp / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {tmp}/\n"
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 10)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


@contextlib.contextmanager
def mqtt_listener(
    port: int, topic: str, protocol: int, durable: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Collect the JSON messages published on ``topic`` (paho, MQTT 3.1.1 = 4 or 5); with
    ``durable`` (a client id, MQTT 3.1.1) the session outlives disconnections and broker restarts."""
    import paho.mqtt.client as mqtt

    messages: list[dict[str, Any]] = []
    subscribed = threading.Event()
    if durable:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, durable, clean_session=False, protocol=protocol
        )
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.on_message = lambda _c, _u, msg: messages.append(json.loads(msg.payload))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "MQTT subscriber did not subscribe"
        yield messages
    finally:
        client.loop_stop()
        client.disconnect()
