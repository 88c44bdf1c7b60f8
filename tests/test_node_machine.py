"""The node's pure round machine, driven with a fake clock and every message an outsider can forge."""

from dataclasses import replace

from node import machine
from node.machine import (
    Applied,
    Apply,
    Dial,
    NodeState,
    Publish,
    Received,
    Sync,
    Tick,
    Train,
    Trained,
    Validate,
)
from p2p.messages import Commit, Heartbeat, Join, Recheck, Reveal, RoundEnd, RoundStart, RunInfo
from protocol.checks import check_seed, choose_checks, commitment

ME, COORD, FORGER, OTHER = (bytes([i]) * 32 for i in (1, 2, 3, 4))
H0, H1 = bytes([0x10]) * 32, bytes([0x11]) * 32
CHECK, AUDIT = b"check-secret".ljust(32, b"."), b"audit-secret".ljust(32, b".")
MODEL = H0


class Node:
    def __init__(self, **fields):
        self.state = NodeState(ME, COORD, 1.0, H0, ("/ip4/127.0.0.1/tcp/1",), **fields)
        self.now, self.effects = 0.0, []

    def send(self, event, sender=COORD):
        event = event if isinstance(event, machine.Event) else Received(sender, event)
        result = machine.step(self.state, event, self.now)
        self.state = result.state
        self.effects.extend(result.effects)
        return result.effects

    def jobs(self, kind):
        return [e for e in self.effects if isinstance(e, kind)]

    def published(self, kind):
        return [e.message for e in self.effects if isinstance(e, Publish) and isinstance(e.message, kind)]


def start(number=0, batches=None):
    batches = {ME: [0, 1], OTHER: [2, 3]} if batches is None else batches
    members = sorted(batches)
    return RoundStart(number, number, 7, members, batches, 60.0, H0, commitment(CHECK), commitment(AUDIT))


def commit(number=0, payload=b"\x55" * 32):
    return Commit(number, payload, 100, H0, 2.0, bytes(32), H1)


def reveal(number=0, commits=None):
    commits = {ME: b"\x66" * 32, OTHER: b"\x55" * 32} if commits is None else commits
    validators = choose_checks(check_seed(CHECK, commits), [ME, OTHER], list(commits), 1.0)
    return Reveal(number, CHECK, commits, validators)


def test_a_round_start_from_the_coordinator_asks_to_train_its_batches():
    n = Node()
    n.send(start())
    assert n.jobs(Train) == [Train(start())] and n.state.admitted


def test_a_member_given_no_batches_trains_nothing():
    n = Node()
    n.send(start(batches={ME: [], OTHER: [0, 1]}))
    assert n.jobs(Train) == [] and n.state.admitted


def test_every_steering_message_from_anyone_but_the_coordinator_is_refused_and_counted():
    n = Node()
    forged = [start(10**9), reveal(), Recheck(0, {OTHER: [ME]}), RoundEnd(0, [], [ME], [], AUDIT, MODEL)]
    forged.append(RunInfo("", 0, "waiting", -1, H1, 0))
    for message in forged:
        n.send(message, sender=FORGER)
    assert n.state.refused == {"RoundStart": 1, "Reveal": 1, "Recheck": 1, "RoundEnd": 1, "RunInfo": 1}
    assert n.state.rounds == {} and [e for e in n.effects if not isinstance(e, Publish)] == []


def test_round_numbers_only_move_forward():
    n = Node()
    n.send(start(5))
    n.send(start(3))
    n.send(start(5))
    assert list(n.state.rounds) == [5] and len(n.jobs(Train)) == 1


def test_the_revealed_draw_asks_for_a_replay_once_the_targets_commit_is_in():
    n = Node()
    n.send(start())
    n.send(reveal())
    assert n.jobs(Validate) == [] and n.state.unverified == {}
    n.send(commit(), sender=OTHER)
    (job,) = n.jobs(Validate)
    assert (job.target, job.commit) == (OTHER, commit())
    n.send(reveal())
    assert len(n.jobs(Validate)) == 1


def test_a_draw_that_does_not_verify_is_reported():
    n = Node()
    n.send(start())
    bad = replace(reveal(), validators={ME: OTHER, OTHER: ME, FORGER: ME})
    n.send(bad)
    assert n.state.unverified == {"Reveal": 1}


def test_a_recheck_naming_this_node_asks_for_a_replay():
    n = Node()
    n.send(start())
    n.send(commit(), sender=OTHER)
    n.send(reveal(commits={}))
    n.send(Recheck(0, {OTHER: [FORGER, ME]}))
    assert [(j.target, j.secret) for j in n.jobs(Validate)] == [(OTHER, CHECK)]


def test_a_replay_waits_for_the_secret_that_draws_the_state_it_samples():
    n = Node()
    n.send(start())
    n.send(commit(), sender=OTHER)
    n.send(Recheck(0, {OTHER: [ME]}))
    assert n.jobs(Validate) == []
    n.send(reveal(commits={}))
    assert [(j.target, j.secret) for j in n.jobs(Validate)] == [(OTHER, CHECK)]


def test_a_commit_from_a_key_without_batches_is_dropped():
    n = Node()
    n.send(start())
    n.send(commit(), sender=FORGER)
    assert n.state.rounds[0].commits == {}


def test_commits_ahead_of_their_round_start_are_kept_for_it_within_bounds():
    n = Node()
    n.send(start(0))
    n.send(commit(1), sender=OTHER)
    n.send(commit(9), sender=OTHER)  # too far ahead: dropped
    n.send(start(1))
    assert n.state.rounds[1].commits == {OTHER: commit(1)} and 9 not in n.state.early


def test_a_round_end_is_applied_once_and_a_wrong_audit_secret_is_reported():
    n = Node()
    n.send(start())
    n.send(RoundEnd(0, [ME], [], [], b"x" * 32, MODEL))
    n.send(RoundEnd(0, [ME], [], [], b"x" * 32, MODEL))
    assert len(n.jobs(Apply)) == 1 and n.state.unverified == {"RoundEnd": 1}


def test_an_applied_round_is_reported_with_its_new_model():
    n = Node()
    n.send(start())
    n.send(RoundEnd(0, [ME], [], [], AUDIT, MODEL))
    n.send(Applied(0, H1))
    assert (n.state.model_hash, n.state.applied_round) == (H1, 0)
    assert n.published(Heartbeat)[-1] == Heartbeat(0, H1)


def test_a_trained_round_is_committed():
    n = Node()
    n.send(start())
    n.send(Trained(0, commit()))
    assert n.published(Commit) == [commit()] and n.state.busy == 0


def test_a_node_behind_the_run_syncs_only_when_no_job_is_running():
    n = Node()
    n.send(start())  # a training job is now running
    n.send(RunInfo("", 1, "warmup", 0, H1, 1))
    assert n.jobs(Sync) == []
    n.send(Trained(0, None))
    n.send(RunInfo("", 1, "warmup", 0, H1, 1))
    assert n.jobs(Sync) == [Sync(H1, 0, 1)]


def test_a_joiner_syncs_while_the_run_trains_and_never_during_a_cooldown():
    n = Node()
    n.send(RunInfo("", 4, "cooldown", 3, H1, 4))  # H1 may be older than what members now hold
    assert n.jobs(Sync) == []
    n.send(RunInfo("", 4, "training", 3, H1, 4))
    assert n.jobs(Sync) == [Sync(H1, 3, 4)]


def test_joins_until_admitted_and_heartbeats_on_the_clock():
    n = Node()
    n.send(Tick())
    n.now = 1.0
    n.send(Tick())
    assert len(n.published(Join)) == 1 and len(n.published(Heartbeat)) == 1
    n.now = 5.0
    n.send(Tick())
    assert len(n.published(Join)) == 2 and len(n.published(Heartbeat)) == 2
    n.send(start())
    n.now = 10.0
    n.send(Tick())
    assert len(n.published(Join)) == 2


def test_an_unanswered_join_is_repeated_ever_more_slowly_and_promptly_after_a_drop():
    n = Node()
    sent = []
    for t in range(0, 200):
        n.now = float(t)
        before = len(n.published(Join))
        n.send(Tick())
        if len(n.published(Join)) > before:
            sent.append(t)
    assert sent == [0, 5, 15, 35, 75, 135, 195]  # waits 5, 10, 20, 40, then at most 60
    n.send(start())  # admitted
    n.now = 300.0
    n.send(Tick())
    n.send(start(number=1, batches={OTHER: [1]}))  # dropped
    n.send(Tick())
    assert len(n.published(Join)) == len(sent) + 1


def test_a_member_announcing_itself_is_dialled_once():
    n = Node()
    n.send(Join(["/ip4/127.0.0.1/tcp/9"]), sender=OTHER)
    n.send(Join(["/ip4/127.0.0.1/tcp/9"]), sender=OTHER)
    n.send(Join(["/ip4/127.0.0.1/tcp/8"]), sender=ME)
    assert n.jobs(Dial) == [Dial(("/ip4/127.0.0.1/tcp/9",))]
