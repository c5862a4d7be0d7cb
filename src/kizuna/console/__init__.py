"""The web console (issue 17): its pages (:mod:`.routes`, static files over the node's public
APIs) and the live stream of entity changes they show (:mod:`.events`, the service;
:mod:`.event_routes`, Server-Sent Events over HTTP). See docs/console.md."""
