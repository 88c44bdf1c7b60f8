"""A restarted coordinator rebuilds its state from the journal and re-records nothing twice."""

import json
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.journal import Journal, JournalError
from coordinator.state import (
    CommitSeen,
    HeartbeatSeen,
    JoinRequest,
    PayloadChecked,
    Phase,
    RecordRound,
    Seeded,
    State,
)
from tests.test_coordinator_machine import CFG, H0, H1, A, B


def run_one_round(j):
    j.step(Seeded(bytes(range(32))), 0)
    j.step(JoinRequest(A, ("/ip4/127.0.0.1/tcp/1",), H0), 0)
    j.step(JoinRequest(B, (), H0), 1)
    r = j.state.round.number
    for k in (A, B):
        j.step(CommitSeen(k, r, bytes([k[0]]) * 32, 10, H0, 2.0), 5)
    for k in (A, B):
        j.step(PayloadChecked(k, r, True), 6)
    j.step(HeartbeatSeen(A, 0, H1), 7)
    j.step(None, 8)


def test_replaying_the_journal_rebuilds_the_same_state(tmp_path):
    j, _ = Journal.open(tmp_path / "journal.jsonl", State(CFG))
    run_one_round(j)
    j.step(HeartbeatSeen(B, 0, H1), 9)
    live = j.state
    j.close()
    replayed, effects = Journal.open(tmp_path / "journal.jsonl", State(CFG))
    assert replayed.state == live and live.phase == Phase.TRAINING and live.next_round == 2
    assert [e.round for e in effects if isinstance(e, RecordRound)] == [0]


def test_ticks_that_change_nothing_are_not_journaled(tmp_path):
    j, _ = Journal.open(tmp_path / "journal.jsonl", State(CFG))
    for t in range(10):
        j.step(None, t)
    assert (tmp_path / "journal.jsonl").read_text() == ""


def test_a_torn_last_line_is_dropped_and_the_journal_stays_appendable(tmp_path):
    path = tmp_path / "journal.jsonl"
    j, _ = Journal.open(path, State(CFG))
    j.step(JoinRequest(A, (), H0), 0)
    j.close()
    with path.open("a") as f:
        f.write('{"t": 1, "type": "JoinRe')
    j, _ = Journal.open(path, State(CFG))
    assert set(j.state.members) == {A}
    j.step(JoinRequest(B, (), H0), 2)
    j.close()
    again, _ = Journal.open(path, State(CFG))
    assert set(again.state.members) == {A, B}


def test_a_corrupt_entry_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('garbage\n{"t": 0, "tick": true}\n')
    with pytest.raises(JournalError, match="journal.jsonl:1"):
        Journal.open(path, State(CFG))


def test_a_value_changed_on_disk_is_refused_not_replayed_into_another_state(tmp_path):
    path = tmp_path / "journal.jsonl"
    j, _ = Journal.open(path, State(CFG))
    run_one_round(j)
    j.close()
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"t": 5', '"t": 6')  # a flipped value that still parses
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match="journal.jsonl:4.*checksum"):
        Journal.open(path, State(CFG))


def sealed_line(entry):
    body = json.dumps(entry, sort_keys=True)
    return json.dumps({**entry, "c": zlib.crc32(body.encode())}, sort_keys=True)


@pytest.mark.parametrize(
    "entry",
    [
        {
            "n": 1,
            "t": 0,
            "type": "JoinRequest",
            "body": {"key": {"hex": "00"}, "addrs": [], "model_hash": []},
        },
        {"n": 1, "t": 0, "type": "JoinRequest", "body": []},
        {"n": 1, "t": "x", "tick": True},
        {"n": 1, "t": 0, "type": "Nope", "body": {}},
        {
            "n": 1,
            "t": 0,
            "type": "HeartbeatSeen",
            "body": {"key": {"hex": "zz"}, "round": 0, "model_hash": 1},
        },
    ],
    ids=["wrong field types", "body not an object", "time not a number", "unknown type", "bad hex"],
)
def test_a_well_sealed_entry_of_the_wrong_shape_is_an_error_not_a_crash(tmp_path, entry):
    path = tmp_path / "journal.jsonl"
    path.write_text(sealed_line(entry) + "\n" + sealed_line({"n": 2, "t": 0, "tick": True}) + "\n")
    with pytest.raises(JournalError):
        Journal.open(path, State(CFG))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_journal_text_is_replayed_or_refused_never_a_crash(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "journal.jsonl"
        path.write_text(text + "\n" + sealed_line({"n": 1, "t": 0, "tick": True}) + "\n")
        try:
            Journal.open(path, State(CFG))[0].close()
        except JournalError:
            pass


def test_a_snapshot_every_few_rounds_keeps_the_journal_short_and_rebuilds_the_same_state(tmp_path):
    path = tmp_path / "journal.jsonl"
    j, _ = Journal.open(path, State(CFG), snapshot_every=1)
    run_one_round(j)  # round 0 finalized: a snapshot, then a fresh journal
    j.step(HeartbeatSeen(B, 0, H1), 9)
    live = j.state
    j.close()
    covered = json.loads((tmp_path / "journal.jsonl.snapshot").read_text())["n"]
    assert all(json.loads(line)["n"] > covered for line in path.read_text().splitlines())
    again, effects = Journal.open(path, State(CFG), snapshot_every=1)
    assert again.state == live
    assert [e.round for e in effects if isinstance(e, RecordRound)] == [0]  # still re-submittable


def test_a_crash_between_snapshot_and_new_journal_replays_nothing_twice(tmp_path):
    path = tmp_path / "journal.jsonl"
    j, _ = Journal.open(path, State(CFG), snapshot_every=1)
    run_one_round(j)
    j.close()
    full = path.read_text()
    j, _ = Journal.open(path, State(CFG), snapshot_every=1)
    live = j.state
    j.close()
    path.write_text(full)  # as if the old journal had survived the snapshot
    assert Journal.open(path, State(CFG), snapshot_every=1)[0].state == live
