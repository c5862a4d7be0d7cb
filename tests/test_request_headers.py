from kizuna.request_headers import header

SCOPE = {"headers": [(b"accept", b"application/json"), (b"via", b"1.1 a"), (b"via", b"1.1 b")]}


def test_a_header_is_found_whatever_the_case_of_the_name_asked_for() -> None:
    assert header(SCOPE, "Accept") == "application/json"
    assert header(SCOPE, "accept") == "application/json"


def test_the_first_of_repeated_headers_is_the_value_as_starlette_gives_it() -> None:
    assert header(SCOPE, "via") == "1.1 a"


def test_an_absent_header_is_the_default() -> None:
    assert header(SCOPE, "link") is None
    assert header(SCOPE, "ngsild-tenant", "") == ""


def test_values_are_latin_1_as_http_carries_them() -> None:
    assert header({"headers": [(b"x-name", "Dü".encode("latin-1"))]}, "x-name") == "Dü"
