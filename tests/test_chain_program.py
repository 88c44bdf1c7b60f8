"""The program's instructions through the client, in LiteSVM: each happy path, then each attack."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.instructions import create_idempotent_associated_token_account

from chain import instructions as ixs
from chain import spec
from chain.errors import ProgramError, TransactionFailed
from chain.localnet import Localnet
from chain.state import MemberStatus, Mode, RunParams
from tests.chain_world import RUN_ID, SOL, STAKE, World, rejects, with_accounts

ROOT = bytes(range(32))


@pytest.fixture
def world():
    return World()


@pytest.fixture(params=["litesvm", "json-rpc"])
def any_world(request):
    """Happy paths run twice: straight into LiteSVM, and through eranos localnet's JSON-RPC."""
    if request.param == "litesvm":
        yield World()
        return
    localnet = Localnet()
    server = localnet.serve()
    yield World(svm=localnet.svm, rpc_url=server.url)
    server.close()


# --- happy paths ---


def test_initialize_run_binds_table_mint_and_params(any_world):
    run = any_world.authority.create_run(RUN_ID, Mode.PERMISSIONED, RunParams(10, 2, 0, 0, 60))
    assert (run.run_id, run.mode, run.paused, run.member_count) == (RUN_ID, Mode.PERMISSIONED, False, 0)
    assert run.authority == any_world.authority.key
    assert run.params == RunParams(10, 2, 0, 0, 60)
    assert (run.address, run.bump) == ixs.run_address(RUN_ID, any_world.authority.key)
    assert any_world.svm.account(run.members).owner == any_world.svm.program_id
    assert any_world.svm.account(run.mint).owner == Pubkey.from_string(spec.TOKEN_PROGRAM)


def test_update_run_pauses_at_once_and_changes_rates_after_the_notice(any_world):
    any_world.permissioned(params=RunParams(10, 2, 0, 0, 0))  # a permissioned run may give no notice
    run = any_world.authority.update_run(RUN_ID, RunParams(7, 3, 0, 0, 5), paused=True)
    assert run.params == RunParams(7, 3, 0, 0, 5) and run.paused and run.pending is None


def test_authorized_node_joins_into_the_next_slot(any_world):
    a, b = any_world.permissioned(2)
    members = any_world.authority.members(RUN_ID)
    assert [m.key for m in members] == [a.key, b.key]
    assert [m.status for m in members] == [MemberStatus.ACTIVE] * 2
    assert any_world.authority.run(RUN_ID).active_count == 2


def test_permissionless_join_deposits_the_stake_into_the_run(any_world):
    any_world.permissionless()
    node = any_world.client()
    before, run_before = node.balance(), any_world.svm.balance(any_world.authority.run(RUN_ID).address)
    member = node.join(RUN_ID)
    assert member.stake == STAKE
    assert node.balance() == before - STAKE - 5000  # one signature's fee
    assert any_world.svm.balance(any_world.authority.run(RUN_ID).address) == run_before + STAKE
    assert any_world.authority.run(RUN_ID).total_staked == STAKE


def test_record_round_credits_points_and_logs_the_round(any_world):
    a, b, c = any_world.permissioned(3)
    any_world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0, 1], validated=[1, 2])
    members = any_world.authority.members(RUN_ID)
    assert [m.points_earned for m in members] == [10, 12, 2]
    assert [(m.contributions, m.validations) for m in members] == [(1, 0), (1, 1), (0, 1)]
    run = any_world.authority.run(RUN_ID)
    assert run.last_recorded_round == 1
    record = run.recent[-1]
    assert (record.round, record.root, record.contributed, record.validated, record.penalized) == (
        1,
        ROOT,
        2,
        2,
        0,
    )
    logs = list(any_world.svm.history.values())[-1].logs
    assert "Program log: eranos: round recorded" in logs


def test_contribution_points_are_paid_per_accepted_batch(any_world):
    any_world.permissioned(3)
    any_world.authority.record_round(RUN_ID, 1, ROOT, contributed={0: 3, 2: 1}, validated=[1])
    members = any_world.authority.members(RUN_ID)
    assert [m.points_earned for m in members] == [30, 2, 10]
    assert [m.contributions for m in members] == [3, 0, 1]


@pytest.mark.parametrize("batches", [b"", b"\x01", b"\x01\x01\x01", b"\x01\x00"], ids=repr)
def test_batch_counts_must_be_one_positive_count_per_contributor(world, batches):
    world.permissioned(3)
    run = world.authority.run(RUN_ID)
    bits = (ixs.bitmap([0, 2], 3), ixs.bitmap([], 3), ixs.bitmap([], 3))
    with rejects("BatchCounts"):
        world.authority.send([_record_ix(world, bits=bits, batches=batches)])
    assert world.authority.members(RUN_ID)[0].points_earned == 0 and run.last_recorded_round is None


def test_slashed_stake_is_burned_locked_in_the_run_for_good(any_world):
    a, b = any_world.permissionless(2)
    before = any_world.svm.balance(any_world.authority.run(RUN_ID).address)
    any_world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0], penalized=[1])
    run = any_world.authority.run(RUN_ID)
    assert (run.burned, run.total_staked, run.active_count) == (STAKE, STAKE, 1)
    assert any_world.svm.balance(run.address) == before  # no instruction moves burned lamports
    slashed = any_world.authority.member(RUN_ID, b.key)
    assert (slashed.status, slashed.stake, slashed.penalties) == (MemberStatus.SLASHED, 0, 1)


def test_the_round_ring_keeps_the_most_recent_rounds(any_world):
    any_world.permissioned(1)
    for r in range(1, spec.ROUND_RING + 3):
        any_world.authority.record_round(RUN_ID, r, ROOT, contributed=[0])
    recent = any_world.authority.run(RUN_ID).recent
    assert [rec.round for rec in recent] == list(range(3, spec.ROUND_RING + 3))


def test_claim_mints_exactly_the_points_as_tokens(any_world):
    (a,) = any_world.permissioned(1)
    any_world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0], validated=[0])
    any_world.authority.record_round(RUN_ID, 2, ROOT, contributed=[0])
    assert a.claim(RUN_ID, 5) == 5
    assert a.claim(RUN_ID) == 17
    assert a.token_balance(RUN_ID) == 22
    assert any_world.authority.member(RUN_ID, a.key).points_claimed == 22


def test_leave_then_withdraw_after_unbonding_returns_the_stake(any_world):
    (a,) = any_world.permissionless(1, unbonding=100)
    any_world.svm.set_time(1_000)
    assert a.leave(RUN_ID).unbond_at == 1_100
    any_world.svm.set_time(1_100)
    before = a.balance()
    assert a.withdraw_stake(RUN_ID) == STAKE
    assert a.balance() == before + STAKE - 5000
    assert any_world.authority.run(RUN_ID).total_staked == 0


def test_rejoining_after_leaving_reuses_the_slot(any_world):
    a, b = any_world.permissioned(2)
    a.leave(RUN_ID)
    any_world.authority.record_round(RUN_ID, 4, ROOT, contributed=[1])
    member = a.join(RUN_ID)
    assert (member.slot, member.status, member.joined_round) == (0, MemberStatus.ACTIVE, 5)
    assert any_world.authority.run(RUN_ID).member_count == 2


def test_a_member_that_left_earns_nothing_more_but_is_slashable_while_unbonding(any_world):
    a, b = any_world.permissionless(2)
    a.leave(RUN_ID)
    with rejects("MemberNotCreditable"):
        any_world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
    any_world.authority.record_round(RUN_ID, 1, ROOT, contributed=[1], penalized=[0])
    left = any_world.authority.member(RUN_ID, a.key)
    assert (left.points_earned, left.stake, left.status) == (0, 0, MemberStatus.SLASHED)


def test_a_member_that_withdrew_is_neither_credited_nor_left_with_anything_to_slash(world):
    (a,) = world.permissionless(1, unbonding=60)
    a.leave(RUN_ID)
    world.svm.set_time(int(time.time()) + 61)
    a.withdraw_stake(RUN_ID)
    with rejects("MemberNotCreditable"):
        world.authority.record_round(RUN_ID, 1, ROOT, validated=[0])
    assert world.authority.member(RUN_ID, a.key).points_earned == 0


def test_a_run_id_belongs_to_its_authority_so_it_cannot_be_squatted(world):
    squatter = world.client(10 * SOL, own_runs=True)
    squatter.create_run(RUN_ID, Mode.PERMISSIONLESS, RunParams(10, 2, 0, 0, 60))  # takes the id first
    run = world.authority.create_run(RUN_ID, Mode.PERMISSIONED, RunParams(10, 2))
    assert run.authority == world.authority.key and run.address != squatter.run(RUN_ID).address


def test_a_permissionless_run_keeps_stake_slashable_for_the_minimum_unbonding(world):
    with rejects("InvalidArgument"):
        world.authority.create_run(RUN_ID, Mode.PERMISSIONLESS, RunParams(10, 2, STAKE, STAKE, 59))


def test_new_params_apply_only_after_the_notice_and_are_logged(world):
    world.permissionless(0, unbonding=60)
    raised = RunParams(10, 2, required_stake=2 * STAKE, slash_amount=2 * STAKE, unbonding_seconds=60)
    run = world.authority.update_run(RUN_ID, raised)
    assert run.params.required_stake == STAKE and run.pending == raised and run.pending_at > 0
    assert "Program log: eranos: params pending" in list(world.svm.history.values())[-1].logs
    early = world.client()
    assert early.join(RUN_ID).stake == STAKE  # still the stake members were promised
    world.svm.set_time(int(time.time()) + 61)
    late = world.client()
    assert late.join(RUN_ID).stake == 2 * STAKE
    run = world.authority.run(RUN_ID)
    assert run.params == raised and run.pending is None


def test_a_member_below_a_raised_stake_earns_nothing_until_it_tops_up(world):
    (a,) = world.permissionless(1, unbonding=60)
    world.authority.update_run(RUN_ID, RunParams(10, 2, 2 * STAKE, STAKE, 60))
    world.svm.set_time(int(time.time()) + 61)
    with rejects("MemberNotCreditable"):
        world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])


def test_revoked_node_keeps_its_points_claimable(any_world):
    (a,) = any_world.permissioned(1)
    any_world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
    any_world.authority.revoke(RUN_ID, a.key)
    assert a.claim(RUN_ID) == 10


def test_a_prefunded_run_address_still_initializes(any_world):
    # Anyone can send lamports to the PDA to block a plain createAccount; initialize tops it up.
    any_world.svm.airdrop(ixs.run_address(RUN_ID, any_world.authority.key)[0], 1_000_000)
    assert any_world.authority.create_run(RUN_ID, Mode.PERMISSIONED, RunParams()).run_id == RUN_ID


# --- attacks ---


def _record_ix(world, signer=None, round_=1, bits=None, batches=None):
    run = world.authority.run(RUN_ID)
    empty = ixs.bitmap([], run.member_count)
    bits = bits or (empty, empty, empty)
    if batches is None:  # one batch per contributor
        batches = bytes([1]) * sum(bin(b).count("1") for b in bits[0])
    return ixs.record_round(signer or world.authority.key, run, round_, ROOT, *bits, batches)


def test_missing_signer_is_rejected(world):
    world.permissioned(1)
    ix = _record_ix(world)
    unsigned = with_accounts(ix, {0: AccountMeta(world.authority.key, is_signer=False, is_writable=False)})
    payer = world.client()
    with rejects("MissingSigner"):
        world.send_raw(payer.keypair, [unsigned])


def test_wrong_authority_is_rejected(world):
    world.permissioned(1)
    mallory = world.client()
    with rejects("Unauthorized"):
        mallory.send([_record_ix(world, signer=mallory.key)])
    with rejects("Unauthorized"):
        mallory.send(
            [ixs.update_run(mallory.key, world.authority.run(RUN_ID).address, RunParams(10**9, 0), False)]
        )


def test_run_owned_by_another_program_is_rejected(world):
    world.permissioned(1)
    run = world.authority.run(RUN_ID)
    ix = with_accounts(_record_ix(world), {1: AccountMeta(run.mint, is_signer=False, is_writable=True)})
    with rejects("WrongOwner"):
        world.authority.send([ix])


def _forge_run(world, owner, authority):
    """A copy of the real Run's bytes with another authority, at a fresh address."""
    run = world.authority.run(RUN_ID)
    data = bytearray(world.svm.account(run.address).data)
    off = spec.offsets(spec.RUN)["authority"]
    data[off : off + 32] = bytes(authority)
    fake = Keypair().pubkey()
    world.svm.set_account(fake, Account(10 * SOL, bytes(data), owner, False, 0))
    return fake


@pytest.mark.parametrize("owned_by_program", [False, True], ids=["foreign-owner", "program-owned-not-pda"])
def test_forged_run_with_a_valid_discriminator_is_rejected(world, owned_by_program):
    world.permissioned(1)
    mallory = world.client()
    owner = world.svm.program_id if owned_by_program else Keypair().pubkey()
    fake = _forge_run(world, owner, mallory.key)
    ix = with_accounts(_record_ix(world, signer=mallory.key), {1: AccountMeta(fake, False, True)})
    with rejects("WrongPda" if owned_by_program else "WrongOwner"):
        mallory.send([ix])


def test_initialize_with_a_run_account_that_is_not_the_pda_is_rejected(world):
    table, mint = Keypair(), Keypair()
    a = world.authority
    ix = ixs.initialize_run(a.key, RUN_ID, table.pubkey(), mint.pubkey(), Mode.PERMISSIONED, RunParams())
    wrong = with_accounts(
        ix, {1: AccountMeta(ixs.run_address(RUN_ID + 1, world.authority.key)[0], False, True)}
    )
    setup = [
        ixs.create_member_table(a.key, table.pubkey(), world.svm.rent_exempt_minimum(ixs.MEMBER_TABLE_SIZE)),
        *ixs.create_mint(
            a.key, mint.pubkey(), world.svm.rent_exempt_minimum(82), ixs.run_address(RUN_ID, a.key)[0], 0
        ),
    ]
    with rejects("WrongPda"):
        a.send([*setup, wrong], [table, mint])


def test_reinitializing_a_run_is_rejected(world):
    world.permissioned()
    with rejects("AlreadyInitialized"):
        world.authority.create_run(RUN_ID, Mode.PERMISSIONLESS, RunParams())


def test_an_initialized_member_table_cannot_be_bound_to_a_second_run(world):
    world.permissioned()
    run = world.authority.run(RUN_ID)
    a = world.authority
    mint = Keypair()
    other_run = ixs.run_address(RUN_ID + 1, world.authority.key)[0]
    with rejects("AlreadyInitialized"):
        a.send(
            [
                *ixs.create_mint(a.key, mint.pubkey(), world.svm.rent_exempt_minimum(82), other_run, 0),
                ixs.initialize_run(
                    a.key, RUN_ID + 1, run.members, mint.pubkey(), Mode.PERMISSIONED, RunParams()
                ),
            ],
            [mint],
        )


def test_a_mint_whose_authority_is_not_the_run_is_rejected(world):
    a = world.authority
    table, mint = Keypair(), Keypair()
    with rejects("WrongMint"):
        a.send(
            [
                ixs.create_member_table(
                    a.key, table.pubkey(), world.svm.rent_exempt_minimum(ixs.MEMBER_TABLE_SIZE)
                ),
                *ixs.create_mint(a.key, mint.pubkey(), world.svm.rent_exempt_minimum(82), a.key, 0),
                ixs.initialize_run(
                    a.key, RUN_ID, table.pubkey(), mint.pubkey(), Mode.PERMISSIONED, RunParams()
                ),
            ],
            [table, mint],
        )


def _every_instruction(world, node):
    run = world.authority.run(RUN_ID)
    a = world.authority.key
    empty = ixs.bitmap([], run.member_count)
    return {
        "update_run": ixs.update_run(a, run.address, RunParams(), False),
        "authorize_node": ixs.authorize_node(a, run, node.key),
        "revoke_node": ixs.revoke_node(a, run, node.key),
        "join": ixs.join(node.key, run),
        "record_round": ixs.record_round(a, run, 9, ROOT, empty, empty, empty, b""),
        "claim": ixs.claim(node.key, run, 1)[1],
        "leave": ixs.leave(node.key, run),
        "withdraw_stake": ixs.withdraw_stake(node.key, run),
    }


@pytest.mark.parametrize(
    "name",
    [
        "update_run",
        "authorize_node",
        "revoke_node",
        "join",
        "record_round",
        "claim",
        "leave",
        "withdraw_stake",
    ],
)
def test_the_same_account_passed_twice_is_rejected(world, name):
    (node,) = world.permissioned(1)
    ix = _every_instruction(world, node)[name]
    twice = with_accounts(ix, {1: ix.accounts[0]})
    signers = [node.keypair] if name in ("join", "claim", "leave", "withdraw_stake") else []
    with rejects("DuplicateAccount"):
        world.send_raw(world.authority.keypair, [twice], signers)


def test_a_replayed_or_lower_round_is_rejected(world):
    world.permissioned(1)
    world.authority.record_round(RUN_ID, 5, ROOT, contributed=[0])
    with rejects("RoundNotIncreasing"):
        world.authority.record_round(RUN_ID, 5, ROOT, contributed=[0])
    with rejects("RoundNotIncreasing"):
        world.authority.record_round(RUN_ID, 4, ROOT)
    assert world.authority.members(RUN_ID)[0].points_earned == 10


def test_a_replayed_transaction_is_refused_by_the_runtime(world):
    world.permissioned(1)
    tx = world.authority.transaction([_record_ix(world, round_=1)])
    world.transport.send(tx)
    with pytest.raises(TransactionFailed) as info:
        world.transport.send(tx)
    assert info.value.err == "AlreadyProcessed"


@pytest.mark.parametrize(
    "bits, error",
    [
        ((b"", b"\x00\x00", b"\x00\x00"), "BitmapLength"),
        ((b"\x00\x00\x00", b"\x00\x00", b"\x00\x00"), "BitmapLength"),
        ((b"\x00\x04", b"\x00\x00", b"\x00\x00"), "BitsPastMemberCount"),
        ((b"\x00\x00", b"\x00\x00", b"\x00\x80"), "BitsPastMemberCount"),
        ((b"\x01\x00", b"\x00\x00", b"\x01\x00"), "ConflictingBits"),
    ],
)
def test_malformed_bitmaps_are_rejected(world, bits, error):
    world.permissioned(10)  # 10 members: two bytes, bits 10..15 of the second must be clear
    with rejects(error):
        world.authority.send([_record_ix(world, bits=bits)])


def test_a_bit_on_a_member_that_never_joined_is_rejected(world):
    world.permissioned(1)
    world.authority.authorize(RUN_ID, Keypair().pubkey())
    with rejects("MemberNotCreditable"):
        world.authority.record_round(RUN_ID, 1, ROOT, contributed=[1])


def test_points_overflow_is_rejected(world):
    world.permissioned(1, params=RunParams(points_per_contribution=2**56 - 1))
    world.authority.record_round(RUN_ID, 1, ROOT, contributed={0: 255})
    with rejects("Overflow"):
        world.authority.record_round(RUN_ID, 2, ROOT, contributed={0: 255})
    assert world.authority.members(RUN_ID)[0].points_earned == 255 * (2**56 - 1)


def test_points_per_batch_beyond_the_bound_are_refused_at_creation(world):
    with rejects("InvalidArgument"):
        world.authority.create_run(RUN_ID, Mode.PERMISSIONED, RunParams(points_per_contribution=2**56))


def test_claiming_twice_or_more_than_earned_is_rejected(world):
    (a,) = world.permissioned(1)
    world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
    with rejects("ClaimExceedsEarned"):
        a.claim(RUN_ID, 11)
    a.claim(RUN_ID)
    with rejects("ClaimExceedsEarned"):
        a.claim(RUN_ID, 1)
    with rejects("NothingToClaim"):
        a.claim(RUN_ID, 0)
    assert a.token_balance(RUN_ID) == 10


def test_claiming_into_someone_elses_token_account_is_rejected(world):
    a, b = world.permissioned(2)
    world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0, 1])
    b.claim(RUN_ID, 1)  # creates b's token account
    run = world.authority.run(RUN_ID)
    ix = with_accounts(
        ixs.claim(a.key, run, 5)[1], {4: AccountMeta(ixs.token_account(b.key, run.mint), False, True)}
    )
    with rejects("WrongTokenOwner"):
        a.send([ix])


def test_claiming_with_the_wrong_mint_is_rejected(world):
    (a,) = world.permissioned(1)
    world.authority.record_round(RUN_ID, 1, ROOT, contributed=[0])
    run = world.authority.run(RUN_ID)
    other = world.client(10 * SOL, own_runs=True)
    other.create_run(RUN_ID + 1, Mode.PERMISSIONED, RunParams())
    other_mint = other.run(RUN_ID + 1).mint
    a.send([create_idempotent_associated_token_account(a.key, a.key, other_mint)])
    wrong_account = with_accounts(
        ixs.claim(a.key, run, 5)[1], {4: AccountMeta(ixs.token_account(a.key, other_mint), False, True)}
    )
    with rejects("WrongMint"):
        a.send([wrong_account])
    wrong_mint = with_accounts(ixs.claim(a.key, run, 5)[1], {3: AccountMeta(other_mint, False, True)})
    with rejects("WrongMint"):
        a.send([ixs.claim(a.key, run, 5)[0], wrong_mint])


def test_joining_unauthorized_in_a_permissioned_run_is_rejected(world):
    world.permissioned()
    with rejects("NotAuthorized"):
        world.client().join(RUN_ID)


def test_joining_after_revocation_is_rejected(world):
    (a,) = world.permissioned(1)
    a.leave(RUN_ID)
    world.authority.revoke(RUN_ID, a.key)
    with rejects("NotAuthorized"):
        a.join(RUN_ID)


def test_joining_without_the_stake_in_a_permissionless_run_is_rejected(world):
    world.permissionless()
    poor = world.client(STAKE // 2)
    with rejects("InsufficientStake"):
        poor.join(RUN_ID)
    assert world.authority.run(RUN_ID).member_count == 0


def test_withdrawing_before_unbonding_is_rejected(world):
    (a,) = world.permissionless(1, unbonding=100)
    with rejects("StillActive"):
        a.withdraw_stake(RUN_ID)
    world.svm.set_time(1_000)
    a.leave(RUN_ID)
    world.svm.set_time(1_099)
    with rejects("StillUnbonding"):
        a.withdraw_stake(RUN_ID)


def test_withdrawing_after_being_slashed_is_rejected(world):
    (a,) = world.permissionless(1, unbonding=60)
    world.authority.record_round(RUN_ID, 1, ROOT, penalized=[0])
    world.svm.set_time(int(time.time()) + 61)
    with rejects("NothingToWithdraw"):
        a.withdraw_stake(RUN_ID)


def test_a_paused_run_refuses_joins_and_rounds(world):
    (a,) = world.permissioned(1)
    world.authority.update_run(RUN_ID, paused=True)
    with rejects("RunPaused"):
        world.authority.record_round(RUN_ID, 1, ROOT)
    a.leave(RUN_ID)
    with rejects("RunPaused"):
        a.join(RUN_ID)


def test_another_runs_member_table_is_rejected(world):
    world.permissioned(1)
    other = world.client(10 * SOL, own_runs=True)
    other_table = other.create_run(RUN_ID + 1, Mode.PERMISSIONED, RunParams()).members
    ix = with_accounts(_record_ix(world), {2: AccountMeta(other_table, False, True)})
    with rejects("WrongMemberTable"):
        world.authority.send([ix])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from([ix.name for ix in spec.INSTRUCTIONS]), tail=st.binary(max_size=200))
def test_arbitrary_instruction_data_gets_a_typed_error_never_a_fault(world, name, tail):
    if not world.svm.account(ixs.run_address(RUN_ID, world.authority.key)[0]):
        world.permissioned(1)
    run = world.authority.run(RUN_ID)
    metas = [
        AccountMeta(world.authority.key, True, True),
        AccountMeta(run.address, False, True),
        AccountMeta(run.members, False, True),
    ]
    ix = Instruction(world.svm.program_id, spec.instruction_discriminator(name) + tail, metas)
    try:
        world.authority.send([ix])
    except ProgramError as exc:
        assert 6000 <= exc.code < 6000 + len(spec.ERRORS)


def test_an_unbonding_period_past_ten_years_is_rejected(world):
    world.permissioned()
    with rejects("InvalidArgument"):
        world.authority.update_run(RUN_ID, RunParams(unbonding_seconds=spec.MAX_UNBONDING_SECONDS + 1))
    with rejects("InvalidArgument"):
        world.client(10 * SOL).create_run(RUN_ID + 1, Mode.PERMISSIONLESS, RunParams(unbonding_seconds=2**63))


def test_an_unknown_mode_is_rejected(world):
    with rejects("InvalidMode"):
        world.authority.create_run(RUN_ID, 2, RunParams())
