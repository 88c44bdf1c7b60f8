import itertools

import numpy as np
import pytest
import scipy.fft
import torch

from optim import DemoConfig, DemoOptimizer, LrSchedule, PayloadError, ValueMode
from optim.dct import block_positions, idct_blocks
from optim.demo import take_topk
from optim.errors import StalePayloadError
from optim.spec import tensor_spec

SHAPES = {"w": (16, 24), "b": (32,), "h": (8, 8)}


def replica(cfg, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = {
        n: torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype))
        for n, s in SHAPES.items()
    }
    return params, DemoOptimizer(params.items(), cfg)


def random_grads(step, peer, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1000 * step + peer)
    return {n: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for n, s in SHAPES.items()}


def compress_all(replicas, step, node_ids=None, dtype=torch.float64):
    payloads = {}
    for peer, (params, opt) in enumerate(replicas):
        for n, g in random_grads(step, peer, dtype).items():
            params[n].grad = g
        payloads[(node_ids or [f"n{i}" for i in range(len(replicas))])[peer]] = opt.compress()
    return payloads


def run(replicas, steps, node_ids=None, dtype=torch.float64):
    """Each replica compresses its own gradients; every replica applies all payloads."""
    for step in range(steps):
        payloads = compress_all(replicas, step, node_ids, dtype)
        for _, opt in replicas:
            opt.apply(payloads)


class Reference:
    """A direct transcription of the DeMo reference step (weight-domain momentum, einsum DCT,
    local decode for error feedback, mean over the peers that picked a coefficient)."""

    def __init__(self, params, chunk, k, beta, lr, wd):
        self.params = {n: p.detach().clone() for n, p in params.items()}
        self.chunk, self.k, self.beta, self.lr, self.wd = chunk, k, beta, lr, wd
        self.f = torch.from_numpy(scipy.fft.dct(np.eye(chunk), norm="ortho", axis=0))  # y = f @ x

    def encode(self, x):
        if x.ndim == 1:
            return torch.einsum("yh,dh->yd", x.reshape(-1, self.chunk), self.f)
        blocks = x.reshape(x.shape[0] // self.chunk, self.chunk, x.shape[1] // self.chunk, self.chunk)
        return torch.einsum("yhxw,bh,dw->yxbd", blocks, self.f, self.f)

    def decode(self, c, shape):
        if len(shape) == 1:
            return torch.einsum("yd,dh->yh", c, self.f).reshape(shape)
        x = torch.einsum("yxbd,bh,dw->yhxw", c, self.f, self.f)
        return x.reshape(shape)

    def compress(self, delta):
        c = self.encode(delta)
        flat = c.reshape(*c.shape[: c.ndim - (1 if delta.ndim == 1 else 2)], -1)
        idx = flat.abs().topk(self.k, dim=-1).indices
        return idx, flat.gather(-1, idx), c.shape

    def step(self, deltas, grads_per_peer):
        sent = []
        for delta, grads in zip(deltas, grads_per_peer):
            peer_sent = {}
            for n, g in grads.items():
                delta[n].mul_(self.beta).add_(g, alpha=self.lr)
                idx, val, cshape = self.compress(delta[n])
                picked = (
                    torch.zeros(cshape, dtype=torch.float64)
                    .reshape(*idx.shape[:-1], -1)
                    .scatter(-1, idx, val)
                )
                delta[n] -= self.decode(picked.reshape(cshape), delta[n].shape)
                peer_sent[n] = (idx, val, cshape)
            sent.append(peer_sent)
        for n, p in self.params.items():
            _, _, cshape = sent[0][n]
            total = torch.zeros(cshape, dtype=torch.float64).reshape(*sent[0][n][0].shape[:-1], -1)
            count = torch.zeros_like(total)
            for peer_sent in sent:
                idx, val, _ = peer_sent[n]
                total.scatter_add_(-1, idx, val)
                count.scatter_add_(-1, idx, torch.ones_like(val))
            mean = total / count.clamp(min=1)
            p.mul_(1 - self.lr * self.wd).sub_(self.lr * self.decode(mean.reshape(cshape), p.shape).sign())


def test_raw_mode_matches_the_reference_over_several_steps_and_peers():
    cfg = DemoConfig(
        chunk=8,
        topk=5,
        beta=0.9,
        alpha=1.0,
        values=ValueMode.RAW,
        weight_decay=0.1,
        schedule=LrSchedule(lr=0.01),
    )
    replicas = [replica(cfg) for _ in range(3)]
    ref = Reference(replicas[0][0], chunk=8, k=5, beta=0.9, lr=0.01, wd=0.1)
    deltas = [{n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()} for _ in range(3)]
    for step in range(4):
        ref.step(deltas, [random_grads(step, peer) for peer in range(3)])
    run(replicas, steps=4)
    for (params, opt), delta in zip(replicas, deltas):
        for n, p in params.items():
            assert torch.allclose(p, ref.params[n], atol=1e-10, rtol=0)
        for n, m, ts in zip(opt.names, opt.momentum, opt.spec.tensors):
            assert torch.allclose(idct_blocks(m, ts.layout), delta[n], atol=1e-10, rtol=0)


def model_bytes(params):
    return b"".join(p.detach().numpy().tobytes() for p in params.values())


def test_result_is_bit_identical_whatever_order_payloads_arrive_in():
    cfg = DemoConfig(chunk=8, topk=3, values=ValueMode.INT8)
    payloads = compress_all([replica(cfg) for _ in range(4)], step=0)
    results = set()
    for order in itertools.permutations(payloads):
        params, opt = replica(cfg)
        opt.apply({node: payloads[node] for node in order})
        results.add(model_bytes(params))
    assert len(results) == 1


@pytest.mark.parametrize("select, tile", [("chunk", 1), ("tensor", 1), ("chunk", 2), ("tensor", 2)])
def test_replicas_stay_bit_identical_over_steps(select, tile):
    cfg = DemoConfig(chunk=8, topk=3, values=ValueMode.SIGN, weight_decay=0.01, select=select, tile=tile)
    replicas = [replica(cfg, dtype=torch.float32) for _ in range(3)]
    run(replicas, steps=3, node_ids=["c", "a", "b"], dtype=torch.float32)
    assert len({model_bytes(params) for params, _ in replicas}) == 1


def test_error_feedback_removes_alpha_of_each_sent_coefficient():
    params, opt = replica(DemoConfig(chunk=8, topk=2, alpha=0.25, beta=0.5, values=ValueMode.RAW))
    for n, g in random_grads(0, 0).items():
        params[n].grad = g
    payload = opt.decode(opt.compress())
    for m, tp, ts in zip(opt.momentum, payload.tensors, opt.spec.tensors):
        kept = m.view(-1)[
            block_positions(ts.layout, torch.from_numpy(tp.groups), torch.from_numpy(tp.indices))
        ]
        assert torch.allclose(kept, torch.from_numpy(tp.values) * 0.75, rtol=1e-15)


def test_selecting_over_a_tensor_sends_its_largest_coefficients_wherever_they_are():
    params, opt = replica(DemoConfig(chunk=8, topk=3, beta=0.5, values=ValueMode.RAW, select="tensor"))
    for n, g in random_grads(0, 0).items():
        params[n].grad = g
    payload = opt.decode(opt.compress())  # alpha 1: what was sent is now zero in the momentum
    for m, tp, ts in zip(opt.momentum, payload.tensors, opt.spec.tensors):
        assert tp.indices.shape == (1, ts.k)
        assert np.abs(tp.values).min() >= float(m.abs().max())


def test_a_tensor_whose_gradient_lies_in_one_chunk_sends_all_its_coefficients_from_there():
    params, opt = replica(DemoConfig(chunk=8, topk=3, values=ValueMode.RAW, select="tensor"))
    for n, g in random_grads(0, 0).items():
        params[n].grad = torch.zeros_like(g)
    params["w"].grad[:8, 8:16] = 1 + torch.rand(8, 8, dtype=torch.float64)  # chunk 1 of 2 x 3
    w = opt.decode(opt.compress()).tensors[0]
    assert w.indices.shape == (1, 18)
    assert set(w.indices[0] // 64) == {1}


def test_a_chunks_tiles_are_its_2x2_squares_in_row_major_order():
    ts = tensor_spec("h", (4, 4), chunk=4, topk=4, select="chunk", tile=2)
    assert ts.tile_table.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_a_chunk_of_odd_side_leaves_its_last_row_and_column_out_of_every_tile():
    ts = tensor_spec("h", (5, 5), chunk=5, topk=4, select="chunk", tile=2)
    assert ts.tile_table.tolist() == [[0, 1, 5, 6], [2, 3, 7, 8], [10, 11, 15, 16], [12, 13, 17, 18]]


def test_top_k_over_tiles_sends_the_tile_with_the_largest_sum_of_squares_whole():
    ts = tensor_spec("h", (4, 4), chunk=4, topk=4, select="chunk", tile=2)  # one tile of 4
    momentum = torch.zeros(ts.layout.padded_shape, dtype=torch.float64)
    momentum[0, 0, 0] = 4.0  # tile 0: 16
    momentum[0, 2, 2] = momentum[0, 3, 3] = 3.0  # tile 3: 18
    tp = take_topk(momentum, ts, alpha=1.0)
    assert tp.indices.tolist() == [[3]]
    assert tp.values.tolist() == [[3.0, 0.0, 0.0, 3.0]]  # coefficients 10, 11, 14, 15
    assert momentum.abs().sum() == 4.0  # error feedback took the tile out, the lone 4 stays


def test_bf16_parameters_train_with_fp32_momentum():
    params, opt = replica(DemoConfig(chunk=8, topk=3), dtype=torch.bfloat16)
    before = {n: p.detach().clone() for n, p in params.items()}
    run([(params, opt)], steps=1, dtype=torch.bfloat16)
    assert all(m.dtype == torch.float32 for m in opt.momentum)
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    assert any(not torch.equal(before[n], p) for n, p in params.items())


def test_one_peer_is_local_sign_sgd():
    cfg = DemoConfig(chunk=8, topk=64, beta=0.0, values=ValueMode.RAW, schedule=LrSchedule(lr=0.5))
    params, opt = replica(cfg)
    before = {n: p.detach().clone() for n, p in params.items()}
    grads = random_grads(0, 0)
    for n, g in grads.items():
        params[n].grad = g
    opt.apply({"me": opt.compress()})
    for n, p in params.items():
        assert torch.allclose(p, before[n] - 0.5 * grads[n].sign(), atol=1e-12)


def test_parameters_without_gradient_do_not_move_in_sign_mode():
    params, opt = replica(DemoConfig(chunk=8, topk=3))
    frozen = params["h"].detach().clone()
    params["h"].requires_grad_(False)
    for n, g in random_grads(0, 0).items():
        if n != "h":
            params[n].grad = g
    opt.apply({"me": opt.compress()})
    assert torch.equal(params["h"], frozen)


def test_a_bad_payload_leaves_model_and_step_untouched():
    cfg = DemoConfig(chunk=8, topk=3)
    params, opt = replica(cfg)
    for n, g in random_grads(0, 0).items():
        params[n].grad = g
    good = opt.compress()
    before = model_bytes(params)
    with pytest.raises(PayloadError, match="from bad"):
        opt.apply({"good": good, "bad": good[:-1]})
    assert model_bytes(params) == before and opt.step == 0


def test_payload_from_another_step_is_stale():
    params, opt = replica(DemoConfig(chunk=8, topk=3))
    for n, g in random_grads(0, 0).items():
        params[n].grad = g
    payload = opt.compress()
    opt.apply({"me": payload})
    with pytest.raises(StalePayloadError):
        opt.apply({"me": payload})


def test_gradient_clipping_bounds_the_global_norm_before_compress():
    params, opt = replica(DemoConfig(chunk=8, topk=3, clip_grad_norm=1.0))
    for n, g in random_grads(0, 0).items():
        params[n].grad = g * 100
    opt.compress()
    grad_norm = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in params.values()]))
    assert opt.last_grad_norm > 100 and grad_norm == pytest.approx(1.0)


def test_state_dict_round_trip_resumes_identically():
    cfg = DemoConfig(chunk=8, topk=3, values=ValueMode.BF16)
    a = replica(cfg)
    run([a], steps=2)
    b = replica(cfg)
    for n, p in b[0].items():
        p.data.copy_(a[0][n])
    b[1].load_state_dict(a[1].state_dict())
    for r in (a, b):
        for n, g in random_grads(5, 0).items():
            r[0][n].grad = g
    assert a[1].compress() == b[1].compress()


def test_state_for_another_spec_is_refused():
    _, opt = replica(DemoConfig(chunk=8, topk=3))
    _, other = replica(DemoConfig(chunk=8, topk=4))
    with pytest.raises(ValueError):
        other.load_state_dict(opt.state_dict())


def test_empty_round_is_a_caller_error():
    _, opt = replica(DemoConfig(chunk=8, topk=3))
    with pytest.raises(ValueError):
        opt.apply({})


def test_normalized_gradients_enter_the_momentum_with_unit_rms():
    cfg = DemoConfig(
        chunk=8, topk=64, beta=0.0, values=ValueMode.RAW, precondition="rms", schedule=LrSchedule(lr=1.0)
    )
    params, opt = replica(cfg)
    for n, g in random_grads(0, 0).items():
        params[n].grad = g * 1000
    sent = opt.decode(opt.compress())  # every coefficient is sent; the DCT preserves the RMS
    for tp in sent.tensors:
        assert np.sqrt(np.mean(tp.values**2)) == pytest.approx(1.0, rel=1e-9)


def test_adam_preconditioning_sends_bias_corrected_unit_steps_first():
    cfg = DemoConfig(
        chunk=8, topk=64, beta=0.0, values=ValueMode.RAW, precondition="adam", schedule=LrSchedule(lr=1.0)
    )
    params, opt = replica(cfg)
    grads = random_grads(0, 0)
    for n, g in grads.items():
        params[n].grad = g
    sent = opt.decode(opt.compress())
    for tp, ts, n in zip(sent.tensors, opt.spec.tensors, opt.names):
        dense = torch.zeros(ts.layout.padded_shape, dtype=torch.float64)
        dense.view(-1)[
            block_positions(ts.layout, torch.from_numpy(tp.groups), torch.from_numpy(tp.indices))
        ] = torch.from_numpy(tp.values)
        assert torch.allclose(idct_blocks(dense, ts.layout), grads[n].sign(), atol=1e-6)


def test_second_moment_is_part_of_the_optimizer_state():
    cfg = DemoConfig(chunk=8, topk=3, precondition="adam")
    a, b = replica(cfg), replica(cfg)
    run([a], steps=2)
    b[1].load_state_dict(a[1].state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a[1].second_moment, b[1].second_moment))


def _two_steps(device: torch.device, compute: torch.device | None) -> tuple[bytes, bytes, torch.Tensor]:
    """Two rounds of one member on `device`'s weights, its optimizer computing on `compute`:
    (first payload, second payload, the weights after them), on the CPU."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(96, 80), torch.nn.Linear(80, 8)).to(device)
    cfg = DemoConfig(chunk=32, topk=4, precondition="adam", values=ValueMode.INT8, outer_step="values")
    opt = DemoOptimizer(model.named_parameters(), cfg, compute)
    payloads = []
    for step in range(2):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step)).to(device)
        payloads.append(opt.compress())
        opt.apply({"me": payloads[-1]})
    return *payloads, torch.cat([p.detach().cpu().reshape(-1) for p in model.parameters()])


def test_an_optimizer_told_its_own_device_sends_and_steps_as_without_it():
    cpu = torch.device("cpu")
    assert _two_steps(cpu, cpu)[:2] == _two_steps(cpu, None)[:2]
    assert torch.equal(_two_steps(cpu, cpu)[2], _two_steps(cpu, None)[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_weights_with_the_math_on_the_gpu_send_and_step_as_weights_on_the_gpu():
    """A sharded node keeps its master weights on the host (node/sharded.py); its payloads and
    weights must be the bits of a node holding everything on the GPU."""
    gpu = torch.device("cuda")
    hosted, resident = _two_steps(torch.device("cpu"), gpu), _two_steps(gpu, None)
    assert hosted[:2] == resident[:2] and torch.equal(hosted[2], resident[2])
