"""A dynamic road risk service that sits on a node's public API like any application would:
subscriptions in, ``RoadSegmentRisk`` entities out (docs/risk.md)."""
