"""The chain submitter: one record_round per round, slots from keys, no double credit."""

import time

from chain.errors import RpcUnavailable
from coordinator.state import RecordRound
from coordinator.submitter import ChainSubmitter
from tests.chain_world import RUN_ID, World

ROOT = bytes(range(32))


def record(round_, contributed=(), validated=(), penalized=()):
    batches = dict.fromkeys(contributed, 1)
    return RecordRound(round_, ROOT, tuple(contributed), batches, tuple(validated), tuple(penalized), {})


def test_a_round_is_recorded_with_the_members_slots():
    w = World()
    a, b = w.permissioned(2)
    sub = ChainSubmitter(w.authority, RUN_ID)
    sub.record(record(0, contributed=[bytes(b.key)], validated=[bytes(a.key)]))
    assert [m.points_earned for m in w.authority.members(RUN_ID)] == [2, 10]
    assert sub.status.recorded == [0]


def test_a_round_the_chain_already_holds_is_skipped_so_nothing_is_credited_twice():
    w = World()
    (a,) = w.permissioned(1)
    first, restarted = ChainSubmitter(w.authority, RUN_ID), ChainSubmitter(w.authority, RUN_ID)
    first.record(record(0, contributed=[bytes(a.key)]))
    restarted.record(record(0, contributed=[bytes(a.key)]))
    assert restarted.status.skipped == [0]
    assert w.authority.member(RUN_ID, a.key).points_earned == 10


def test_keys_the_program_would_refuse_are_dropped_and_counted():
    w = World()
    a, b = w.permissioned(2)
    w.authority.revoke(RUN_ID, b.key)
    sub = ChainSubmitter(w.authority, RUN_ID)
    sub.record(record(0, contributed=[bytes(a.key), bytes(b.key), bytes(32)]))
    assert w.authority.member(RUN_ID, a.key).points_earned == 10
    assert sub.status.dropped_bits == {"contributed: revoked": 1, "contributed: not on chain": 1}


class FlakyTransport:
    """Fails the first `failures` calls as if the RPC endpoint were down."""

    def __init__(self, inner, failures):
        self.inner, self.failures = inner, failures

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if self.failures > 0:
                self.failures -= 1
                raise RpcUnavailable("http://127.0.0.1:1", "connection refused")
            return getattr(self.inner, name)(*args, **kwargs)

        return call


def test_the_background_thread_retries_until_the_endpoint_is_back_and_keeps_order():
    w = World()
    (a,) = w.permissioned(1)
    w.authority.transport = FlakyTransport(w.transport, failures=3)
    sub = ChainSubmitter(w.authority, RUN_ID, retry_s=0.01).start()
    for r in range(3):
        sub.submit(record(r, contributed=[bytes(a.key)]))
    sub.close(drain_timeout=30)
    assert sub.status.recorded == [0, 1, 2] and sub.status.retries == 3
    assert w.authority.member(RUN_ID, a.key).points_earned == 30


def test_a_round_the_program_refuses_is_given_up_reported_and_later_rounds_still_recorded():
    w = World()
    (a,) = w.permissioned(1)
    sub = ChainSubmitter(w.authority, RUN_ID, retry_s=0.01).start()
    w.authority.update_run(RUN_ID, paused=True)
    sub.submit(record(0, contributed=[bytes(a.key)]))
    deadline = time.monotonic() + 30
    while 0 not in sub.status.failed and time.monotonic() < deadline:
        time.sleep(0.05)
    w.authority.update_run(RUN_ID, paused=False)
    sub.submit(record(1, contributed=[bytes(a.key)]))
    sub.close(drain_timeout=30)
    assert "RunPaused" in sub.status.failed[0] and sub.status.recorded == [1]
    assert sub.status.retries == 0 and sub.status.cleared_at >= sub.status.error_at  # said, and cleared


def test_a_member_that_left_since_the_round_loses_its_credit_not_everyones():
    w = World()
    a, b = w.permissionless(2, unbonding=60)
    b.leave(RUN_ID)  # between the round's end and its record
    sub = ChainSubmitter(w.authority, RUN_ID)
    sub.record(record(0, contributed=[bytes(a.key), bytes(b.key)], penalized=[]))
    assert [m.points_earned for m in w.authority.members(RUN_ID)] == [10, 0]
    assert sub.status.recorded == [0] and sub.status.dropped_bits == {"contributed: left": 1}


def test_a_member_still_unbonding_can_be_penalized():
    w = World()
    a, b = w.permissionless(2, unbonding=60)
    b.leave(RUN_ID)
    sub = ChainSubmitter(w.authority, RUN_ID)
    sub.record(record(0, contributed=[bytes(a.key)], penalized=[bytes(b.key)]))
    assert w.authority.member(RUN_ID, b.key).stake == 0 and sub.status.dropped_bits == {}
