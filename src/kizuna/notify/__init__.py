"""Notifications that are never lost: matching inside the write transaction (:mod:`.matching`),
an outbox in the store, and a dispatcher that delivers it (:mod:`.dispatcher`, :mod:`.senders`)."""
