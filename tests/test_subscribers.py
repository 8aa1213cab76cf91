"""Subscribers without a network: the model, the store and its audit trail
(each store test runs on SQLite and on PostgreSQL), the service (index,
counts, CSV, disputes), self-service links, and the subscriber check on its
own and in the real screening chain. The API, the pages and SIP on a live
worker are in test_subscriber_api.py; what only several connections to one
store show (nodes, lost connections, outages) is in test_store_backends.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from blocklists.build import build
from blocklists.slot import ArtefactSlot
from blocklists.sources import Kind, Source
from blocklists.store import Artefact
from proxy.reputation import ReputationEngine
from proxy.screening import Action, SubscriberCheck, build_pipeline
from proxy.sip import SipRequest, call_facts, parse_datagram
from proxy.sip.identity import CallFacts
from proxy.subscribers.links import BadLink, LinkSigner
from proxy.subscribers.model import (
    MAX_LIST_ENTRIES,
    InvalidField,
    PersonalList,
    Subscriber,
    build_list,
    parse_entry,
    parse_number,
)
from proxy.subscribers.service import SubscriberService, apply_changes, parse_csv
from tests.conftest import make_config
from tests.pg_server import BACKENDS, StorePlace, store_place
from tests.sipmsg import request

ALICE = 13125550187  # a subscriber
BOB = 16465550199  # another subscriber
CALLER = 12125550142  # a clean caller
SPAMMER = 12125550166
PSAP = 12025550110
HEADER = "number,opted_in,policy,reject_anonymous,allow,block"


def sub(number: int = ALICE, **fields: object) -> Subscriber:
    return apply_changes(Subscriber(number), fields)


def call(caller: str = f"+{CALLER}", callee: int = ALICE, extra: tuple[str, ...] = ()) -> CallFacts:
    msg = parse_datagram(
        request(ruri=f"sip:+{callee}@192.0.2.5;user=phone", caller=caller, extra=extra)
    )
    assert isinstance(msg, SipRequest)
    return call_facts(msg, "198.51.100.10", 1000.0)


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> StorePlace:
    """The test's store: a SQLite file, or a PostgreSQL schema of its own."""
    return store_place(request.param, tmp_path, request.config)


@pytest.fixture
async def service(place: StorePlace) -> AsyncIterator[SubscriberService]:
    svc = place.open()
    yield svc
    svc.close()


def reopen(svc: SubscriberService, place: StorePlace) -> SubscriberService:
    """What a restart does: close the store, open a new service on it."""
    svc.close()
    return place.open()


def recount(svc: SubscriberService) -> dict[str, int]:
    """The per-policy counts recomputed from the index, in by_policy's shape."""
    c = Counter(s.policy if s.opted_in else "not-opted-in" for s in svc.index.values())
    return {k: c.get(k, 0) for k in svc.by_policy()}


# -- model ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "+13125550187",
        "13125550187",
        "3125550187",
        "+1-312-555-0187",
        "(312) 555-0187",
        "312.555.0187",
        "  3125550187 ",
    ],
)
def test_parse_number_accepts_e164_and_nanp_forms(text: str) -> None:
    assert parse_number(text) == ALICE


def test_parse_number_keeps_other_countries_in_e164() -> None:
    assert parse_number("+442071838750") == 442071838750


@pytest.mark.parametrize(
    "value", ["12345", "not a number", "+0123456789", "21255501", 3125550187, None, "3" * 40]
)
def test_parse_number_rejects_bad_input_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidField) as info:
        parse_number(value, "caller")
    assert info.value.field == "caller"
    assert str(info.value).startswith("caller: ")


def test_parse_entry_numbers_and_prefixes() -> None:
    assert parse_entry("+1900*", "allow[0]") == ("prefix", "1900")
    assert parse_entry(" +1800555* ", "allow[0]") == ("prefix", "1800555")
    assert parse_entry("(212) 555-0142", "allow[0]") == ("number", CALLER)
    for bad, problem in [
        ("1900*", "E.164 form"),
        ("+19a0*", "not a prefix"),
        ("*", "not a prefix"),
        ("+" + "1" * 16 + "*", "not a prefix"),
        ("", "expected a number or a prefix"),
        ("   ", "expected a number or a prefix"),
        ("12", "not a telephone number"),
    ]:
        with pytest.raises(InvalidField, match=problem) as info:
            parse_entry(bad, "block[3]")
        assert info.value.field == "block[3]", bad
    with pytest.raises(InvalidField) as info:
        parse_entry(["+1900*"], "allow[0]")
    assert info.value.field == "allow[0]"


def test_build_list_matches_numbers_and_prefixes_and_names_the_bad_index() -> None:
    lst = build_list(["+1900*", "2125550142", "+12125550142", "+4420*"])
    assert lst.entries() == ["+12125550142", "+1900*", "+4420*"]
    assert len(lst) == 3
    assert lst.matches(CALLER)
    assert lst.matches(19005550100) and lst.matches(442071838750)
    assert not lst.matches(SPAMMER) and not lst.matches(18005550100)
    assert build_list([]) == PersonalList() and not PersonalList().matches(CALLER)
    with pytest.raises(InvalidField) as info:
        build_list(["+1900*", "nope"])
    assert info.value.field == "[1]"


def test_apply_changes_validates_every_field_by_name() -> None:
    base = Subscriber(ALICE)
    assert base.opted_in is False and base.policy == "label" and not base.reject_anonymous
    changed = apply_changes(
        base, {"opted_in": True, "policy": "block-all-suspected", "allow": ["+1900*"]}
    )
    assert changed.public() == {
        "number": f"+{ALICE}",
        "opted_in": True,
        "policy": "block-all-suspected",
        "reject_anonymous": False,
        "allow": ["+1900*"],
        "block": [],
    }
    assert apply_changes(base, {"number": "3125550187"}) == base
    bad: list[tuple[dict[str, Any], str]] = [
        ({"opted_in": "yes"}, "opted_in"),
        ({"reject_anonymous": 1}, "reject_anonymous"),
        ({"policy": "block-everything"}, "policy"),
        ({"allow": "+12125550142"}, "allow"),
        ({"block": ["+12125550142", "junk"]}, "block[1]"),
        ({"block": ["+1"] * (MAX_LIST_ENTRIES + 1)}, "block"),
        ({"number": "+16465550199"}, "number"),
        ({"nickname": "al"}, "nickname"),
    ]
    for changes, field in bad:
        with pytest.raises(InvalidField) as info:
            apply_changes(base, changes)
        assert info.value.field == field, changes
    full = apply_changes(base, {"block": [f"+1212555{i:04d}" for i in range(MAX_LIST_ENTRIES)]})
    assert len(full.block) == MAX_LIST_ENTRIES


# -- store, index and audit ---------------------------------------------------


async def test_put_get_and_the_index_survive_a_restart(
    service: SubscriberService, place: StorePlace
) -> None:
    alice = sub(
        ALICE,
        opted_in=True,
        policy="block-high-confidence",
        reject_anonymous=True,
        allow=["+12125550142", "+1900*"],
        block=["+12125550166"],
    )
    bob = sub(BOB)
    assert await service.put(alice, "api") is None
    assert await service.put(bob, "api") is None
    assert service.get(ALICE) == alice and service.store.get(ALICE) == alice
    disputed = await service.file_dispute(SPAMMER, "me@example.com", "blocked", "10.0.0.1", 5.0)
    kept_open = await service.file_dispute(CALLER, "you@example.com", "again", "10.0.0.2", 7.0)
    await service.resolve_dispute(disputed, "allow", None, "ok", "api")
    before = dict(service.index)
    counts = service.by_policy()

    service = reopen(service, place)
    try:
        assert service.index == before
        assert service.get(ALICE) == alice and service.get(BOB) == bob
        assert service.by_policy() == counts == recount(service)
        assert counts["block-high-confidence"] == 1 and counts["not-opted-in"] == 1
        assert service.global_allow == {SPAMMER}
        assert service.open == {kept_open: 7.0}
    finally:
        service.close()


async def test_audit_rows_name_who_when_old_and_new(
    service: SubscriberService, place: StorePlace
) -> None:
    t0 = time.time()
    await service.put(sub(ALICE, allow=["+12125550142"]), "api:alice-portal")
    created = await service.audit(ALICE)
    assert {r["field"]: (r["old"], r["new"]) for r in created} == {
        "opted_in": (None, "false"),
        "policy": (None, "label"),
        "reject_anonymous": (None, "false"),
        "allow": (None, "+12125550142"),
        "block": (None, ""),
    }
    assert {r["actor"] for r in created} == {"api:alice-portal"}
    t1 = time.time()
    assert all(t0 <= float(str(r["at"])) <= t1 for r in created)

    await service.update(ALICE, {"policy": "block-all-suspected", "opted_in": True}, "ops")
    newest = (await service.audit(ALICE))[:2]
    assert {r["field"]: (r["old"], r["new"], r["actor"]) for r in newest} == {
        "policy": ("label", "block-all-suspected", "ops"),
        "opted_in": ("false", "true", "ops"),
    }
    assert len(await service.audit(ALICE)) == 7

    # a write that changes nothing leaves no trace
    await service.update(ALICE, {"policy": "block-all-suspected"}, "ops")
    assert len(await service.audit(ALICE)) == 7

    await service.delete(ALICE, "api:cleanup")
    assert service.get(ALICE) is None and service.store.get(ALICE) is None
    deleted = (await service.audit(ALICE))[:5]
    assert {r["field"]: (r["old"], r["new"], r["actor"]) for r in deleted} == {
        "opted_in": ("true", None, "api:cleanup"),
        "policy": ("block-all-suspected", None, "api:cleanup"),
        "reject_anonymous": ("false", None, "api:cleanup"),
        "allow": ("+12125550142", None, "api:cleanup"),
        "block": ("", None, "api:cleanup"),
    }
    # the trail outlives the subscriber, and a restart
    service = reopen(service, place)
    try:
        assert len(await service.audit(ALICE)) == 12
    finally:
        service.close()


def refuse_updates_of(place: StorePlace, number: int) -> type[Exception]:
    """A trigger made by a second connection (an operator's sqlite3 or psql
    shell) makes every later update of ``number`` fail inside the database;
    returns the error the driver raises for it."""
    if place.backend == "sqlite":
        other = sqlite3.connect(place.path)
        other.execute(
            f"CREATE TRIGGER refuse BEFORE UPDATE ON subscribers WHEN NEW.number = {number} "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        other.commit()
        other.close()
        return sqlite3.IntegrityError
    import psycopg

    with psycopg.connect(place.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON subscribers FOR EACH ROW "
            f"WHEN (NEW.number = {number}) EXECUTE FUNCTION refuse()"
        )
    return psycopg.errors.RaiseException


async def test_a_failed_write_reaches_neither_index_nor_counts(
    service: SubscriberService, place: StorePlace
) -> None:
    await service.put(sub(ALICE, opted_in=True), "api")
    counts = service.by_policy()
    refused = refuse_updates_of(place, ALICE)
    with pytest.raises(refused, match="refused"):
        await service.update(ALICE, {"policy": "block-all-suspected"}, "api")
    assert service.get(ALICE) == sub(ALICE, opted_in=True)
    assert service.by_policy() == counts
    assert len(await service.audit(ALICE)) == 5  # only the creation
    with pytest.raises(refused):
        await service.import_csv(
            f"{HEADER}\n+{BOB},true,off,false,,\n+{ALICE},false,off,false,,\n", "csv"
        )
    assert service.get(BOB) is None and service.store.get(BOB) is None  # rolled back whole
    assert service.by_policy() == counts
    big = "".join(f"\n+1646555{i:04d},true,off,false,,+1900*" for i in range(300))
    with pytest.raises(refused):  # a big import (written another way) as well
        await service.import_csv(f"{HEADER}{big}\n+{ALICE},false,off,false,,\n", "csv")
    assert service.store.count() == 1 and service.by_policy() == counts
    # the store goes on working for everyone else
    await service.put(sub(BOB, opted_in=True), "api")
    assert service.store.get(BOB) == sub(BOB, opted_in=True)


async def test_the_index_changes_only_after_the_write_committed(
    service: SubscriberService,
) -> None:
    seen: list[Subscriber | None] = []
    put = service.store.put

    def spy(new: Subscriber, actor: str, now: float) -> Subscriber | None:
        seen.append(service.get(new.number))  # what screening sees during the write
        old = put(new, actor, now)
        return old

    service.store.put = spy  # type: ignore[method-assign]
    await service.put(sub(ALICE, opted_in=True), "api")
    await service.update(ALICE, {"block": ["+12125550166"]}, "api")
    assert seen == [None, sub(ALICE, opted_in=True)]
    assert service.get(ALICE) == sub(ALICE, opted_in=True, block=["+12125550166"])


def test_put_many_is_one_transaction(place: StorePlace) -> None:
    svc = place.open()
    try:

        def rows() -> Iterator[Subscriber]:
            yield sub(ALICE)
            yield sub(BOB)
            raise RuntimeError("the import stopped half way")

        with pytest.raises(RuntimeError):
            svc.store.put_many(rows(), "csv", 1.0)
        assert svc.store.count() == 0 and svc.store.audit(ALICE) == []
    finally:
        svc.close()


def test_a_big_import_writes_what_one_write_at_a_time_would(place: StorePlace) -> None:
    """Over a few hundred rows, PostgreSQL writes an import by COPY rather
    than row by row: the same subscribers, lists and audit trail."""
    svc = place.open()
    try:
        first = [
            sub(
                CALLER + i,
                opted_in=i % 2 == 0,
                policy=("off", "label", "block-all-suspected")[i % 3],
                allow=["+1900*", f"+1646555{i:04d}"] if i % 3 == 0 else [],
                block=[f"+1312555{i:04d}"] if i % 5 == 0 else [],
            )
            for i in range(400)
        ]
        assert svc.store.put_many(first, "csv", 1.0) == (400, 0)
        twice = CALLER + 3
        second = [
            *(sub(CALLER + i, opted_in=True, block=["+1800*"]) for i in range(0, 400, 4)),
            *first[1:400:4],  # unchanged: no audit rows
            sub(twice, allow=["+1888*"]),  # this number twice: the later row wins
            *(sub(BOB + i) for i in range(150)),
            sub(twice, policy="off", block=["+1777*"]),
        ]
        assert svc.store.put_many(second, "csv", 2.0) == (150, 102)
        expected = {s.number: s for s in first}
        expected.update((s.number, s) for s in second)
        assert svc.store.load_all() == {n: s.profile() for n, s in expected.items()}
        assert svc.store.get_many([twice, CALLER + 4, 1]) == {
            twice: sub(twice, policy="off", block=["+1777*"]),
            CALLER + 4: sub(CALLER + 4, opted_in=True, block=["+1800*"]),
            1: None,
        }
        trail = [(r["field"], r["old"], r["new"]) for r in svc.store.audit(twice)]
        assert trail[:5] == [  # newest first: the second row's change, then the first's
            ("block", "", "+1777*"),
            ("allow", "+1888*", ""),
            ("policy", "label", "off"),
            ("allow", "+16465550003,+1900*", "+1888*"),
            ("policy", "off", "label"),
        ]
        assert len(trail) == 10 and len(svc.store.audit(CALLER + 1)) == 5
        assert svc.store.count() == 550
    finally:
        svc.close()


# -- CSV ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"+{SPAMMER},true,block-everything,false,,", "csv line 4: policy"),
        ("12345,true,label,false,,", "csv line 4: number"),
        (f"+{SPAMMER},maybe,label,false,,", "csv line 4: opted_in"),
        (f"+{SPAMMER},true,label,sometimes,,", "csv line 4: reject_anonymous"),
        (f"+{SPAMMER},true,label,false,+1900* junk,", "csv line 4: allow[1]"),
        (f"+{SPAMMER},true,label,false,,+12125550166 *", "csv line 4: block[1]"),
        (f"+{SPAMMER},true,label,false,", "csv: line 4: expected 6 columns"),
    ],
)
async def test_csv_import_is_all_or_nothing_and_names_line_and_column(
    service: SubscriberService, line: str, problem: str
) -> None:
    await service.put(sub(BOB, opted_in=True, policy="off"), "api")
    before = dict(service.index)
    counts = service.by_policy()
    text = (
        f"{HEADER}\n"
        f"+{ALICE},true,block-all-suspected,true,+12125550142,+1900*\n"
        f"+{BOB},false,label,false,,\n"
        f"{line}\n"
        f"+{CALLER},true,label,false,,\n"
    )
    with pytest.raises(InvalidField) as info:
        await service.import_csv(text, "csv")
    assert str(info.value).startswith(problem), str(info.value)
    assert service.index == before and service.by_policy() == counts
    assert service.store.count() == 1 and service.store.get(BOB) == Subscriber.of(BOB, before[BOB])
    assert len(service.store.audit(BOB)) == 5 and service.store.audit(ALICE) == []


def test_csv_header_is_line_one() -> None:
    for text in ("", "number,opted_in,policy\n", "number;opted_in;policy;x;y;z\n"):
        with pytest.raises(InvalidField, match="line 1: expected the header"):
            parse_csv(text)
    assert parse_csv(f" {HEADER.replace(',', ' ,')}\n") == []  # spaces around names are fine


def test_csv_flags_blank_lines_and_repeated_numbers() -> None:
    subs = parse_csv(
        f"{HEADER}\r\n"
        f"3125550187,yes,off,1,,\r\n"
        "\r\n"
        f"+1-312-555-0187,TRUE,block-all-suspected,no,+1900* 2125550142,\r\n"
        f"+{BOB},0,label,false,,\r\n"
    )
    assert subs == [
        sub(ALICE, opted_in=True, policy="block-all-suspected", allow=["+1900*", "+12125550142"]),
        sub(BOB),
    ]


async def test_csv_export_import_round_trip(
    service: SubscriberService, place: StorePlace, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    originals = [
        sub(ALICE, opted_in=True, policy="block-high-confidence", reject_anonymous=True,
            allow=["+12125550142", "+1800*"], block=["+12125550166", "+1900*"]),
        sub(BOB),
        sub(442071838750, opted_in=True, policy="off", block=["+4470*"]),
    ]  # fmt: skip
    for s in originals:
        await service.put(s, "api")
    exported = await service.export_csv()
    lines = exported.splitlines()
    assert lines[0] == HEADER and len(lines) == 4
    assert lines[1] == (
        f"+{ALICE},true,block-high-confidence,true,+12125550142 +1800*,+12125550166 +1900*"
    )
    fresh = store_place(place.backend, tmp_path / "other", request.config).open()
    try:
        assert await fresh.import_csv(exported, "csv") == (3, 0)
        assert fresh.index == service.index
        assert fresh.by_policy() == service.by_policy()
        assert await fresh.export_csv() == exported
        # importing the same file again changes nothing and audits nothing
        audits = len(await fresh.audit(ALICE))
        assert await fresh.import_csv(exported, "csv") == (0, 0)
        assert len(await fresh.audit(ALICE)) == audits
        assert fresh.store.load_all() == service.index
    finally:
        fresh.close()


# -- counts per policy -------------------------------------------------------


async def test_counts_per_policy_follow_every_write(
    service: SubscriberService, place: StorePlace
) -> None:
    expected = dict.fromkeys(
        ["off", "label", "block-high-confidence", "block-all-suspected", "not-opted-in"], 0
    )
    assert service.by_policy() == expected

    async def check(**changes: int) -> None:
        for k, v in changes.items():
            expected[k.replace("_", "-")] += v
        assert service.by_policy() == expected == recount(service)

    await service.put(sub(ALICE, opted_in=True, policy="block-all-suspected"), "api")
    await check(block_all_suspected=1)
    await service.put(sub(BOB), "api")
    await check(not_opted_in=1)
    await service.put(sub(ALICE, opted_in=True, policy="off"), "api")  # replace
    await check(block_all_suspected=-1, off=1)
    await service.update(BOB, {"opted_in": True}, "api")
    await check(not_opted_in=-1, label=1)
    await service.update(ALICE, {"opted_in": False}, "api")
    await check(off=-1, not_opted_in=1)
    await service.update(ALICE, {"opted_in": False}, "api")  # no change
    await check()
    await service.delete(BOB, "api")
    await check(label=-1)
    assert await service.delete(BOB, "api") is None  # already gone
    await check()
    created, updated = await service.import_csv(
        f"{HEADER}\n"
        f"+{ALICE},true,block-high-confidence,false,,\n"
        f"+{BOB},true,block-high-confidence,false,,\n"
        f"+{CALLER},false,off,false,,\n",
        "csv",
    )
    assert (created, updated) == (2, 1)
    await check(not_opted_in=0, block_high_confidence=2)  # Alice left, CALLER arrived
    await service.resolve_dispute(
        await service.file_dispute(SPAMMER, "x@example.com", "oops", "10.0.0.9", 1.0),
        "allow",
        PSAP,
        "",
        "api",
    )
    await check(not_opted_in=1)  # allowing for a new number creates its record
    service = reopen(service, place)
    try:
        assert service.by_policy() == expected
    finally:
        service.close()


# -- disputes ---------------------------------------------------------------


async def test_dispute_allowed_for_everyone_is_persisted(
    service: SubscriberService, place: StorePlace
) -> None:
    t = time.time()
    dispute = await service.file_dispute(
        SPAMMER, "ann@example.com", "I run a pharmacy", "10.0.0.1", t
    )
    assert service.open == {dispute: t}
    item = service.disputes.get(dispute)
    assert item is not None and item["status"] == "open" and item["number"] == f"+{SPAMMER}"
    assert service.disputes.filed_since("10.0.0.1", t - 1) == 1
    assert service.disputes.filed_since("10.0.0.2", t - 1) == 0

    result = await service.resolve_dispute(dispute, "allow", None, "checked", "api:ops")
    assert result is not None
    assert (result["status"], result["scope"], result["resolved_by"], result["note"]) == (
        "allowed", "global", "api:ops", "checked",
    )  # fmt: skip
    assert float(str(result["resolved_at"])) >= t
    assert SPAMMER in service.global_allow
    assert service.disputes.global_allow() == {SPAMMER}
    assert service.open == {}
    assert service.index == {}  # no subscriber involved
    # answering it again is not possible, either way
    assert await service.resolve_dispute(dispute, "allow", None, "", "api") is None
    assert await service.resolve_dispute(dispute, "reject", None, "", "api") is None
    assert await service.resolve_dispute(dispute, "allow", ALICE, "", "api") is None
    assert service.get(ALICE) is None  # the refused resolution created nothing
    assert await service.resolve_dispute(999, "reject", None, "", "api") is None
    service = reopen(service, place)
    try:
        assert service.global_allow == {SPAMMER} and service.open == {}
    finally:
        service.close()


async def test_dispute_allowed_for_one_subscriber_lands_on_their_allow_list(
    service: SubscriberService,
) -> None:
    await service.put(sub(ALICE, opted_in=True, allow=["+1800*"], block=[f"+{SPAMMER}"]), "api")
    first = await service.file_dispute(SPAMMER, "a@example.com", "x", "10.0.0.1", 1.0)
    second = await service.file_dispute(CALLER, "b@example.com", "y", "10.0.0.1", 2.0)
    result = await service.resolve_dispute(first, "allow", ALICE, "", "api:ops")
    assert result is not None and result["scope"] == f"+{ALICE}"
    alice = service.get(ALICE)
    assert alice is not None and alice.allow.entries() == [f"+{SPAMMER}", "+1800*"]
    assert alice.block.entries() == [f"+{SPAMMER}"] and alice.opted_in  # rest untouched
    assert service.store.get(ALICE) == alice
    assert service.global_allow == set() and service.disputes.global_allow() == set()
    newest = (await service.audit(ALICE))[0]
    assert (newest["actor"], newest["field"], newest["old"], newest["new"]) == (
        "api:ops", "allow", "+1800*", f"+{SPAMMER},+1800*",
    )  # fmt: skip
    # a subscriber not yet known gets a record holding just that allow entry
    result = await service.resolve_dispute(second, "allow", BOB, "", "api:ops")
    assert result is not None and result["status"] == "allowed"
    assert service.get(BOB) == sub(BOB, allow=[f"+{CALLER}"])
    assert service.store.get(BOB) == service.get(BOB)
    assert service.open == {}


async def test_dispute_rejected(service: SubscriberService) -> None:
    dispute = await service.file_dispute(SPAMMER, "a@example.com", "x", "10.0.0.1", 1.0)
    result = await service.resolve_dispute(dispute, "reject", None, "a robocaller", "api")
    assert result is not None
    assert (result["status"], result["scope"], result["note"]) == (
        "rejected", None, "a robocaller",
    )  # fmt: skip
    assert service.global_allow == set() and service.open == {} and service.index == {}
    assert await service.resolve_dispute(dispute, "reject", None, "", "api") is None
    assert await service.resolve_dispute(dispute, "allow", None, "", "api") is None
    assert service.global_allow == set()


async def test_dispute_lists(service: SubscriberService) -> None:
    ids = [
        await service.file_dispute(CALLER + i, "a@example.com", f"d{i}", "10.0.0.1", float(i))
        for i in range(3)
    ]
    await service.resolve_dispute(ids[1], "reject", None, "", "api")
    assert [d["id"] for d in service.disputes.list("open")] == [ids[0], ids[2]]  # oldest first
    assert [d["id"] for d in service.disputes.list(None)] == ids[::-1]  # newest first
    assert [d["id"] for d in service.disputes.list("rejected")] == [ids[1]]
    assert service.disputes.list("allowed") == []



async def test_disputes_after_an_id_oldest_first(service: SubscriberService) -> None:
    ids = [
        await service.file_dispute(CALLER + i, "a@example.com", f"d{i}", "10.0.0.1", float(i))
        for i in range(5)
    ]
    await service.resolve_dispute(ids[2], "reject", None, "", "api")  # closed ones too
    assert [d["id"] for d in service.disputes.after(ids[0], 3)] == ids[1:4]
    assert [d["id"] for d in service.disputes.after(ids[3])] == [ids[4]]
    assert service.disputes.after(ids[4]) == []


# -- links ------------------------------------------------------------------


def test_links_valid_tampered_and_expired() -> None:
    signer = LinkSigner(b"k" * 32, "https://portal.example.net/", 3600)
    url, expires = signer.link(ALICE, 1000.0)
    assert expires == 4600
    assert url.startswith("https://portal.example.net/self-service?t=")
    token = url.partition("?t=")[2]
    assert signer.verify(token, 1000.0) == ALICE
    assert signer.verify(token, 4600.0) == ALICE  # valid to the second it expires
    number, exp, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for bad in [
        f"{BOB}.{exp}.{mac}",  # someone else's number
        f"{number}.{int(exp) + 86400}.{mac}",  # a longer life
        f"{number}.{exp}.{flipped}",
        f"{number}.{exp}",
        f"{number}.{exp}.{mac}.x",
        "",
        "../../etc/passwd",
        f"+{number}.{exp}.{mac}",
    ]:
        with pytest.raises(BadLink, match="not valid"):
            signer.verify(bad, 1000.0)
    with pytest.raises(BadLink, match="expired"):
        signer.verify(token, 4601.0)
    with pytest.raises(BadLink, match="not valid"):
        LinkSigner(b"x" * 32, "https://portal.example.net", 3600).verify(token, 1000.0)


# -- the subscriber check -----------------------------------------------------


def check_with(*subs: Subscriber, global_allow: frozenset[int] = frozenset()) -> SubscriberCheck:
    return SubscriberCheck({s.number: s.profile() for s in subs}, global_allow)


def test_personal_allow_applies_even_when_not_opted_in() -> None:
    c = check_with(sub(ALICE, allow=[f"+{CALLER}"], block=[f"+{CALLER}"]))
    v = c.check(call())
    assert v is not None and v.action is Action.PASS and v.reasons == ("personal-allowlist",)
    # opted in, the allow list still wins over the block list
    c = check_with(sub(ALICE, opted_in=True, allow=["+1212*"], block=[f"+{CALLER}"]))
    assert c.check(call()) == v


def test_personal_block_answers_607_only_when_opted_in() -> None:
    off = check_with(sub(ALICE, block=[f"+{CALLER}"], reject_anonymous=True))
    assert off.check(call()) is None
    assert off.check(call("anonymous")) is None
    on = check_with(sub(ALICE, opted_in=True, policy="off", block=["+1212555*"]))
    v = on.check(call())
    assert v is not None
    assert (v.action, v.sip_status, v.reasons) == (Action.BLOCK, 607, ("personal-blocklist",))
    assert on.check(call(f"+{BOB}")) is None  # not on the list
    assert on.check(call(callee=BOB)) is None  # someone else's list


def test_reject_anonymous_answers_433() -> None:
    c = check_with(sub(ALICE, opted_in=True, reject_anonymous=True))
    for facts in [
        call("anonymous"),
        call("restricted"),
        call(extra=("Privacy: id",)),
        call(extra=("Privacy: header;id",)),
    ]:
        v = c.check(facts)
        assert v is not None, facts
        assert (v.action, v.sip_status, v.reasons) == (Action.BLOCK, 433, ("anonymous-rejected",))
    assert c.check(call()) is None
    assert c.check(call(extra=("Privacy: none",))) is None
    assert check_with(sub(ALICE, opted_in=True)).check(call("anonymous")) is None


def test_a_redress_allowed_caller_passes() -> None:
    allowed = frozenset({CALLER})
    for c in [
        check_with(global_allow=allowed),  # a callee who is no subscriber
        check_with(sub(ALICE, opted_in=True, policy="block-all-suspected"), global_allow=allowed),
    ]:
        v = c.check(call())
        assert v is not None and v.action is Action.PASS and v.reasons == ("redress-allowed",)
        assert c.check(call(f"+{SPAMMER}")) is None
    # the subscriber's own block list still comes first
    c = check_with(sub(ALICE, opted_in=True, block=[f"+{CALLER}"]), global_allow=allowed)
    v = c.check(call())
    assert v is not None and v.sip_status == 607


def test_a_redress_allowed_caller_passes_to_a_subscriber_not_opted_in() -> None:
    cfg = make_config(screening={"block": [f"+{SPAMMER}"]})
    profiles = {ALICE: sub(ALICE, opted_in=False).profile()}
    check = SubscriberCheck(profiles, frozenset({SPAMMER}))
    pipeline = build_pipeline(cfg.screening, subscribers=check)
    # allowed for everyone: a callee who is no subscriber at all gets the call
    assert pipeline.screen(call(f"+{SPAMMER}", BOB)).verdict.reasons == ("redress-allowed",)
    # so should Alice, who is known but has not turned blocking on
    result = pipeline.screen(call(f"+{SPAMMER}", ALICE))
    assert (result.verdict.action, result.verdict.reasons) == (Action.PASS, ("redress-allowed",))


def test_policy_for_is_the_opted_in_subscribers_policy() -> None:
    c = check_with(
        sub(ALICE, opted_in=True, policy="block-all-suspected"),
        sub(BOB, opted_in=False, policy="block-high-confidence"),
    )
    assert c.policy_for(ALICE) == "block-all-suspected"
    assert c.policy_for(BOB) is None
    assert c.policy_for(CALLER) is None
    assert c.policy_for(None) is None


async def test_the_check_reads_the_live_index(service: SubscriberService) -> None:
    c = SubscriberCheck(service.index, service.global_allow)
    assert c.check(call()) is None
    await service.put(sub(ALICE, opted_in=True, block=[f"+{CALLER}"]), "api")
    v = c.check(call())
    assert v is not None and v.sip_status == 607
    await service.delete(ALICE, "api")
    assert c.check(call()) is None
    dispute = await service.file_dispute(CALLER, "a@example.com", "x", "10.0.0.1", 1.0)
    await service.resolve_dispute(dispute, "allow", None, "", "api")
    v = c.check(call())
    assert v is not None and v.reasons == ("redress-allowed",)


# -- in the real screening chain ---------------------------------------------


@pytest.fixture
def dno_slot(tmp_path: Path) -> ArtefactSlot:
    """An artefact with SPAMMER on the Do-Not-Originate list."""
    numbers = tmp_path / "dno.txt"
    numbers.write_text(f"+{SPAMMER}\n")
    out = tmp_path / "artefact"
    build([Source(Kind.DNO, numbers)], out)
    slot = ArtefactSlot()
    slot.current = Artefact.load(out)
    return slot


def test_chain_order_emergency_then_personal_lists_then_static_lists() -> None:
    cfg = make_config(
        screening={"psap_numbers": [f"+{PSAP}"], "block": [f"+{SPAMMER}", f"+{PSAP}"]}
    )
    alice = sub(ALICE, opted_in=True, block=[f"+{PSAP}", f"+{CALLER}"], allow=[f"+{SPAMMER}"])
    subs = {ALICE: alice.profile()}
    pipeline = build_pipeline(cfg.screening, subscribers=SubscriberCheck(subs))

    def screen(caller: int, callee: int = ALICE) -> tuple[Action, tuple[str, ...], int, str | None]:
        r = pipeline.screen(call(f"+{caller}", callee))
        return r.verdict.action, r.verdict.reasons, r.verdict.sip_status, r.decided_by

    # a PSAP calling back passes, whatever the subscriber's block list says
    assert screen(PSAP) == (Action.PASS, ("emergency",), 603, "emergency")
    # the personal block list decides before the static lists
    assert screen(CALLER) == (Action.BLOCK, ("personal-blocklist",), 607, "subscriber")
    # the personal allow list beats the static block list ...
    assert screen(SPAMMER) == (Action.PASS, ("personal-allowlist",), 603, "subscriber")
    # ... for that subscriber only
    assert screen(SPAMMER, BOB) == (Action.BLOCK, ("blocklist",), 603, "static_block")
    assert screen(CALLER, BOB)[0] is Action.PASS


@pytest.mark.parametrize(
    ("subscriber", "action"),
    [
        (sub(ALICE, opted_in=True, policy="block-high-confidence"), Action.BLOCK),
        (sub(ALICE, opted_in=True, policy="block-all-suspected"), Action.BLOCK),
        (sub(ALICE, opted_in=True, policy="label"), Action.LABEL),
        (sub(ALICE, opted_in=True, policy="off"), Action.PASS),
        (sub(ALICE, opted_in=False, policy="block-all-suspected"), Action.LABEL),
        (sub(BOB, opted_in=True, policy="block-all-suspected"), Action.LABEL),  # not the callee
    ],
    ids=["high-confidence", "all-suspected", "label", "off", "not-opted-in", "no-subscriber"],
)
def test_reputation_blocks_only_for_opted_in_subscribers_with_a_block_policy(
    dno_slot: ArtefactSlot, subscriber: Subscriber, action: Action
) -> None:
    # the DNO check only observes, so the caller reaches the reputation score
    cfg = make_config(screening={"modes": {"dno": "observe"}})
    engine = ReputationEngine(cfg.reputation, dno_slot)
    check = SubscriberCheck({subscriber.number: subscriber.profile()})
    pipeline = build_pipeline(cfg.screening, dno_slot, cfg.blocklists, engine, check)
    facts = call(f"+{SPAMMER}", ALICE)
    assessment = engine.assess(facts)
    assert assessment.score >= cfg.reputation.block_at and "dno-spoofed" in assessment.reasons
    result = pipeline.screen(facts)
    assert (result.verdict.action, result.decided_by) == (action, "reputation")
    assert result.verdict.sip_status == 603  # analytics: 603+, never 607
    assert [name for name, _ in result.observed] == ["dno"]
    # a clean caller scores below label_at: it passes whatever the policy
    assert pipeline.screen(call(f"+{CALLER}", ALICE)).verdict.action is Action.PASS


async def test_concurrent_edits_of_one_subscriber_both_land(place: StorePlace) -> None:
    service = place.open()
    try:
        await service.put(Subscriber(ALICE, opted_in=True), "api")
        await asyncio.gather(
            service.update(ALICE, {"policy": "block-all-suspected"}, "portal"),
            service.update(ALICE, {"block": ["+12125550166"]}, "self-service"),
        )
        after = service.get(ALICE)
        assert after is not None and after.policy == "block-all-suspected"
        assert after.block.entries() == ["+12125550166"]
        assert service.store.get(ALICE) == after  # the database agrees with the index
    finally:
        service.close()
