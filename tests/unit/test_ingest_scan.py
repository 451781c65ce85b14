"""The fast paths of intake validation refuse exactly what the reference rules refuse, naming the same field."""

from __future__ import annotations

import base64
import re
import typing
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import events as ev
from pipeline.errors import DomainError
from pipeline.ingest import logic

# Strings that trip each rule, mixed with ordinary ones.
TEXTS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "\ud800",
            "ok \udfff",
            "data:,x",
            "see DATA:image/png;base64,AAAA",
            "metadata: fine",
            "Q" * logic.MIN_BASE64_RUN,
            "Q" * (logic.MIN_BASE64_RUN - 1),
            "caf\u00e9",
            "https://example.com/" + "a" * logic.MIN_BASE64_RUN,
        ]
    ),
)
KEYS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        ["image", "Photos", "urls", "value", "seen_at_url", "profile_urls", "\ud800", "caf\u00e9"]
    ),
)
JSON: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXTS),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)),
    max_leaves=30,
)


def _outcome(scan: Any, value: Any) -> tuple[str, str | None, str] | None:
    try:
        scan(value)
    except DomainError as exc:
        return (str(exc), exc.field, exc.reason)
    return None


def _nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_fast_scan_refuses_what_the_reference_walk_refuses(value: Any) -> None:
    """scan_json's fast check and the path-keeping walk agree on every value, error and field alike."""
    assert _outcome(logic.scan_json, value) == _outcome(logic._scan_json_naming, value)


@pytest.mark.parametrize("depth", [logic.MAX_DEPTH - 1, logic.MAX_DEPTH, logic.MAX_DEPTH + 1, 200])
def test_fast_scan_agrees_on_nesting_depth(depth: int) -> None:
    """Nesting just under, at and over the limit is judged the same way by both walks."""
    value = {"description": "x", "suspect": _nested(depth)}
    assert _outcome(logic.scan_json, value) == _outcome(logic._scan_json_naming, value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(TEXTS, st.integers(), st.none(), st.sampled_from(["x" * 1_001, "y" * 8_193])), max_size=5
    ),
    st.sampled_from(["urls", "usernames_reported", "emails_reported"]),
)
def test_list_fields_convert_as_one_item_at_a_time(items: list[Any], name: str) -> None:
    """A list field's shortcut for plain strings converts (or refuses) exactly as item by item."""
    hint = logic._hints(ev.ReportSubmitted)[logic._TOP_LEVEL.get(name, name)]
    meta = logic._fields(ev.ReportSubmitted)[name].metadata
    convert = logic._converter(hint, logic._meta_key(meta))
    item_meta = {"max_length": meta["max_item_length"]} if "max_item_length" in meta else {}
    item = logic._converter(typing.get_args(hint)[0], logic._meta_key(item_meta))

    def one_by_one(value: list[Any]) -> tuple[Any, ...]:
        return tuple(item(v, f"{name}[{i}]") for i, v in enumerate(value))

    assert _result(convert, items, name) == _result(lambda v, _p: one_by_one(v), items, name)


def _result(convert: Any, value: Any, path: str) -> Any:
    try:
        return ("ok", convert(value, path))
    except DomainError as exc:
        return ("refused", str(exc), exc.field, exc.reason)


URL_PARTS = st.text(alphabet="aZ09.-_@[]:%/?#=&;+~ é\u00df", max_size=12)
URLS = st.builds(
    lambda scheme, host, port, rest: f"{scheme}://{host}{port}{rest}",
    st.sampled_from(["http", "HTTP", "https", "Https", "ftp", "FTP", "gopher", "h"]),
    st.one_of(
        st.sampled_from(["example.com", "WWW.Example.COM.", "a..b", "x", "10.0.0.1", "0x7f.0.0.1", "a_b.ca"]),
        st.sampled_from(["[::1]", "user:pw@host.ca", "ex%41mple.com", "b\u00fccher.de", "1.2.3.4.5"]),
        URL_PARTS,
    ),
    st.sampled_from(
        ["", ":", ":0", ":80", ":443", ":21", ":8080", ":0080", ":65535", ":65536", ":99999", ":x"]
    ),
    st.one_of(st.sampled_from(["", "/", "/a/b", "?", "?q=1", "#f", "/p?#", "/p#f?x", "/x@y"]), URL_PARTS),
)


@settings(max_examples=1500, deadline=None)
@given(URLS)
def test_plain_urls_normalise_as_urllib_reads_them(text: str) -> None:
    """The fast reading of the usual URL gives exactly what urllib's reading gives, or defers to it."""
    try:
        logic._check_url_text(text, "url")
    except DomainError:
        return
    fast = _result(lambda t, f: logic._normalize_plain_url(t, t, f), text, "url")
    if fast == ("ok", None):
        return  # not a plain URL: urllib reads it
    assert fast == _result(lambda t, f: logic._normalize_split_url(t, t, f), text, "url")


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_report_ids_and_references_are_the_uuid5_and_base32_ones(submission_id: str) -> None:
    """The fast report id is uuid5 of the submission id, and the reference base32 of its first bytes."""
    try:
        expected = str(uuid.uuid5(logic.REPORT_ID_NAMESPACE, submission_id))
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            logic.report_id_for(submission_id)
        return
    assert logic.report_id_for(submission_id) == expected
    code = base64.b32encode(uuid.UUID(expected).bytes[:5]).decode()
    assert logic.reference_for(expected) == f"TIP-{code[:4]}-{code[4:8]}"
    assert logic.reference_for(expected.upper()) == logic.reference_for(expected)


RUN_TEXT = st.lists(
    st.one_of(st.integers(logic.MIN_BASE64_RUN - 2, logic.MIN_BASE64_RUN + 2), st.integers(0, 5)),
    max_size=4,
).map(lambda lengths: " ".join("Q" * n for n in lengths))


@settings(max_examples=200, deadline=None)
@given(st.one_of(RUN_TEXT, st.text(alphabet="AB+/= é", max_size=2_100)))
def test_base64_runs_are_found_exactly_at_the_limit(text: str) -> None:
    """A text is refused as base64 exactly when it holds a run of MIN_BASE64_RUN such characters."""
    longest = max((len(run) for run in re.split(r"[^A-Za-z0-9+/=]", text)), default=0)
    assert bool(logic._BASE64_RUN.search(text)) == (longest >= logic.MIN_BASE64_RUN)
