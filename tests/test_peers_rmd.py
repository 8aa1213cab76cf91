"""The RMD import (the shared synthetic sample, and a fixture of our own for
the cases it lacks), each peer's standing, and the action policy derives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.gateway.actions import (
    Override,
    PeerActions,
    Setting,
    policy_setting,
    stricter,
)
from proxy.gateway.rmd import (
    MISSING,
    MITIGATING,
    NOT_LOADED,
    NOT_MITIGATING,
    UNIDENTIFIED,
    RmdData,
    RmdFileError,
    load_rmd,
    parse_rmd,
    standing,
)
from proxy.gateway.settings import PeerPolicyConfig
from proxy.peers import PeerConfig
from tests.conftest import SHARED

SAMPLE = SHARED / "data" / "rmd_sample.csv"
HEADER = (
    "number,frn,business_name,business_address,foreign_voice_provider,country,other_frns,"
    "other_dba_names,previous_dba_names,robocall_mitigation_contact_name,contact_title,"
    "contact_department,contact_business_address,contact_country,contact_telephone_number,"
    "contact_phone_extension,implementation,voice_service_provider_choice,"
    "gateway_provider_choice,intermediate_provider_choice,last_updated,filing_url,"
    "last_recertified"  # a newer export's extra column: read by name, so harmless
)
COMPLETE = "Complete STIR/SHAKEN Implementation"
PARTIAL = "Partial STIR/SHAKEN Implementation - Performing Robocall Mitigation"


def row(number: str, frn: str, implementation: str = COMPLETE, choices: str = "Yes,No,No",
        other_frns: str = "", name: str = "Fixture Voice LLC", updated: str = "2024-05-01") -> str:  # fmt: skip
    return (
        f'{number},{frn},"{name}","1 Test Rd\nSuite 1\nDenver CO 80202",No,United States of '
        f"America,{other_frns},,,Pat Fixture,CEO,Executive,N/A,United States of America,"
        f"'+1 303 555 0100,,{implementation},{choices},{updated},https://example.invalid,"
        "2025-03-01"
    )


def peer(name: str = "gw", **kw: Any) -> PeerConfig:
    return PeerConfig(name, ("198.51.100.0/28",), **kw)


def sample() -> RmdData:
    if not SAMPLE.is_file():
        pytest.skip(f"shared material {SAMPLE} is absent (it lives beside the project root)")
    return load_rmd(SAMPLE, 1_700_000_000.0)


# -- the shared sample ---------------------------------------------------------


def test_the_sample_reads_whole_with_record_start_lines() -> None:
    data = sample()
    assert data.filings == 20 and data.problem_count == 0 and data.skipped == 0
    assert data.loaded_at == 1_700_000_000.0
    # RMD0099002's address spans three lines: the next record starts at line 6
    assert data.by_number["RMD0099002"].line == 3
    assert data.by_number["RMD0099003"].line == 6
    first = data.by_number["RMD0099001"]
    assert first.frn == "0099900101" and first.business_name == "Examplewave Communications, LLC"
    assert first.roles == {"voice", "intermediate"} and first.mitigating
    # the filer that typed its FRN as its business name still reads
    assert data.by_frn["0099900120"].number == "RMD0099020"


def test_sample_standings() -> None:
    data = sample()

    def status(**kw: Any) -> str:
        return standing(peer(**kw), data).status

    assert status(frn="0099900101") == MITIGATING  # No STIR/SHAKEN - Performing Mitigation
    assert status(rmd="RMD0099007") == MITIGATING  # Partial, by RMD number alone
    assert status(frn="0099900109") == NOT_MITIGATING  # implementation N/A
    assert status(frn="0099900209") == NOT_MITIGATING  # ... found by its other FRN
    assert status(frn="0099900105") == NOT_MITIGATING  # Complete, but certifies no role
    assert status(frn="0099900999") == MISSING
    assert status(rmd="RMD0099999") == MISSING
    assert status() == UNIDENTIFIED
    # the role it plays for us must be certified
    assert status(rmd="RMD0099008", rmd_role="gateway") == MITIGATING
    assert status(rmd="RMD0099002", rmd_role="gateway") == NOT_MITIGATING
    # an FRN and RMD number of two different filings vouch for nothing
    mixed = standing(peer(frn="0099900101", rmd="RMD0099002"), data)
    assert mixed.status == MISSING and "filed under FRN 0099900102" in mixed.detail
    assert standing(peer(frn="0099900101"), None).status == NOT_LOADED


# -- our own fixture: the cases the sample lacks -------------------------------


def test_malformed_rows_are_reported_by_line_and_the_import_goes_on(tmp_path: Path) -> None:
    text = "\n".join(
        [
            HEADER,
            row("RMD0000001", "0000000101"),  # lines 2-4 (a three-line address)
            "RMD0000002,0000000102,too,few,fields",  # line 5
            row("RMD0000003", "102"),  # 6-8: an FRN that lost its zeros: padded
            row("RMD0000004", "12345678901", implementation=PARTIAL),  # 9-11: FRN unusable
            row("XYZ", "NOT-AN-FRN"),  # 12-14: nothing identifies it
            row("RMD0000006", "0000000106", implementation="Mostly STIR/SHAKEN"),  # 15-17
            row("RMD0000007", "0000000107", choices="Maybe,No,No"),  # 18-20
            "",  # a blank line: ignored
            row("RMD0000001", "0000000111", updated="2025-01-01"),  # 22-24: a repeat
            row("RMD0000009", "0000000109", other_frns="0000000201; 0000000202"),  # 25-27
        ]
    )
    path = tmp_path / "rmd.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # with a BOM, as spreadsheets write
    data = load_rmd(path)
    assert [(p.line, p.skipped, p.message) for p in data.problems] == [
        (5, True, "expected 23 fields, found 5"),
        (6, False, "frn '102' lost its leading zeros: read as 0000000102"),
        (9, False, "frn '12345678901' is not a 10-digit FRN"),
        (12, False, "frn 'NOT-AN-FRN' is not a 10-digit FRN"),
        (12, False, "RMD number 'XYZ' is not RMD and 7 digits"),
        (12, True, "neither a usable RMD number nor a usable FRN"),
        (15, False, "implementation 'Mostly STIR/SHAKEN' is not a known certification: "
         "read as no robocall mitigation"),
        (18, False, "voice_service_provider_choice 'maybe' is neither Yes nor No: read as No"),
        (22, False, "RMD0000001 repeats line 2: this later row is used"),
    ]  # fmt: skip
    assert data.problem_count == 9 and data.skipped == 2
    assert data.filings == 7
    assert data.by_frn["0000000102"].number == "RMD0000003"
    assert data.by_number["RMD0000004"].frn == "" and data.by_number["RMD0000004"].mitigating
    assert standing(peer(rmd="RMD0000004"), data).status == MITIGATING
    assert standing(peer(rmd="RMD0000006"), data).status == NOT_MITIGATING
    assert standing(peer(rmd="RMD0000007"), data).status == NOT_MITIGATING  # no role left
    assert data.by_number["RMD0000001"].frn == "0000000111"
    assert data.by_frn["0000000202"].number == "RMD0000009"  # a second other FRN
    assert standing(peer(frn="0000000201"), data).status == MITIGATING


def test_one_frn_in_two_filings_answers_with_the_latest() -> None:
    text = "\n".join(
        [
            HEADER,
            row("RMD0000001", "0000000101", implementation="N/A", updated="2025-02-01"),
            row("RMD0000002", "0000000101", updated="2024-01-01"),
        ]
    )
    data = parse_rmd(text)
    assert data.by_frn["0000000101"].number == "RMD0000001"
    assert standing(peer(frn="0000000101"), data).status == NOT_MITIGATING
    assert standing(peer(rmd="RMD0000002"), data).status == MITIGATING


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"number,frn,business_name\nRMD0000001,0000000101,x\n", "lacks the column(s) "),
        (HEADER.encode() + b"\n\xff\xfe broken\n", "is not UTF-8 (line 2)"),
    ],
)
def test_an_unusable_file_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "rmd.csv"
    path.write_bytes(content)
    with pytest.raises(RmdFileError) as info:
        load_rmd(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RmdFileError) as info:
        load_rmd(tmp_path / "nowhere.csv")
    assert str(info.value) == (
        f"cannot read the RMD export {tmp_path / 'nowhere.csv'}: No such file or directory"
    )


# -- the policy ------------------------------------------------------------------


def test_stricter_orders_actions_and_prefers_the_lower_rate() -> None:
    block, label = Setting("block"), Setting("label")
    fast, slow = Setting("throttle", 10), Setting("throttle", 2)
    assert stricter(label, block) == stricter(block, label) == block
    assert stricter(fast, slow) == stricter(slow, fast) == slow
    assert stricter(label, fast) == fast
    assert stricter(Setting("observe"), label) == label


def test_policy_maps_each_standing_to_its_key() -> None:
    policy = PeerPolicyConfig(
        missing_from_rmd="block", not_mitigating="throttle", unidentified="label", throttle_cps=4
    )
    assert policy_setting(MISSING, policy) == Setting("block")
    assert policy_setting(NOT_MITIGATING, policy) == Setting("throttle", 4)
    assert policy_setting(UNIDENTIFIED, policy) == Setting("label")
    assert policy_setting(MITIGATING, policy) == Setting("observe")
    assert policy_setting(NOT_LOADED, policy) == Setting("observe")


def test_the_effective_action_is_the_stricter_of_own_and_policy() -> None:
    peers = (
        peer("listed", frn="0000000101", action="label"),
        peer("missing", frn="0000000999", action="label"),
        peer("careless", rmd="RMD0000002", action="throttle", throttle_cps=9.0),
        peer("blocked", frn="0000000101", action="block"),
    )
    policy = PeerPolicyConfig(missing_from_rmd="block", not_mitigating="throttle", throttle_cps=3)
    actions = PeerActions(peers, policy)
    # before any RMD data: only the configured actions
    assert {n: v.effective.text() for n, v in actions.views.items()} == {
        "listed": "label", "missing": "label", "careless": "throttle 9/s", "blocked": "block",
    }  # fmt: skip
    data = parse_rmd(
        "\n".join(
            [
                HEADER,
                row("RMD0000001", "0000000101"),
                row("RMD0000002", "0000000102", implementation="N/A"),
            ]
        )
    )
    actions.adopt_rmd(data)
    views = actions.views
    assert views["listed"].effective == Setting("label")
    assert views["missing"].effective == Setting("block")
    assert "missing" in views["missing"].because
    assert views["careless"].effective == Setting("throttle", 3)  # policy's rate is lower
    assert views["blocked"].effective == Setting("block")
    assert actions.enforced == {n: v.effective for n, v in views.items()}
    # an operator's override replaces the configured action, not the policy
    actions.set_override("listed", Override(Setting("observe"), "vetted", "ops", 1.0))
    assert actions.views["listed"].effective == Setting("observe")
    assert "listed" not in actions.enforced
    actions.set_override("missing", Override(Setting("observe"), "they filed", "ops", 1.0))
    assert actions.views["missing"].effective == Setting("block"), "the RMD rule still holds"
    # a failed import keeps the data in force
    actions.rmd_failed("cannot read the RMD export x: No such file or directory")
    assert actions.rmd is data and actions.views["missing"].effective == Setting("block")
    actions.drop_rmd()  # no RMD rule any more: the override is what holds
    assert actions.views["missing"].effective == Setting("observe")
