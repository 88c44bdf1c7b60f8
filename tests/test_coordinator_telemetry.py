"""What the coordinator measures: each phase's span, members' records, departures and why."""

from dataclasses import replace

from coordinator.service import initial_state
from coordinator.state import CommitInfo, Phase, RecordRound, Removed, Round
from coordinator.telemetry import Telemetry, member_rows, run_header
from protocol.run_config import RunConfig

A, B = b"a" * 32, b"b" * 32


def test_leaving_a_phase_records_its_span_under_the_round():
    t = Telemetry()
    s = replace(initial_state(RunConfig()), phase=Phase.TRAINING, phase_started_at=100.0, next_round=4)
    t.phase_changed(s, replace(s, phase=Phase.FINALIZE, phase_started_at=102.5))
    assert list(t.phases) == [(4, "training", 100.0, 2.5)]


def test_staying_in_a_phase_records_nothing():
    t = Telemetry()
    s = replace(initial_state(RunConfig()), phase=Phase.TRAINING, phase_started_at=100.0)
    t.phase_changed(s, s)
    assert list(t.phases) == []


def test_a_recorded_round_counts_each_members_part():
    t = Telemetry()
    t.recorded(RecordRound(0, bytes(32), (A,), {A: 2}, (B,), (B,), {A: 3.0}, {A: 2.5}))
    assert (t.records[A].accepted, t.records[B].validations, t.records[B].penalized) == (1, 1, 1)
    assert t.losses == {0: 3.0} and t.verified_losses == {0: 2.5} and t.penalties == 1


def test_a_removed_member_stays_in_the_table_with_why():
    t = Telemetry()
    t.joined(A, "NVIDIA H200\x1b[31m")
    t.removed_member(Removed(A, "missed 2 rounds"), now=50.0)
    (row,) = member_rows(initial_state(RunConfig()), t, {A: 40}, now=60.0)
    assert row["status"] == "removed: missed 2 rounds" and row["last_seen_s"] == 10.0
    assert row["points"] == 40 and row["hardware"] == "NVIDIA H200[31m"  # no terminal escapes kept


def test_the_header_shows_the_round_an_overlapped_run_trains_next_and_its_commits():
    upcoming = Round(5, 5, 0, b"", b"", 0.0, 60.0, {A: (1, 2), B: (3,)})
    commit = CommitInfo(bytes(32), 10, bytes(32), 2.0, 1.0, bytes(32), True)
    upcoming = replace(upcoming, commits={A: commit})
    s = replace(initial_state(RunConfig()), upcoming=upcoming)
    assert run_header(s)["upcoming"] == {"round": 5, "commits": 1, "workers": 2}
    assert run_header(initial_state(RunConfig()))["upcoming"] is None
