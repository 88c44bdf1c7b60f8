"""The coordinator's round state machine, driven with a fake clock: one transition per test."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import membership
from coordinator.machine import step
from coordinator.state import (
    CommitSeen,
    HeartbeatSeen,
    JoinRequest,
    LeaveRequest,
    Member,
    Outcome,
    PauseRequest,
    PayloadChecked,
    Phase,
    Publish,
    RecordRound,
    Removed,
    Restarted,
    ResumeRequest,
    Seeded,
    State,
    VerdictSeen,
)
from p2p.messages import FRESH_STATE, Recheck, Reveal, RoundEnd, RoundStart
from protocol.checks import commitment, verify_reveal
from protocol.commitments import commitment_root
from protocol.run_config import RoundsSection

A, B, C, D, F = (bytes([i]) * 32 for i in (1, 2, 3, 4, 6))
H0, H1, H2 = (bytes([0x10 + i]) * 32 for i in range(3))
SECRET, E, E_WRONG = bytes(range(32)), bytes([0xEE]) * 32, bytes([0xEF]) * 32  # run secret, replay evidence
CFG = RoundsSection(
    min_nodes=2,
    rounds=3,
    global_batch=8,
    round_timeout_s=60,
    verdict_timeout_s=30,
    cooldown_s=10,
    warmup_timeout_s=100,
    heartbeat_timeout_s=1000,
    max_misses=2,
    validation_rate=0.0,
    audit_rate=0.0,
    weight_by_throughput=False,
)


class Driver:
    """Feeds events at explicit times and keeps every effect."""

    def __init__(self, config=CFG, model_hash=b""):
        self.state = State(config, model_hash=model_hash)
        self.now = 0.0
        self.effects = []
        self.send(Seeded(SECRET))

    def at(self, t):
        self.now = float(t)
        return self.send(None)

    def send(self, event):
        result = step(self.state, event, self.now)
        self.state = result.state
        self.effects.extend(result.effects)
        return result.outcome

    def published(self, kind):
        return [e.message for e in self.effects if isinstance(e, Publish) and isinstance(e.message, kind)]

    def records(self):
        return [e for e in self.effects if isinstance(e, RecordRound)]

    def removed(self):
        return [(e.key, e.reason) for e in self.effects if isinstance(e, Removed)]

    def commit(self, key, loss=2.0, r=None):
        r = r or self.state.round
        return self.send(CommitSeen(key, r.number, bytes([key[0] + 0x40]) * 32, 100, r.model_hash, loss))

    def check(self, key, ok=True, r=None):
        return self.send(PayloadChecked(key, (r or self.state.round).number, ok))

    def verdict(self, validator, target, accept=True, evidence=E, available=True, loss=3.0):
        r = self.state.round.number
        return self.send(
            VerdictSeen(validator, r, target, accept, 1.0 if accept else 0.2, available, evidence, loss)
        )

    def validator_of(self, target):
        (reveal,) = [m for m in self.published(Reveal) if m.round == self.state.round.number]
        return next(v for v, t in reveal.validators.items() if t == target)

    def asked(self, target):
        return [v for m in self.published(Recheck) for v in m.assignments.get(target, [])]

    def report(self, key, model_hash, round_=None):
        return self.send(
            HeartbeatSeen(key, self.state.last_finalized if round_ is None else round_, model_hash)
        )


def started(config=CFG, members=(A, B)):
    """Round 0 under way with exactly `members` (min_nodes raised so nobody starts early)."""
    d = Driver(replace(config, min_nodes=max(config.min_nodes, len(members))))
    for k in members:
        d.send(JoinRequest(k, (), H0))
    return d


def finish_round(d, committers, new_hash=H1):
    for k in committers:
        d.commit(k)
    for k in committers:
        d.check(k)
    for k in list(d.state.members):
        d.report(k, new_hash)


# --- transitions ---


def test_waiting_for_members_until_min_nodes():
    d = Driver()
    d.send(JoinRequest(A, (), H0))
    assert d.state.phase == Phase.WAITING and d.published(RoundStart) == []


def test_a_waiting_run_says_how_many_members_it_waits_for():
    d = Driver(replace(CFG, start_nodes=3))
    d.send(JoinRequest(A, (), H0))
    assert membership.why(d.state) == "waiting for 3 members, have 1"


def test_a_finished_run_says_after_how_many_rounds():
    d = started()
    for _ in range(3):
        finish_round(d, [A, B], H1)
    assert membership.why(d.state) == "finished after 3 rounds"


def test_enough_members_holding_the_same_model_start_round_zero():
    d = started()
    assert d.state.phase == Phase.TRAINING
    (start,) = d.published(RoundStart)
    assert (start.round, start.members, start.model_hash, start.deadline) == (0, [A, B], H0, 60.0)
    assert sorted(b for ids in start.batches.values() for b in ids) == list(range(8))
    assert [len(ids) for ids in start.batches.values()] == [4, 4]


def test_training_to_finalize_when_every_member_committed():
    d = started()
    d.commit(A)
    assert d.state.phase == Phase.TRAINING
    d.commit(B)
    assert d.state.phase == Phase.FINALIZE


def test_finalize_to_cooldown_records_the_round_once_with_the_root():
    d = started()
    d.commit(A), d.commit(B), d.check(A)
    assert d.records() == []
    d.check(B)
    (end,) = d.published(RoundEnd)
    (record,) = d.records()
    assert (end.accepted, end.rejected, end.penalized) == ([A, B], [], [])
    assert record.root == commitment_root({A: bytes([0x41]) * 32, B: bytes([0x42]) * 32})
    assert (record.contributed, record.validated, record.penalized) == ((A, B), (), ())
    assert d.state.phase == Phase.COOLDOWN


def test_cooldown_to_the_next_round_once_every_member_reported_the_new_hash():
    d = started()
    finish_round(d, [A, B], H1)
    assert d.state.phase == Phase.TRAINING
    start = d.published(RoundStart)[-1]
    assert (start.round, start.model_hash) == (1, H1)
    assert sorted(b for ids in start.batches.values() for b in ids) == list(range(8, 16))


def test_a_member_reporting_a_minority_hash_resyncs_through_warmup():
    d = started(replace(CFG, rounds=10), members=(A, B, C))
    finish_round(d, [A, B, C], H1)
    d.commit(A), d.commit(B), d.commit(C)
    d.check(A), d.check(B), d.check(C)
    d.report(A, H2), d.report(B, H2), d.report(C, H1)  # C applied round 1 differently
    assert d.state.model_hash == H2
    assert d.state.phase == Phase.WARMUP and not d.state.members[C].ready


def test_a_straggler_is_dropped_at_the_deadline_and_its_batches_reassigned():
    d = started()
    d.commit(A)
    d.at(60)
    assert d.state.phase == Phase.FINALIZE
    d.check(A)
    (end,) = d.published(RoundEnd)
    assert end.accepted == [A]
    b_batches = list(d.published(RoundStart)[0].batches[B])
    assert list(d.state.carry_over) == b_batches
    d.report(A, H1), d.report(B, H1)
    nxt = d.published(RoundStart)[-1]
    handed = sorted(b for ids in nxt.batches.values() for b in ids)
    assert handed == sorted(b_batches + list(range(8, 12)))
    assert d.state.carry_over == ()


def test_a_member_missing_max_misses_rounds_is_removed():
    d = started(members=(A, B, C))
    for _ in range(2):
        d.commit(A), d.commit(B)
        d.at(d.state.round.deadline)
        d.check(A), d.check(B)
        d.report(A, H1), d.report(B, H1), d.report(C, H1)
    assert (C, "no commit in 2 rounds") in d.removed() and C not in d.state.members


def test_a_silent_member_is_removed_after_the_heartbeat_timeout():
    d = started(replace(CFG, heartbeat_timeout_s=30), members=(A, B, C))
    d.at(20)
    d.report(A, H0, -1), d.report(B, H0, -1)
    d.at(31)
    assert d.removed() == [(C, "heartbeat timeout")]


def test_commits_that_do_not_belong_get_an_outcome_not_an_exception():
    d = started()
    assert d.send(CommitSeen(A, 5, H1, 1, H0, 1.0)) == Outcome.INVALID  # a future round
    assert d.send(CommitSeen(A, 0, H1, 1, H2, 1.0)) == Outcome.INVALID  # wrong model
    assert d.send(CommitSeen(C, 0, H1, 1, H0, 1.0)) == Outcome.IGNORED  # not a member
    assert d.commit(A) == Outcome.APPLIED
    assert d.commit(A) == Outcome.IGNORED  # duplicate
    d.at(61)
    assert d.send(CommitSeen(B, 0, H1, 1, H0, 1.0)) == Outcome.IGNORED  # late


def test_a_payload_failing_the_structural_check_is_penalized_without_recomputation():
    d = started(members=(A, B, C))
    d.commit(A), d.commit(B), d.commit(C)
    d.check(A), d.check(B), d.check(C, ok=False)
    (end,) = d.published(RoundEnd)
    assert (end.accepted, end.penalized) == ([A, B], [C])
    assert (C, "penalized") in d.removed() and C in d.state.banned
    assert d.send(JoinRequest(C, (), H1)) == Outcome.INVALID


def test_a_joiner_enters_at_the_first_boundary_after_it_reports_the_current_model():
    d = started(replace(CFG, rounds=5))
    d.send(JoinRequest(C, (), H0))
    assert C not in d.state.round.batches
    d.report(C, H1, round_=0)  # synced early: it holds round 0's model before the round ends
    finish_round(d, [A, B], H1)
    assert d.state.phase == Phase.TRAINING and C in d.state.round.batches


def test_a_joiner_still_syncing_does_not_hold_the_others_back():
    d = started(replace(CFG, rounds=5))
    d.send(JoinRequest(C, (), H0))
    finish_round(d, [A, B], H1)
    assert d.published(RoundStart)[-1].round == 1 and C not in d.state.round.batches
    d.report(C, H1, round_=0)  # it holds the model the run agreed on after round 0
    d.report(A, H2, round_=1)  # not yet: round 1 is under way
    for k in (A, B):
        d.commit(k), d.check(k)
    d.report(C, H2, round_=1), d.report(A, H2, round_=1), d.report(B, H2, round_=1)
    assert d.state.round.number == 2 and C in d.state.round.batches


def test_a_joiner_that_never_holds_the_model_leaves_at_the_first_boundary_past_its_warmup_time():
    def round_of_a_and_b(new_hash):
        for k in (A, B):
            d.commit(k), d.check(k)
        d.report(A, new_hash), d.report(B, new_hash)

    d = started(replace(CFG, rounds=5))
    d.at(5)
    d.send(JoinRequest(C, (), H0))
    round_of_a_and_b(H1)
    assert C in d.state.members and d.state.round.number == 1
    d.at(5 + CFG.warmup_timeout_s)
    assert C in d.state.members  # mid-round: the round's disputes count the members it began with
    round_of_a_and_b(H2)
    assert (C, "not ready within the warmup") in d.removed() and d.state.round.number == 2


def test_joiners_still_syncing_do_not_vote_on_the_model_the_run_agrees_on():
    d = started(replace(CFG, rounds=5))
    for joiner in (C, D, F):
        d.send(JoinRequest(joiner, (), H0))
    finish_round(d, [A, B], H1)  # two of five members report H1: the two that applied the round
    assert d.state.model_hash == H1 and d.state.phase == Phase.TRAINING


def test_pausing_mid_round_abandons_it_and_resuming_hands_its_batches_out_again():
    d = started()
    d.commit(A)
    d.send(PauseRequest())
    assert d.state.phase == Phase.PAUSED and d.records() == []
    assert sorted(d.state.carry_over) == list(range(8))
    d.send(ResumeRequest())
    start = d.published(RoundStart)[-1]
    assert start.round == 1 and sorted(b for ids in start.batches.values() for b in ids) == list(range(8))


def test_the_run_finishes_after_its_rounds():
    d = started()
    for _ in range(3):
        finish_round(d, [A, B], H1)
    assert d.state.phase == Phase.FINISHED
    assert [r.round for r in d.records()] == [0, 1, 2]


def test_leaving_removes_the_member_and_its_batches_are_carried_over():
    d = started(members=(A, B, C))
    d.send(LeaveRequest(C))
    d.commit(A), d.commit(B)
    d.at(60)
    d.check(A), d.check(B)
    assert ("left" in dict(d.removed()).values()) and set(d.state.carry_over) == set(d.state.round.batches[C])


def test_throughput_weighting_gives_a_member_verified_fast_more_batches():
    d = started(replace(CFG, weight_by_throughput=True, rounds=5, validation_rate=1.0))
    d.at(1), d.commit(A)
    d.at(50), d.commit(B)
    d.check(A), d.check(B)
    d.verdict(d.validator_of(A), A), d.verdict(d.validator_of(B), B)
    d.report(A, H1), d.report(B, H1)
    start = d.published(RoundStart)[-1]
    assert len(start.batches[A]) > len(start.batches[B])


def test_an_unchecked_instant_commit_earns_no_throughput():
    d = started(replace(CFG, weight_by_throughput=True, rounds=5))
    d.at(1), d.commit(A)  # nobody replays it: its speed is not verified work
    d.at(50), d.commit(B)
    d.check(A), d.check(B)
    d.report(A, H1), d.report(B, H1)
    start = d.published(RoundStart)[-1]
    assert len(start.batches[A]) == len(start.batches[B]) == 4


# --- invariants under random event sequences ---

KEYS = (A, B, C, D)
# weighted towards what members mostly do, so sequences reach finalized and overlapped rounds
KINDS = ["join"] * 3 + ["beat"] * 4 + ["commit"] * 5 + ["check"] * 4 + ["verdict"] * 3 + ["time"] * 3
KINDS += ["beat_all"] * 2 + ["beat_bad", "bad_check", "leave", "pause", "resume"]
actions = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 70)),
    min_size=30,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(actions, st.booleans())
def test_random_event_sequences_keep_the_invariants(seq, overlap):
    d = Driver(
        replace(
            CFG,
            validation_rate=0.5,
            rounds=50,
            heartbeat_timeout_s=200,
            weight_by_throughput=True,
            overlap=overlap,
        )
    )
    commits = {}  # (round, key) -> (state before, state after)
    for kind, i, dt in [("join", i, 0) for i in range(len(KEYS))] + seq:
        k, s = KEYS[i], d.state
        r = s.upcoming if s.upcoming is not None and dt % 2 else s.round
        if kind == "join":
            d.send(JoinRequest(k, (), H0))
        elif kind == "beat":
            d.report(k, s.model_hash or H0)
        elif kind == "beat_all":
            for member in list(s.members):
                d.report(member, (s.model_hash or H0, H1)[dt % 2])
        elif kind == "beat_bad":
            d.report(k, H2)
        elif kind == "commit" and r is not None:
            last = commits.get((r.number - 1, k), (None, None))[1]  # as overlapped members chain
            before = (FRESH_STATE, s.states.get(k, FRESH_STATE), H2, last)[
                dt % 4
            ]  # H2: from no accepted state
            after = bytes([r.number % 256, i]) * 16
            e = CommitSeen(k, r.number, bytes([i + 1]) * 32, 10, r.model_hash, 1.0, before or H2, after)
            if d.send(e) == Outcome.APPLIED:
                commits[(r.number, k)] = before or H2, after
        elif kind in ("check", "bad_check") and r is not None:
            d.send(PayloadChecked(k, r.number, kind == "check"))
        elif kind == "verdict" and s.round is not None and s.round.validators:
            v, t = sorted(s.round.validators.items())[i % len(s.round.validators)]
            d.verdict(v, t, accept=dt % 2 == 0, evidence=(E, E_WRONG)[dt % 3 == 0], available=dt % 5 != 0)
        elif kind == "leave":
            d.send(LeaveRequest(k))
        elif kind == "pause":
            d.send(PauseRequest())
        elif kind == "resume":
            d.send(ResumeRequest())
        elif kind == "time":
            d.at(d.now + dt)
        _check_invariants(d, commits)


def _check_invariants(d, commits):
    s = d.state
    last_accepted = {}
    for rec in d.records():
        for k in rec.contributed:
            before, after = commits[(rec.round, k)]
            assert before in (FRESH_STATE, last_accepted.get(k)), (
                "a commit from a state no accepted payload left was accepted"
            )
            last_accepted[k] = after
    assert s.states == last_accepted, "a member's state moved without an accepted payload"
    rounds = [rec.round for rec in d.records()]
    assert rounds == sorted(set(rounds)), "a round was finalized twice"
    assert s.finalized_rounds == len(rounds)
    in_round = (
        [b for ids in s.round.batches.values() for b in ids] if s.round and s.phase != Phase.COOLDOWN else []
    )
    upcoming = [b for ids in s.upcoming.batches.values() for b in ids] if s.upcoming else []
    handed = sorted(list(s.carry_over) + in_round + upcoming)
    assert len(handed) == len(set(handed)), "a batch is both carried over and assigned"
    assert s.accepted_batches + len(handed) == s.next_batch, "a batch was neither accepted nor reassigned"
    assert not (s.banned & set(s.members)), "a penalized member is still a member"
    assert set(s.ready_members) <= set(s.members)
    if s.phase in (Phase.TRAINING, Phase.FINALIZE):
        assert s.round is not None and set(s.round.commits) <= set(s.round.batches)
    assert s.upcoming is None or (s.config.overlap and s.phase in (Phase.FINALIZE, Phase.COOLDOWN))
    for rec in d.records():
        assert not set(rec.penalized) & set(rec.contributed + rec.validated)


def test_the_first_round_waits_for_start_nodes_later_rounds_only_for_min_nodes():
    d = Driver(replace(CFG, start_nodes=3))
    d.send(JoinRequest(A, (), H0)), d.send(JoinRequest(B, (), H0))
    assert d.state.phase == Phase.WAITING
    d.send(JoinRequest(C, (), H0))
    assert d.state.phase == Phase.TRAINING and len(d.state.round.batches) == 3


def test_a_restarted_coordinator_gives_members_a_fresh_heartbeat_deadline():
    d = started(replace(CFG, heartbeat_timeout_s=30))
    d.now = 100.0
    d.send(Restarted())
    d.at(120)
    assert d.removed() == [] and set(d.state.members) == {A, B}


def test_pausing_in_cooldown_keeps_the_finalized_round_out_of_the_carry_over():
    d = started()
    d.at(60)  # nobody committed: the round is finalized empty and its batches carried over
    assert d.state.phase == Phase.COOLDOWN and sorted(d.state.carry_over) == list(range(8))
    d.send(PauseRequest())
    assert d.state.round is None and sorted(d.state.carry_over) == list(range(8))


def test_a_repeated_join_keeps_the_members_readiness():
    d = started()
    assert d.send(JoinRequest(A, ("/ip4/127.0.0.1/tcp/9",), H0)) == Outcome.IGNORED
    assert d.state.members[A].ready and d.state.members[A].addrs == ("/ip4/127.0.0.1/tcp/9",)


S1, S2 = (bytes([0x60 + i]) * 32 for i in range(2))


def commit_from(d, key, before, after):
    r = d.state.round
    return d.send(
        CommitSeen(key, r.number, bytes([key[0] + 0x40]) * 32, 100, d.state.model_hash, 2.0, before, after)
    )


def test_an_accepted_payload_sets_the_state_its_member_must_start_the_next_round_from():
    d = started()
    commit_from(d, A, FRESH_STATE, S1), commit_from(d, B, FRESH_STATE, S2)
    d.check(A), d.check(B)
    assert d.state.states == {A: S1, B: S2}


def test_a_commit_from_the_last_accepted_state_or_a_fresh_one_is_chained():
    d = started(replace(CFG, rounds=3))
    commit_from(d, A, FRESH_STATE, S1), commit_from(d, B, FRESH_STATE, S2)
    d.check(A), d.check(B), d.report(A, H1), d.report(B, H1)
    commit_from(d, A, S1, S2), commit_from(d, B, FRESH_STATE, S1)
    d.check(A), d.check(B)
    assert d.published(RoundEnd)[-1].accepted == [A, B]


def test_a_commit_from_a_state_no_accepted_payload_left_is_penalized():
    d = started()
    commit_from(d, A, S1, S2), commit_from(d, B, FRESH_STATE, S2)
    d.check(A), d.check(B)
    (end,) = d.published(RoundEnd)
    assert (end.accepted, end.penalized) == ([B], [A])


def test_a_rejected_payload_leaves_its_members_state_where_it_was():
    d = started(members=(A, B, C))
    commit_from(d, A, FRESH_STATE, S1), commit_from(d, B, FRESH_STATE, S2)
    d.at(60)  # C never commits; B's payload is never checked, so it is left out
    d.check(A)
    d.at(61 + CFG.verdict_timeout_s)
    assert d.published(RoundEnd)[-1].rejected == [B] and d.state.states == {A: S1}


# --- checks: drawn after commits close, audited, disputes settled by the round's majority ---

CHECKED = replace(CFG, validation_rate=1.0)


def committed(config=CHECKED, members=(A, B, C, D)):
    """Round 0 with every member committed and its payload checked: FINALIZE, checks revealed."""
    d = started(config, members)
    for k in members:
        d.commit(k)
    for k in members:
        d.check(k)
    return d


def settle_others(d, target):
    """Honest accepts for every first check but `target`'s."""
    (reveal,) = d.published(Reveal)
    for v, t in reveal.validators.items():
        if t != target:
            d.verdict(v, t)


def test_round_start_commits_to_its_secrets_and_names_no_validator():
    d = started(CHECKED)
    (start,) = d.published(RoundStart)
    assert not hasattr(start, "validators") and d.published(Reveal) == []
    assert start.check_commitment == commitment(d.state.round.check_secret)
    assert start.audit_commitment == commitment(d.state.round.audit_secret)


def test_commits_closing_reveal_the_secret_and_a_draw_any_member_can_verify():
    d = committed()
    (start,), (reveal,) = d.published(RoundStart), d.published(Reveal)
    assert reveal.commits == {k: bytes([k[0] + 0x40]) * 32 for k in (A, B, C, D)}
    assert sorted(reveal.validators.values()) == [A, B, C, D]
    assert verify_reveal(
        start.check_commitment, reveal.secret, reveal.commits, start.members, 1.0, reveal.validators
    )


def test_a_verdict_from_a_member_not_asked_is_invalid():
    d = committed()
    v = d.validator_of(A)
    other = next(k for k in (B, C, D) if k != v)
    assert d.verdict(other, A) == Outcome.INVALID


def test_an_accept_not_drawn_for_audit_is_credited():
    d = committed()
    settle_others(d, None)
    (record,) = d.records()
    assert record.contributed == (A, B, C, D) and record.validated == (A, B, C, D)


def test_an_audited_accept_confirmed_with_the_same_evidence_credits_both():
    d = committed(replace(CHECKED, audit_rate=1.0))
    for k in (A, B, C, D):
        d.verdict(d.validator_of(k), k)
    v, (w,) = d.validator_of(A), d.asked(A)
    assert w not in (A, v)
    for k in (A, B, C, D):
        d.verdict(d.asked(k)[0], k)
    (record,) = d.records()
    assert A in record.contributed and {v, w} <= set(record.validated)


def test_a_rubber_stamp_accept_without_the_replay_evidence_is_penalized_by_the_majority():
    d = committed(replace(CHECKED, audit_rate=1.0), members=(A, B, C, D, F))
    v = d.validator_of(A)
    for k in (B, C, D, F):
        d.verdict(d.validator_of(k), k)
    for k in (B, C, D, F):
        for w in d.asked(k):
            d.verdict(w, k)
    d.verdict(v, A, evidence=E_WRONG)  # accepts without replaying: it cannot know the evidence
    (w,) = d.asked(A)
    d.verdict(w, A)
    for juror in d.asked(A)[1:]:
        d.verdict(juror, A)
    (record,) = d.records()
    assert v in record.penalized and A in record.contributed and w in record.validated


def test_a_rejection_the_majority_confirms_penalizes_the_target_and_credits_the_rejecters():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.verdict(v, A, accept=False)
    jurors = d.asked(A)
    assert sorted(jurors) == sorted(k for k in (B, C, D) if k != v)
    for juror in jurors:
        d.verdict(juror, A, accept=False)
    (record,) = d.records()
    assert A in record.penalized and {v, *jurors} <= set(record.validated)


def test_a_validator_rejecting_honest_work_is_penalized_and_the_target_accepted():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.verdict(v, A, accept=False)
    for juror in d.asked(A):
        d.verdict(juror, A)
    (record,) = d.records()
    assert record.penalized == (v,) and A in record.contributed


def test_one_colluder_cannot_get_an_honest_validator_penalized():
    d = committed()
    v = d.validator_of(A)  # honest: it rejects A's bad payload
    settle_others(d, A)
    d.verdict(v, A, accept=False)
    colluder, honest = d.asked(A)
    d.verdict(colluder, A, evidence=E_WRONG)
    d.verdict(honest, A, accept=False)
    (record,) = d.records()
    assert set(record.penalized) == {A, colluder} and v not in record.penalized


def test_a_dispute_without_a_majority_by_its_deadline_penalizes_nobody():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.verdict(v, A, accept=False)
    d.verdict(d.asked(A)[0], A)  # one each way, the third silent
    d.at(d.now + CFG.verdict_timeout_s)
    (end,) = d.published(RoundEnd)
    assert A in end.rejected and end.penalized == []


def test_a_target_withholding_its_state_from_two_validators_is_rejected_with_a_strike():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.verdict(v, A, accept=False, available=False)
    (w,) = d.asked(A)
    d.verdict(w, A, accept=False, available=False)
    (end,) = d.published(RoundEnd)
    assert A in end.rejected and end.penalized == [] and d.state.strikes[A] == 1


def test_a_target_withholding_only_from_its_validator_is_judged_by_the_second():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.verdict(v, A, accept=False, available=False)
    d.verdict(d.asked(A)[0], A)
    (record,) = d.records()
    assert A in record.contributed and v not in record.validated and record.penalized == ()


def test_repeated_withholding_is_penalized():
    d = started(replace(CFG, max_unavailable=2, rounds=5), members=(A, B, C))
    for _ in range(2):
        for k in (A, B, C):
            d.commit(k)
        d.check(A, ok=None), d.check(B), d.check(C)  # nobody could fetch A's payload
        for k in (A, B, C):
            d.report(k, H1)
    ends = d.published(RoundEnd)
    assert A in ends[0].rejected and ends[1].penalized == [A]


def test_a_silent_validator_gets_a_second_one_and_no_credit():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.at(d.now + CFG.verdict_timeout_s)
    (w,) = d.asked(A)
    d.verdict(w, A)
    (record,) = d.records()
    assert A in record.contributed and w in record.validated and v not in record.validated


def test_the_loss_recorded_as_verified_comes_from_the_replays():
    d = committed()
    for k in (A, B, C, D):
        d.verdict(d.validator_of(k), k, loss=4.5)
    (record,) = d.records()
    assert record.verified_losses == {k: 4.5 for k in (A, B, C, D)}
    assert record.losses == {k: 2.0 for k in (A, B, C, D)}  # self-reported


def test_a_member_given_no_batches_neither_commits_nor_holds_the_round_open():
    d = started(replace(CFG, global_batch=1))
    idle = next(k for k, ids in d.state.round.batches.items() if not ids)
    worker = next(k for k in (A, B) if k != idle)
    assert d.commit(idle) == Outcome.IGNORED
    d.commit(worker)
    assert d.state.phase == Phase.FINALIZE


def test_a_member_removed_more_than_max_removals_times_is_banned():
    d = started(replace(CFG, max_misses=1, max_removals=1, rounds=50), members=(A, B, C))
    for _ in range(2):  # C joins, misses a round, is removed; twice
        if C not in d.state.members:
            d.send(JoinRequest(C, (), d.state.model_hash))
            d.report(C, d.state.model_hash)
        while C in d.state.members:
            d.commit(A), d.commit(B)
            d.at(d.state.round.deadline)
            d.check(A), d.check(B)
            d.report(A, H1), d.report(B, H1), d.report(C, H1)
    assert C in d.state.banned and d.send(JoinRequest(C, (), H1)) == Outcome.INVALID


# --- liveness and honest safety against whatever a minority sends ---

HONEST, HOSTILE = (A, B, C), (D, F)
LIVE = replace(CFG, min_nodes=3, rounds=2, validation_rate=1.0, audit_rate=0.5, heartbeat_timeout_s=10**6)
# warmup, training, first verdicts, a second replay, a dispute, cooldown: every stage has a deadline
BOUND = LIVE.warmup_timeout_s + LIVE.round_timeout_s + 3 * LIVE.verdict_timeout_s + LIVE.cooldown_s + 1

hostile_first = st.tuples(st.booleans(), st.sampled_from([H0, H2]))  # joins before the honest, with
hostile_actions = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "join",
                "join_bad",
                "commit_good",
                "commit_bad",
                "check",
                "verdict",
                "verdict_asked",
                "beat",
                "leave",
            ]
        ),
        st.integers(0, 1),  # which hostile member
        st.integers(0, 4),  # which target, hash or check result
        st.integers(0, 3),  # a verdict's kind: accept with wrong evidence, reject, unavailable, accept
        st.floats(0, 20),  # seconds passing after it
    ),
    max_size=40,
)


def hostile_verdict(d, k, target, mode):
    accept, available = mode in (0, 3), mode != 2
    return d.verdict(k, target, accept=accept, evidence=E if mode == 3 else E_WRONG, available=available)


class HonestMembers:
    """A, B and C as honest nodes: commit their batches, replay what they are asked to (a bad
    hostile payload is rejected), and report the model every honest replica then holds."""

    def __init__(self, d):
        self.d, self.seen, self.bad = d, 0, set()

    def react(self):
        d, r, upcoming = self.d, self.d.state.round, self.d.state.upcoming
        training = [r] if r is not None and d.state.phase == Phase.TRAINING else []
        for r in training + ([upcoming] if upcoming is not None else []):
            for k in HONEST:
                if r.batches.get(k) and k not in r.commits:
                    d.commit(k, r=r), d.check(k, r=r)
        for effect in d.effects[self.seen :]:
            self.seen += 1
            if not isinstance(effect, Publish):
                continue
            m = effect.message
            if isinstance(m, Reveal):
                self.replay({t: [v] for v, t in m.validators.items()}, m.round)
            elif isinstance(m, Recheck):
                self.replay(m.assignments, m.round)
            elif isinstance(m, RoundEnd):
                for k in HONEST:
                    d.report(k, H1 if m.round == 0 else H2, m.round)

    def replay(self, assignments, number):
        for target, validators in assignments.items():
            for v in validators:
                if v in HONEST and self.d.state.round is not None and self.d.state.round.number == number:
                    self.d.verdict(v, target, accept=(number, target) not in self.bad)


@settings(max_examples=300, deadline=None)
@given(hostile_first, hostile_actions, st.booleans())
def test_a_hostile_minority_neither_stalls_the_run_nor_gets_an_honest_member_penalized(
    first, actions, overlap
):
    d = Driver(replace(LIVE, overlap=overlap), model_hash=H0)  # the run config pins the initial model
    honest = HonestMembers(d)
    early, claimed = first
    for k in (*HOSTILE, *HONEST) if early else (*HONEST, *HOSTILE):
        d.send(JoinRequest(k, (), claimed if k in HOSTILE else H0))
    for kind, who, variant, mode, dt in actions:
        k, r = HOSTILE[who], (d.state.upcoming if d.state.upcoming and mode % 2 else d.state.round)
        if kind in ("join", "join_bad"):
            d.send(JoinRequest(k, (), H0 if kind == "join" else H2))
        elif kind.startswith("commit") and r is not None:
            before = (FRESH_STATE, H2)[variant % 2]
            if (
                d.send(
                    CommitSeen(k, r.number, bytes([k[0], variant]) * 16, 10, r.model_hash, 0.1, before, H2)
                )
                == Outcome.APPLIED
                and kind == "commit_bad"
            ):
                honest.bad.add((r.number, k))
        elif kind == "check" and r is not None:
            d.send(PayloadChecked(k, r.number, (True, False, None)[variant % 3]))
        elif kind == "verdict" and r is not None:
            hostile_verdict(d, k, (A, B, C, D, F)[variant], mode)
        elif kind == "verdict_asked" and r is not None:
            asked = [t for v, t in r.validators.items() if v == k] + [
                t for t in (A, B, C, D, F) if k in d.asked(t)
            ]
            for target in asked:
                hostile_verdict(d, k, target, mode)
        elif kind == "beat":
            d.report(k, (H0, H1, H2)[variant % 3], variant - 1)
        elif kind == "leave":
            d.send(LeaveRequest(k))
        honest.react()
        d.at(d.now + dt)
        honest.react()
        if d.now > BOUND:
            break
    while d.now <= BOUND and d.state.finalized_rounds == 0:
        d.at(d.now + 1.0)
        honest.react()
    assert d.state.finalized_rounds >= 1, f"no round finalized within {BOUND} s (phase {d.state.phase})"
    for record in d.records():
        assert not set(record.penalized) & set(HONEST), "an honest member was penalized"


def test_a_dishonest_vote_cast_after_the_majority_is_still_penalized():
    d = committed()
    v = d.validator_of(A)
    settle_others(d, A)
    d.verdict(v, A, accept=False)
    honest, colluder = d.asked(A)
    d.verdict(honest, A, accept=False)  # the majority is reached here...
    assert d.records() == []  # ...but every asked member's vote is awaited
    d.verdict(colluder, A)
    (record,) = d.records()
    assert set(record.penalized) == {A, colluder} and {v, honest} <= set(record.validated)


def test_a_warmup_that_ends_with_too_few_ready_members_waits_another_warmup_for_the_joiners():
    d = started(replace(CFG, rounds=5, min_nodes=3), members=(A, B, D))
    for k in (A, B, D):
        d.commit(k), d.check(k)
    d.report(A, H1), d.report(D, H1), d.report(B, H2)  # B applied the round wrongly: a resync
    assert d.state.phase == Phase.WARMUP
    d.at(50)
    d.send(JoinRequest(C, (), H0))  # joins mid-warmup, with 50 s of it left
    phases = []
    while d.now < 50 + CFG.warmup_timeout_s - 1:  # C's own time runs out at 150
        d.at(d.now + 1)
        phases.append(d.state.phase)
    assert (B, "not ready within the warmup") in d.removed()
    assert set(phases) == {Phase.WARMUP}  # from 100: A, D and the joiner C, two ready
    d.report(C, H1)
    d.at(d.now + 1)
    assert d.state.phase == Phase.TRAINING and C in d.state.round.batches


def rejoined(reports):
    """A run after round 1 whose members all joined again (none has held its model since)."""
    members = {k: Member(k, (), 0.0, h, reported_round=r) for k, (h, r) in reports.items()}
    return State(CFG, members=members, last_finalized=1, finalized_rounds=2)


def test_the_runs_model_is_not_lost_when_every_member_that_held_it_was_dropped_and_rejoined():
    s = rejoined({A: (H1, 1), B: (H1, 1), C: (H0, -1)})  # C is new: it holds nothing yet
    assert membership.agreed_hash(s) == H1


def test_one_member_alone_cannot_choose_the_model_when_nobody_who_held_it_is_left():
    assert membership.agreed_hash(rejoined({F: (H2, 1), C: (H0, -1)})) == b""  # min_nodes is 2
    assert membership.agreed_hash(rejoined({A: (H1, 1), B: (H1, 1), F: (H2, 1)})) == H1


def test_a_round_start_is_sent_again_only_while_a_worker_has_not_committed():
    d = started()
    assert membership.uncommitted(d.state)
    d.commit(A), d.commit(B)
    assert d.state.phase == Phase.FINALIZE and not membership.uncommitted(d.state)


def test_a_round_end_is_sent_again_only_while_a_member_that_held_the_model_has_not_applied_it():
    d = started(replace(CFG, rounds=5))
    d.send(JoinRequest(C, (), H0))  # a joiner syncs weights: it needs no RoundEnd
    for k in (A, B):
        d.commit(k), d.check(k)
    d.report(A, H1)
    assert membership.unapplied(d.state)  # B has not reported round 0
    d.report(B, H1)
    assert not membership.unapplied(d.state)
