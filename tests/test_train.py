import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from node.checkpoint import model_hash
from node.data import Corpus, TokenDataset
from node.model import Llama, preset
from node.replicas import ReplicaRunner
from node.train import Trainer, pick_device
from optim import DemoConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def data():
    tokens = np.random.default_rng(0).integers(0, 256, 20_000).astype(np.uint16)
    return TokenDataset(Corpus(tokens, "x", "random"), seq_len=32, batch_seqs=4)


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_micro_batches_accumulate_to_the_full_batch_gradient(data):
    model = Llama(preset("tiny", n_layers=2))
    Trainer(model, data, micro_batch=3, device=torch.device("cpu")).accumulate_gradients([0, 1])
    accumulated = grads(model)
    full = Trainer(model, data, micro_batch=8, device=torch.device("cpu")).accumulate_gradients([0, 1])
    assert full.tokens == 8 * 32
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(accumulated, grads(model)))


def test_evaluation_uses_the_same_validation_sequences_every_time(data):
    trainer = Trainer(Llama(preset("tiny", n_layers=1)), data, micro_batch=4, device=torch.device("cpu"))
    assert trainer.evaluate(8) == trainer.evaluate(8)


def test_replicas_stay_bit_identical_after_every_step(data):
    runner = ReplicaRunner(Llama(preset("tiny", n_layers=2)), data, DemoConfig(topk=4), n=3, micro_batch=4)
    for r in range(3):
        report = runner.step(r, global_batch=5, check_hashes=True)
        assert len(report.hashes) == 3 and len(set(report.hashes)) == 1


def test_replicas_train_on_different_batches_but_agree(data):
    runner = ReplicaRunner(Llama(preset("tiny", n_layers=1)), data, DemoConfig(topk=4), n=2, micro_batch=4)
    runner.step(0, global_batch=2)
    momenta = [opt.momentum[0] for opt in runner.optimizers]
    assert not torch.equal(momenta[0], momenta[1])


def test_an_accumulating_exchange_takes_one_gradient_over_its_steps_batches(data):
    model = Llama(preset("tiny", n_layers=1))
    runner = ReplicaRunner(model, data, DemoConfig(topk=4), n=2, micro_batch=4, accumulate=3)
    shares = [b for step in (3, 4, 5) for b in runner._share(1, step, global_batch=2)]
    assert len(shares) == 3
    runner.step(1, global_batch=2)  # exchange 1 covers steps 3, 4 and 5
    Trainer(model, data, micro_batch=4, device=torch.device("cpu")).accumulate_gradients(shares)
    assert all(torch.equal(a, b) for a, b in zip(grads(runner.models[1]), grads(model)))


def test_auto_device_is_cpu_without_cuda():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_micro_batch_is_the_largest_divisor_of_the_batch_that_fits():
    from node.train import fitting_micro_batch

    assert fitting_micro_batch(12, lambda n: n <= 5) == 4
    assert fitting_micro_batch(12, lambda n: True) == 12
    assert fitting_micro_batch(7, lambda n: n < 7) == 1
    assert fitting_micro_batch(8, lambda n: False) == 1


needs_mkl = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="a torch build without MKL")


def probe(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_deterministic_kernels_are_required_without_loading_the_compiler():
    code = (
        "import sys, torch; from node.train import use_deterministic_kernels; use_deterministic_kernels(); "
        "print(torch.are_deterministic_algorithms_enabled(), "
        "torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor.config' in sys.modules)"
    )
    assert probe(code).stdout.split() == ["True", "False", "False"]


@needs_mkl
def test_deterministic_kernels_put_mkl_in_its_strict_reproducible_mode():
    out = probe(
        "from node.train import mkl_cbwr_switch, use_deterministic_kernels; use_deterministic_kernels(); "
        "get, _ = mkl_cbwr_switch(); print(get(~0))"
    )
    assert out.stdout.split() == [str(2 | 0x10000)]  # MKL_CBWR_AUTO | MKL_CBWR_STRICT


@needs_mkl
def test_deterministic_kernels_refuse_a_process_whose_mkl_already_ran():
    out = probe(
        "import torch; torch.ones(8, 8) @ torch.ones(8, 8); "
        "from node.train import use_deterministic_kernels; use_deterministic_kernels()"
    )
    assert out.returncode == 1
    assert "MKL ran before deterministic kernels were asked for" in out.stderr


PRODUCTS = """
import torch
from node.train import use_deterministic_kernels

use_deterministic_kernels()
g = torch.Generator().manual_seed(0)
a, b = torch.randn(300, 200, generator=g), torch.randn(200, 96, generator=g)
seen = set()
for threads in (1, 2, 3):
    torch.set_num_threads(threads)
    for shift in range(0, 16, 3):
        x = torch.empty(a.numel() + 16)[shift : shift + a.numel()].view_as(a).copy_(a)
        seen.add((x @ b).numpy().tobytes())
print(len(seen))
"""


def test_products_under_deterministic_kernels_ignore_alignment_and_thread_count():
    # what a validator's replay of a CPU member rests on: the member's box and the validator's may
    # differ in core count, and each tensor's address differs from run to run
    out = probe(PRODUCTS)
    assert out.stdout.split() == ["1"], out.stderr


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU_REPLAY = """
import hashlib, warnings
import numpy as np, torch
from node.data import Corpus, TokenDataset
from node.model import Llama, preset
from node.train import Trainer, use_deterministic_kernels
from optim import DemoOptimizer
from protocol.run_config import OptimSection

use_deterministic_kernels()
warnings.simplefilter("always")
tokens = np.random.default_rng(0).integers(0, 256, 200_000).astype(np.uint16)
data = TokenDataset(Corpus(tokens, "x", "random"), seq_len=128, batch_seqs=8)
model = Llama(preset("20m", vocab_size=256, max_seq_len=128), seed=3).cuda()

def step():
    replica = Llama(preset("20m", vocab_size=256, max_seq_len=128)).cuda()
    replica.load_state_dict(model.state_dict())
    opt = DemoOptimizer(replica.named_parameters(), OptimSection().demo_config(10, replica.config.dim))
    trainer = Trainer(replica, data, 4, torch.device("cuda"))
    digests = []
    for r in range(2):
        trainer.accumulate_gradients([2 * r, 2 * r + 1])
        payload = opt.compress()
        opt.apply({"me": payload, "peer": payload})
        digests.append(hashlib.sha256(payload).hexdigest())
    return digests

with warnings.catch_warnings(record=True) as caught:
    first, second = step(), step()
print(first == second, len(caught), *{str(w.message)[:120] for w in caught})
"""


@needs_cuda
def test_a_round_on_the_gpu_replays_to_the_same_payload_bytes():
    """Validators replay a member's round bit for bit (node/validation.py): on the GPU, under the
    node's deterministic kernels and bf16 autocast, the same two rounds give the same payloads,
    and no op runs a kernel that is nondeterministic (as flash attention was under warn-only mode,
    and cuDNN attention, on an H200)."""
    out = subprocess.run([sys.executable, "-c", GPU_REPLAY], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split(maxsplit=2)[:2] == ["True", "0"], out.stdout


@needs_cuda
def test_replicas_on_the_gpu_stay_bit_identical(data):
    model = Llama(preset("tiny", n_layers=2)).cuda()
    runner = ReplicaRunner(model, data, DemoConfig(topk=4, select="tensor"), n=3, micro_batch=4)
    for r in range(3):
        assert len(set(runner.step(r, global_batch=5, check_hashes=True).hashes)) == 1


def test_replicas_copying_the_first_ones_step_end_where_each_applying_would(data):
    applying = ReplicaRunner(Llama(preset("tiny", n_layers=1)), data, DemoConfig(topk=4), n=3, micro_batch=4)
    copying = ReplicaRunner(Llama(preset("tiny", n_layers=1)), data, DemoConfig(topk=4), n=3, micro_batch=4)
    for r in range(3):
        applying.step(r, global_batch=5, check_hashes=True)
        copying.step(r, global_batch=5)
    assert [model_hash(m) for m in copying.models] == [model_hash(m) for m in applying.models]
    assert [opt.step for opt in copying.optimizers] == [3, 3, 3]
