"""The run config TOML: what it accepts, and that every bad value is refused by name."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.committed_state import sampled
from protocol.run_config import ConfigError, RunConfig, dumps, load, loads

SIM = Path(__file__).resolve().parent.parent / "configs" / "sim.toml"


def test_the_sim_config_loads_with_its_values():
    cfg = load(SIM)
    assert (cfg.run.name, cfg.model.preset, cfg.optim.topk, cfg.rounds.min_nodes) == (
        "eranos-sim",
        "tiny",
        18,
        2,
    )
    assert cfg.demo_config().precondition == "adam"


@pytest.mark.parametrize("preset, lr", [("tiny", 1e-3), ("20m", 4e-4), ("125m", 1e-3 / 6), ("1b", 6.25e-5)])
def test_the_sign_step_shrinks_with_the_model_width(preset, lr):
    cfg = loads(f"[model]\npreset = '{preset}'")
    assert cfg.demo_config().schedule.lr == pytest.approx(lr, rel=1e-12)


def test_lr_width_zero_takes_lr_as_given():
    assert loads("[model]\npreset = '125m'\n[optim]\nlr_width = 0").demo_config().schedule.lr == 1e-3


def test_a_values_outer_step_is_not_scaled_by_width():
    text = "[model]\npreset = '125m'\n[optim]\nvalues = 'int8'\nouter_step = 'values'\nlr = 1.0"
    assert loads(text).demo_config().schedule.lr == 1.0


def test_an_empty_file_is_the_defaults():
    assert loads("") == RunConfig()


def test_dumps_round_trips():
    cfg = load(SIM)
    assert loads(dumps(cfg)) == cfg


@pytest.mark.parametrize(
    "text, named",
    [
        ("[model]\npreset = 'huge'", "model.preset"),
        ("[rounds]\nmin_nodes = 0", "rounds.min_nodes"),
        ("[optim]\nlr_width = -1", "optim.lr_width"),
        ("[rounds]\nvalidation_rate = 1.5", "rounds.validation_rate"),
        ("[rounds]\nmin_nodes = 'two'", "rounds.min_nodes"),
        ("[rounds]\nweight_by_throughput = 1", "rounds.weight_by_throughput"),
        ("[run]\nrpc = 'localhost:8899'", "run.rpc"),
        ("[optim]\nbeta = 1.0", "optim"),
        ("[optim]\nvalues = 'int4'", "optim.values"),
        ("[optim]\nselect = 'block'", "select must be one of"),
        ("[data]\nmicro_batch = -1", "data.micro_batch"),
        ("[validation]\nsample_chunks = -2", "validation.sample_chunks"),
        ("[optim]\ntop_k = 4", "optim.top_k"),
        ("[optimizer]\ntopk = 4", "[optimizer]"),
        ("[validation]\nmin_match = 1.5", "validation.min_match"),
        ("[data]\nseq_len = 1", "data.seq_len"),
        ("[rounds]\nround_timeout_s = inf", "rounds.round_timeout_s"),
        ("[optim]\nweight_decay = nan", "optim.weight_decay"),
        ("[optim]\nlr = -inf", "optim.lr"),
        ("[rounds]\nseed = 18446744073709551616", "rounds.seed"),
        ("[model]\nhash = 'ABC'", "model.hash"),
        ("[rounds]\naudit_rate = 2.0", "rounds.audit_rate"),
        ("[eval]\nby = 'some'", "eval.by"),
        ("[checkpoint]\nby = 'some'", "checkpoint.by"),
        ("rounds = 3", "[rounds] must be a table"),
        ("[rounds\n", "not valid TOML"),
    ],
)
def test_an_invalid_value_is_refused_naming_it(text, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        loads(text)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


@given(st.text(max_size=200))
def test_arbitrary_text_is_a_config_or_a_config_error(text):
    try:
        loads(text)
    except ConfigError:
        pass


def test_auto_micro_batch_lets_a_commit_name_any_micro_batch_up_to_a_batch():
    from protocol.run_config import DataSection

    assert list(DataSection(batch_size=4, micro_batch=0).micro_batches_allowed()) == [1, 2, 3, 4]
    assert list(DataSection(batch_size=4, micro_batch=2).micro_batches_allowed()) == [2]
    assert list(DataSection(batch_size=2, micro_batch=4).micro_batches_allowed()) == [2]


def test_validators_check_a_sample_of_the_state_only_where_compress_is_chunk_local():
    assert sampled(loads(""))
    assert sampled(loads("[optim]\nselect = 'tensor'"))
    assert not sampled(loads("[optim]\nselect = 'tensor'\nvalues = 'int8'"))
    assert not sampled(loads("[optim]\ninner_steps = 2"))
    assert not sampled(loads("[validation]\nsample_chunks = 0"))


def test_the_default_schedule_holds_the_lr_then_decays_it_over_the_last_fifth_of_the_rounds():
    schedule = loads("[rounds]\nrounds = 10").demo_config().schedule
    assert [schedule.lr_at(r) / schedule.lr for r in (0, 7, 8, 9)] == pytest.approx([1.0, 1.0, 1.0, 0.55])


def test_the_decay_ends_at_the_configured_share_of_the_peak_lr():
    schedule = loads("[rounds]\nrounds = 10\n[optim]\nfinal_ratio = 0.0").demo_config().schedule
    assert [schedule.lr_at(r) / schedule.lr for r in (7, 8, 9)] == pytest.approx([1.0, 1.0, 0.5])


def test_a_final_lr_above_the_peak_is_refused():
    with pytest.raises(ConfigError, match="final_ratio must be in"):
        loads("[optim]\nfinal_ratio = 2")


def test_a_decay_over_no_rounds_is_refused():
    with pytest.raises(ConfigError, match="decay_fraction"):
        loads("[optim]\ndecay_fraction = 0")
