"""Local steps between exchanges: the pseudo-gradient handed to the compressed optimizer, and
the outer step that applies the aggregate's values instead of its signs."""

import pytest
import torch

from optim import DemoConfig, DemoOptimizer, LrSchedule, ValueMode
from optim.local import InnerConfig, LocalSteps


def quadratic(p: torch.nn.Parameter, target: torch.Tensor):
    def gradients(h: int) -> None:
        p.grad = 2 * (p.detach() - target)  # d/dp |p - target|^2

    return gradients


def test_after_local_steps_the_weights_are_back_and_grad_is_start_minus_end():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    target = torch.zeros(3, dtype=torch.float64)
    twin = torch.nn.Parameter(p.detach().clone())
    reference = torch.optim.AdamW([twin], lr=0.1, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(3):
        reference.zero_grad()
        twin.grad = 2 * (twin.detach() - target)
        reference.step()
    LocalSteps([p], InnerConfig(steps=3, lr=0.1)).run(quadratic(p, target))
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    assert torch.equal(p.grad, torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) - twin.detach())


def test_the_inner_optimizer_keeps_its_state_across_exchanges():
    p = torch.nn.Parameter(torch.ones(4))
    local = LocalSteps([p], InnerConfig(steps=2, lr=0.01))
    local.run(quadratic(p, torch.zeros(4)))
    assert local.inner.state[p]["step"] == 2
    local.run(quadratic(p, torch.zeros(4)))
    assert local.inner.state[p]["step"] == 4


def test_the_values_outer_step_moves_weights_by_lr_times_the_aggregate():
    p = torch.nn.Parameter(torch.tensor([[0.5, -0.25], [1.0, 2.0]], dtype=torch.float64))
    config = DemoConfig(
        chunk=2, topk=4, beta=0.0, alpha=1.0, values=ValueMode.RAW, outer_step="values",
        schedule=LrSchedule("constant", lr=0.5),
    )  # fmt: skip
    opt = DemoOptimizer([("w", p)], config)
    p.grad = torch.tensor([[0.2, 0.4], [-0.6, 0.8]], dtype=torch.float64)
    before = p.detach().clone()
    opt.apply({"a": opt.compress()})
    # the momentum holds lr * DCT(g); every coefficient is sent; apply subtracts lr * IDCT of it
    assert torch.allclose(p.detach(), before - 0.5 * 0.5 * p.grad, atol=1e-12)


def test_a_values_outer_step_over_signs_is_refused():
    with pytest.raises(ValueError, match="needs the values sent"):
        DemoConfig(values=ValueMode.SIGN, outer_step="values").check()


def test_local_steps_refuse_zero_steps():
    with pytest.raises(ValueError, match="inner steps must be >= 1"):
        LocalSteps([torch.nn.Parameter(torch.ones(1))], InnerConfig(steps=0))
