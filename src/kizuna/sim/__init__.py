"""Duisburg in a box: a simulated city's IoT platform that drives a node through its public API.

The model (``geography``, ``sun``, ``city``) is pure: the city's state stepped by a clock,
deterministic for a seed, no I/O but reading its bundled data. ``driver`` is the only part
that speaks HTTP. docs/simulator.md is the manual.
"""
