"""A restarted coordinator rebuilds its state from the journal and re-records nothing twice."""

import pytest

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
