"""Every family ``GET /metrics`` shows (docs/operations.md, "Metrics"), defined once.

What is counted as it happens (requests, notifications, fetches, decisions) is module-level, as
prometheus_client's idiom is: any layer counts with one call, without being handed an object
down four constructors. Label values are bounded by construction (route templates, channels,
states, registrations), and the children of fixed label values are made here, once, so that a
hot path never builds a label tuple.

What lives in the store (the outbox, the DSP processes' states) is never counted in memory:
:func:`exposition` reads it from :class:`~kizuna.store.Vitals` at scrape time, so every worker
tells the same truth and a restart loses nothing.

With several workers ``kizuna serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (a private directory it
creates and removes) before any worker imports this module: prometheus_client then keeps each
process's counts in files there, and a scrape answered by any worker adds them all up.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kizuna.processes import alive
from kizuna.store import Vitals

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

REGISTRY = CollectorRegistry(auto_describe=True)
disable_created_metrics()  # a ``_created`` series per counter doubles the series and says little

# Requests take from a tenth of a millisecond (health, a cached entity) to seconds (big queries).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "kizuna_http_requests",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "kizuna_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ("route", "method"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STORE_TRANSACTION = Histogram(
    "kizuna_store_transaction_duration_seconds",
    "Write transactions, from asking for the write lock (SQLite) or a pooled connection"
    " (PostgreSQL) to the commit or rollback",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
POOL_SIZE = Gauge(
    "kizuna_store_pool_size_connections",
    "Connections the PostgreSQL pools of the live workers hold",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_IN_USE = Gauge(
    "kizuna_store_pool_in_use_connections",
    "Pooled PostgreSQL connections lent out now, summed over the live workers",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
PROCESS_START = Gauge(
    "kizuna_process_start_time_seconds",
    "When each live worker process started (POSIX seconds; a pid label with several workers)",
    multiprocess_mode="liveall",
    registry=REGISTRY,
)

CHANNELS = ("http", "mqtt")
_sent = Counter(
    "kizuna_notifications_sent",
    "Notifications a subscriber took, by channel",
    ("channel",),
    registry=REGISTRY,
)
_failed = Counter(
    "kizuna_notifications_failed",
    "Notification attempts that failed (refused, unreachable, non-2xx), by channel",
    ("channel",),
    registry=REGISTRY,
)
_retried = Counter(
    "kizuna_notifications_retried",
    "Failed outbox notifications scheduled for another attempt, by channel",
    ("channel",),
    registry=REGISTRY,
)
NOTIFICATIONS_SENT = {channel: _sent.labels(channel) for channel in CHANNELS}
NOTIFICATIONS_FAILED = {channel: _failed.labels(channel) for channel in CHANNELS}
NOTIFICATIONS_RETRIED = {channel: _retried.labels(channel) for channel in CHANNELS}

CONTEXT_CACHE_HITS = Counter(
    "kizuna_context_cache_hits",
    "Non-core @contexts resolved from the compiled cache",
    registry=REGISTRY,
)
CONTEXT_CACHE_MISSES = Counter(
    "kizuna_context_cache_misses",
    "Non-core @contexts that had to be resolved (and remote ones fetched) and compiled",
    registry=REGISTRY,
)
CONTEXT_FETCH_FAILURES = Counter(
    "kizuna_context_fetch_failures",
    "Remote @context fetches that failed (unreachable, non-200, too large, not a context)",
    registry=REGISTRY,
)

FORWARDED = Counter(
    "kizuna_forwarded_requests",
    "Requests forwarded to context sources, by registration and outcome (2xx, 3xx, 4xx, 5xx,"
    " unreachable, refused)",
    ("source", "outcome"),
    registry=REGISTRY,
)

_accesses = Counter(
    "kizuna_dsp_agreement_accesses",
    "Data accesses under agreements (pulls, push notifications), allowed and counted or denied",
    ("outcome",),
    registry=REGISTRY,
)
ACCESS_ALLOWED, ACCESS_DENIED = _accesses.labels("allowed"), _accesses.labels("denied")

_decisions = Counter(
    "kizuna_auth_decisions",
    "Requests on authenticated APIs allowed, or denied (401, 403, or refusals a status does not"
    " show, as the audit trail records them)",
    ("decision",),
    registry=REGISTRY,
)
AUTH_ALLOWED, AUTH_DENIED = _decisions.labels("allowed"), _decisions.labels("denied")

# The families read from the store at scrape time; the DSP ones by document kind (those of
# kizuna.dataspace.core, which counts accesses here and so cannot be imported).
OUTBOX_ROWS = "kizuna_notification_outbox_rows"
OUTBOX_AGE = "kizuna_notification_outbox_oldest_age_seconds"
DSP_STATE_FAMILIES = {
    "dsp.negotiation": ("kizuna_dsp_negotiations", "Contract negotiations this node takes part in, by state"),
    "dsp.transfer": ("kizuna_dsp_transfers", "Transfer processes this node takes part in, by state"),
}


def started() -> None:
    """A worker is serving: it shows in ``kizuna_process_start_time_seconds``."""
    PROCESS_START.set(time.time())


def stopped() -> None:
    """A worker stops: its live gauges (pool, start time) leave the sums; counts stay."""
    if MULTIPROCESS_DIR is not None:
        multiprocess.mark_process_dead(os.getpid(), MULTIPROCESS_DIR)


def pool_used(usage: tuple[int, int] | None) -> None:
    """This process's pool (size, in use), sampled after each write and at each scrape."""
    if usage is not None:
        POOL_SIZE.set(usage[0])
        POOL_IN_USE.set(usage[1])


def exposition(vitals: Vitals, states: Mapping[str, Iterable[str]], now: float) -> bytes:
    """The text of one scrape: the counted families (of every worker) and the store's vitals;
    ``states`` names each DSP kind's states, so that a state no process is in shows 0."""
    return generate_latest(_Scrape(vitals, states, now))


class _Scrape(Collector):
    def __init__(self, vitals: Vitals, states: Mapping[str, Iterable[str]], now: float) -> None:
        self.vitals = vitals
        self.states = states
        self.now = now

    def collect(self) -> Iterator[Metric]:
        if MULTIPROCESS_DIR is None:
            yield from REGISTRY.collect()
        else:
            _forget_dead_workers(MULTIPROCESS_DIR)
            yield from multiprocess.MultiProcessCollector(None, MULTIPROCESS_DIR).collect()
        vitals = self.vitals
        yield GaugeMetricFamily(
            OUTBOX_ROWS, "Changes committed and not yet notified to every subscription", vitals.outbox_rows
        )
        oldest = 0.0 if vitals.oldest_outbox is None else max(0.0, self.now - vitals.oldest_outbox)
        yield GaugeMetricFamily(OUTBOX_AGE, "Age of the oldest undelivered notification (0: none)", oldest)
        for kind, names in self.states.items():
            name, help_text = DSP_STATE_FAMILIES[kind]
            family = GaugeMetricFamily(name, help_text, labels=("state",))
            for state in names:
                family.add_metric((state,), vitals.states.get((kind, state), 0))
            yield family


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def _forget_dead_workers(path: str) -> None:
    """A worker that was killed never said so: its live gauges go once its pid is gone."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        found = _LIVE_FILE.search(name)
        if found is not None and not alive(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), path)
