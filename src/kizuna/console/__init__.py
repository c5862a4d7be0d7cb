"""The web console (issue 17): the live stream of entity changes it shows (:mod:`.events`, the
service; :mod:`.event_routes`, Server-Sent Events over HTTP). See docs/console.md."""
