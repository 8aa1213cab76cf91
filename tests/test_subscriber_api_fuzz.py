"""Schemathesis against the live subscriber API of a worker running on a
background thread: every operation of the OpenAPI document is called with
generated requests (the bearer token on each; positive and negative data,
25 examples per operation, derandomized), checking that nothing answers 5xx
and that statuses, content types and bodies match the document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from proxy.subscribers.model import Subscriber
from proxy.subscribers.openapi import openapi_document
from tests.test_server import free_port
from tests.test_subscriber_api import TOKEN, LiveWorker, worker_config

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorker]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with LiveWorker(worker_config(tmp, free_port())) as live:
        live.run(seed(live))
        yield live


async def seed(live: LiveWorker) -> None:
    """A few subscribers and disputes, so generated numbers and ids can hit
    existing records as well as missing ones."""
    service = live.service
    await service.put(Subscriber(12125550142, True, "block-all-suspected"), "seed")
    await service.put(Subscriber(13125550187), "seed")
    for n in (1, 2, 3):
        await service.file_dispute(12125550160 + n, "a@example.com", "seed", "10.0.0.1", 1.0)


# Schemathesis's fixture-loaded schemas do not run under pytest 9 (they rename
# test nodes through an attribute pytest 9 dropped), so the document is built
# here and test_the_live_document_is_the_one_fuzzed shows it is what the worker
# serves; every generated request still goes to the live worker.
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "generation": {"max-examples": 25, "deterministic": True},
            "suppress-health-check": ["too_slow", "filter_too_much"],
        }
    ),
)


def test_the_live_document_is_the_one_fuzzed(live: LiveWorker) -> None:
    with urlopen(f"{live.url}/api/v1/openapi.json", timeout=5) as r:
        assert r.status == 200
        assert json.load(r) == schema.raw_schema


@schema.parametrize()
def test_api_conforms_to_its_document(case: schemathesis.Case[Any], live: LiveWorker) -> None:
    response = case.call_and_validate(base_url=live.url, checks=CHECKS)
    # 401 and 403 are documented everywhere, and schemathesis sends a few requests
    # without the token on purpose: those aside, the token must have been accepted
    if response.request.headers.get("Authorization") == f"Bearer {TOKEN}":
        assert response.status_code not in (401, 403), response.text


def test_a_body_the_document_allows_gets_a_documented_answer(live: LiveWorker) -> None:
    # entries the server accepts too: 32 characters, a number padded with spaces
    allow: list[Any] = [f"+1212555{i:04d}".center(32) for i in range(1000)]
    block: list[Any] = [f"+1312555{i:04d}".center(32) for i in range(1000)]
    for method in ("PUT", "PATCH"):
        case = schema["/api/v1/subscribers/{number}"][method].Case(
            path_parameters={"number": "+13125550187"},
            body={"allow": allow, "block": block},
            media_type="application/json",
        )
        case.call_and_validate(base_url=live.url, checks=CHECKS)
