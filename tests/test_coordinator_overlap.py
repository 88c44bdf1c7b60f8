"""Overlapped rounds in the coordinator's round machine: the next round starts as commits close,
trains on the model one update behind, and takes over at the cooldown."""

from dataclasses import replace

from coordinator.rounds import in_flight
from coordinator.state import CommitSeen, PauseRequest, PayloadChecked, Phase, ResumeRequest
from p2p.messages import FRESH_STATE, Reveal, RoundEnd, RoundStart
from tests.test_coordinator_machine import CFG, H0, H1, H2, A, B, C, started

OVERLAP = replace(CFG, overlap=True, rounds=4)
S1, S2, S3 = (bytes([0x30 + i]) * 32 for i in range(3))


def commit(d, key, number, before=FRESH_STATE, after=S1, model=H0):
    return d.send(
        CommitSeen(key, number, bytes([key[0] + 0x40, number]) * 16, 100, model, 2.0, before, after)
    )


def close_round(d, number, members=(A, B), model=H0, states=None):
    """Every member commits round `number` (from `states`' before -> after) and passes the check."""
    for k in members:
        before, after = (states or {}).get(k, (FRESH_STATE, S1))
        commit(d, k, number, before, after, model)
    for k in members:
        d.send(PayloadChecked(k, number, True))


def report(d, model):
    for k in list(d.state.members):
        d.report(k, model)


def test_commits_closing_start_the_next_round_on_the_model_the_members_hold():
    d = started(OVERLAP)
    close_round(d, 0)
    assert d.state.phase == Phase.COOLDOWN and d.state.upcoming.number == 1
    kinds = [type(m).__name__ for m in d.published(Reveal | RoundStart)]
    assert kinds == ["RoundStart", "Reveal", "RoundStart"]
    start = d.published(RoundStart)[-1]
    assert (start.round, start.step, start.model_hash) == (1, 1, H0)


def test_synchronous_rounds_start_the_next_round_only_after_the_cooldown():
    d = started(replace(OVERLAP, overlap=False))
    close_round(d, 0)
    assert [m.round for m in d.published(RoundStart)] == [0]


def test_commits_to_the_announced_round_count_before_it_becomes_the_current_one():
    d = started(OVERLAP)
    close_round(d, 0)
    close_round(d, 1, model=H0)  # trained while round 0 finalizes, on round 0's model
    assert d.state.phase == Phase.COOLDOWN and set(d.state.upcoming.commits) == {A, B}
    report(d, H1)  # round 1 takes over, already committed and checked: it settles at once
    assert d.state.last_finalized == 1 and d.state.upcoming.number == 2
    start = d.published(RoundStart)[-1]
    assert (start.round, start.step, start.model_hash) == (2, 2, H1)


def test_a_commit_to_the_announced_round_on_the_newer_model_is_invalid():
    d = started(OVERLAP)
    close_round(d, 0)
    assert commit(d, A, 1, model=H1).value == "invalid"


def test_the_round_end_names_the_model_its_payloads_apply_to():
    d = started(OVERLAP)
    close_round(d, 0)
    close_round(d, 1, states={A: (S1, S2), B: (S1, S2)})
    report(d, H1)
    report(d, H2)
    ends = d.published(RoundEnd)
    assert [(e.round, e.model_hash) for e in ends] == [(0, H0), (1, H1)]
    assert [e.accepted for e in ends] == [[A, B], [A, B]]


def test_a_commit_from_the_state_a_rejected_payload_left_is_rejected_not_penalized():
    d = started(OVERLAP, members=(A, B, C))
    for k in (A, B, C):
        commit(d, k, 0, FRESH_STATE, S1)
    d.send(PayloadChecked(A, 0, None)), d.send(PayloadChecked(B, 0, True)), d.send(PayloadChecked(C, 0, True))
    for k in (A, B, C):  # round 1 trains from the states round 0 left, before round 0 is decided
        commit(d, k, 1, S1, S2)
        d.send(PayloadChecked(k, 1, True))
    report(d, H1)
    assert d.published(RoundEnd)[0].rejected == [A]
    report(d, H2)
    end = d.published(RoundEnd)[1]
    assert (end.accepted, end.rejected, end.penalized) == ([B, C], [A], [])


def test_a_member_whose_commit_never_reached_the_coordinator_commits_the_next_round_stale():
    d = started(OVERLAP, members=(A, B, C))
    for k in (B, C):  # A's commit to round 0 is lost on the way; A trains on from its state
        commit(d, k, 0, FRESH_STATE, S1)
        d.send(PayloadChecked(k, 0, True))
    d.at(CFG.round_timeout_s)  # round 0 closes without A, round 1 is announced
    for k in (A, B, C):
        commit(d, k, 1, S1, S2)
        d.send(PayloadChecked(k, 1, True))
    report(d, H1)
    report(d, H2)
    end = d.published(RoundEnd)[1]
    assert (end.accepted, end.rejected, end.penalized) == ([B, C], [A], [])


def test_a_commit_from_a_state_nobody_left_is_still_penalized():
    d = started(OVERLAP, members=(A, B, C))
    close_round(d, 0, members=(A, B, C))
    close_round(d, 1, members=(A, B, C), states={A: (S3, S2), B: (S1, S2), C: (S1, S2)})
    report(d, H1)
    report(d, H2)
    end = d.published(RoundEnd)[1]
    assert (end.accepted, end.penalized) == ([B, C], [A])


def test_the_last_round_announces_no_successor():
    d = started(replace(OVERLAP, rounds=2))
    close_round(d, 0)
    close_round(d, 1)
    report(d, H1)
    assert d.state.last_finalized == 1 and [m.round for m in d.published(RoundStart)] == [0, 1]


def test_an_announced_round_that_never_runs_hands_its_batches_out_again():
    d = started(OVERLAP)
    close_round(d, 0)
    announced = sorted(b for ids in d.published(RoundStart)[-1].batches.values() for b in ids)
    d.send(PauseRequest())
    assert d.state.upcoming is None and sorted(d.state.carry_over) == announced
    d.send(ResumeRequest())
    report(d, H0)
    d.at(d.now + 200)
    report(d, H0)
    d.at(d.now + 200)
    restarted = d.published(RoundStart)[-1]
    assert sorted(b for ids in restarted.batches.values() for b in ids) == announced


def test_a_payload_check_of_the_announced_round_counts():
    d = started(OVERLAP)
    close_round(d, 0)
    commit(d, A, 1)
    assert d.send(PayloadChecked(A, 1, False)).value == "applied"
    assert d.state.upcoming.checks == {A: False}


def test_a_member_late_to_report_sits_out_the_next_announced_round_instead_of_stalling_the_run():
    d = started(OVERLAP, members=(A, B, C))
    d.state = replace(d.state, config=replace(d.state.config, min_nodes=2))  # the run goes on with two
    close_round(d, 0, members=(A, B, C))
    close_round(d, 1, members=(A, B, C))
    d.report(A, H1), d.report(B, H1)  # C is still applying round 0
    d.at(d.now + CFG.cooldown_s)
    start = d.published(RoundStart)[-1]
    assert d.state.last_finalized == 1 and (start.round, start.model_hash) == (2, H1)
    assert C not in start.members and C in d.state.members


def test_members_that_all_reported_different_models_send_the_announced_round_back():
    d = started(OVERLAP)
    close_round(d, 0)
    announced = sorted(b for ids in d.published(RoundStart)[-1].batches.values() for b in ids)
    d.report(A, H1), d.report(B, H2)  # no majority: nobody holds the agreed model
    assert d.state.phase in (Phase.WARMUP, Phase.WAITING) and d.state.upcoming is None
    assert sorted(d.state.carry_over) == announced


def test_the_announced_round_waits_a_warmup_at_most_for_a_majority_to_report():
    d = started(OVERLAP, members=(A, B, C))
    close_round(d, 0, members=(A, B, C))
    close_round(d, 1, members=(A, B, C))
    d.report(A, H1)
    d.at(d.now + CFG.cooldown_s + 20)
    assert d.state.phase == Phase.COOLDOWN
    d.at(d.now + CFG.warmup_timeout_s)
    assert d.state.phase in (Phase.WARMUP, Phase.WAITING) and d.state.upcoming is None


def test_the_announced_round_goes_on_once_a_late_majority_holds_the_model():
    d = started(OVERLAP, members=(A, B, C))
    d.state = replace(d.state, config=replace(d.state.config, min_nodes=2))
    close_round(d, 0, members=(A, B, C))
    close_round(d, 1, members=(A, B, C))
    d.report(A, H1)
    d.at(d.now + CFG.cooldown_s + 20)
    assert d.state.phase == Phase.COOLDOWN
    d.report(B, H1)
    assert d.state.last_finalized == 1 and d.published(RoundStart)[-1].model_hash == H1


def test_reports_are_due_a_cooldown_after_the_upcoming_rounds_last_commit():
    d = started(OVERLAP)
    close_round(d, 0)  # finalized at 0 s; members train round 1 before they apply round 0
    d.at(CFG.cooldown_s + 30)
    assert d.state.phase == Phase.COOLDOWN  # round 1's workers have not committed yet
    close_round(d, 1)
    d.at(d.now + CFG.cooldown_s - 1)
    assert d.state.phase == Phase.COOLDOWN
    report(d, H1)
    assert d.state.last_finalized == 1 and d.published(RoundStart)[-1].model_hash == H1


def test_reports_are_due_a_cooldown_past_the_upcoming_deadline_while_a_worker_has_not_committed():
    d = started(OVERLAP, members=(A, B, C))
    close_round(d, 0, members=(A, B, C))
    d.report(A, H1), d.report(B, H1)  # C never reports, nobody commits round 1
    deadline = d.state.upcoming.deadline
    d.at(deadline + CFG.cooldown_s - 1)
    assert (d.state.phase, d.state.last_finalized) == (Phase.COOLDOWN, 0)
    d.at(deadline + CFG.cooldown_s)  # round 1 takes over, past its deadline with no commits
    assert d.state.last_finalized == 1 and d.records()[-1].contributed == ()


def test_batches_in_rounds_under_way_are_in_flight_not_lost():
    d = started(OVERLAP)
    close_round(d, 0)  # round 0 finalized (cooldown), round 1 announced
    s = d.state
    assert in_flight(s) == CFG.global_batch
    assert s.next_batch - s.accepted_batches - len(s.carry_over) - in_flight(s) == 0
