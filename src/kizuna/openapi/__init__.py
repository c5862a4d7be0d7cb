"""The node's APIs as one OpenAPI 3.1 document (``GET /openapi.json``).

:mod:`~kizuna.openapi.operations` says what each operation is (a few lines per route),
:mod:`~kizuna.openapi.schemas` what its bodies look like, and
:mod:`~kizuna.openapi.document` joins that with the app's own route table, so the document lists
exactly the routes the node serves (``tests/test_openapi.py`` fails on a route without a
description and on a description without a route).
"""
