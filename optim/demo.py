"""DeMo/DisTrO-style optimizer: DCT-domain momentum, top-k exchange, sign-SGD on the aggregate.

Per parameter and step (DeMo, arXiv 2411.19870, with Psyche's choices):

    compress:  D = beta * D + lr * DCT(grad)          momentum lives in the chunk DCT domain
               idx, val = top-k of |D| per chunk      (the payload: idx + quantized val)
               D[idx] -= alpha * val                  error feedback with the unquantized values
    apply:     A = mean over the peers that sent each coefficient, combined in node-id order
               p = p * (1 - lr * wd) - lr * sign(IDCT(A))

Because the per-chunk DCT is orthonormal and linear, keeping D in the DCT domain equals the
reference's weight-domain momentum followed by an encode, and the feedback needs no local
decode: one forward transform per compress and one inverse per apply.

With one peer, apply({me: compress()}) is local sign-SGD on DCT top-k momentum.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from optim.codec import Payload, TensorPayload, decode, encode
from optim.config import DemoConfig
from optim.dct import ChunkLayout, compute_dtype, dct_chunks, idct_chunks
from optim.errors import PayloadError, StalePayloadError
from optim.spec import ParamSpec


def update_momentum(
    momentum: torch.Tensor, grad: torch.Tensor | None, lay: ChunkLayout, beta: float, lr: float
) -> None:
    momentum.mul_(beta)
    if grad is not None:
        momentum.add_(dct_chunks(grad, lay), alpha=lr)


def take_topk(momentum: torch.Tensor, k: int, alpha: float) -> TensorPayload:
    """Select the k largest |coefficients| of each nonzero chunk and apply error feedback."""
    active = momentum.ne(0).any(dim=1)
    rows = momentum if bool(active.all()) else momentum[active]  # (A, n)
    chunks = torch.arange(len(momentum), device=momentum.device)[active]
    indices = torch.topk(rows.abs(), k, dim=1, sorted=False).indices.sort(dim=1).values  # (A, k)
    values = rows.gather(1, indices)
    momentum[chunks[:, None], indices] = values - alpha * values
    return TensorPayload(chunks.cpu().numpy(), indices.cpu().numpy(), values.cpu().numpy())


def aggregate(
    payloads: list[TensorPayload], n_chunks: int, chunk_numel: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Mean per coefficient over the payloads that picked it, summed in the order given."""
    sums = torch.zeros(n_chunks * chunk_numel, dtype=dtype, device=device)
    counts = torch.zeros_like(sums)
    for tp in payloads:
        flat = torch.from_numpy(tp.chunks[:, None] * chunk_numel + tp.indices).reshape(-1).to(device)
        values = torch.from_numpy(tp.values).reshape(-1).to(device=device, dtype=dtype)
        sums.index_add_(0, flat, values)
        counts.index_add_(0, flat, torch.ones_like(values))
    return (sums / counts.clamp(min=1)).reshape(n_chunks, chunk_numel)


def sign_step(param: torch.Tensor, direction: torch.Tensor, lr: float, weight_decay: float) -> None:
    """p = p * (1 - lr * wd) - lr * sign(direction), computed in fp32 (fp64 for fp64 params)."""
    work = param.detach().to(direction.dtype)
    work.mul_(1 - lr * weight_decay).add_(direction.sign(), alpha=-lr)
    if work.data_ptr() != param.data_ptr():
        param.detach().copy_(work)


class DemoOptimizer:
    """The node's optimizer: `compress()` after backward, `apply(payloads)` once the round ends."""

    def __init__(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], config: DemoConfig):
        config.check()
        self.config = config
        named = list(named_parameters)
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.spec = ParamSpec.build(
            ((n, tuple(p.shape)) for n, p in named), config.chunk, config.topk, config.values
        )
        self.momentum = [
            torch.zeros(
                ts.layout.n_chunks, ts.layout.chunk_numel, dtype=compute_dtype(p.dtype), device=p.device
            )
            for ts, p in zip(self.spec.tensors, self.params)
        ]
        self.step = 0
        self.last_grad_norm: float | None = None

    @property
    def lr(self) -> float:
        return self.config.schedule.lr_at(self.step)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def compress(self) -> bytes:
        """Fold the current gradients into the momentum and return this node's payload."""
        cfg = self.config
        if cfg.clip_grad_norm is not None:
            self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_grad_norm))
        tensors = []
        for p, ts, m in zip(self.params, self.spec.tensors, self.momentum):
            update_momentum(m, p.grad, ts.layout, cfg.beta, self.lr)
            tensors.append(take_topk(m, ts.k, cfg.alpha))
        return encode(self.spec, self.step, tensors)

    def decode(self, payload: bytes) -> Payload:
        """Strictly decode a peer's payload for this step; raises PayloadError on anything wrong."""
        decoded = decode(self.spec, payload)
        if decoded.step != self.step:
            raise StalePayloadError(f"payload is for step {decoded.step}, this node is at {self.step}")
        return decoded

    @torch.no_grad()
    def apply(self, payloads: Mapping[str, bytes]) -> None:
        """Aggregate the accepted payloads in node-id order and take one step.

        Every payload is decoded before any parameter changes, so a bad one (PayloadError,
        naming its node) leaves the model and the step counter untouched.
        """
        if not payloads:
            raise ValueError("apply needs at least one payload")
        decoded = []
        for node in sorted(payloads):
            try:
                decoded.append(self.decode(payloads[node]))
            except PayloadError as err:
                raise type(err)(f"payload from {node}: {err}") from err
        lr, wd = self.lr, self.config.weight_decay
        for i, (p, ts) in enumerate(zip(self.params, self.spec.tensors)):
            lay = ts.layout
            mean = aggregate(
                [d.tensors[i] for d in decoded],
                lay.n_chunks,
                lay.chunk_numel,
                compute_dtype(p.dtype),
                p.device,
            )
            sign_step(p, idct_chunks(mean, lay), lr, wd)
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "spec_digest": self.spec.digest.hex(),
            "momentum": {name: m.clone() for name, m in zip(self.names, self.momentum)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["spec_digest"] != self.spec.digest.hex():
            raise ValueError("optimizer state was saved for a different parameter spec")
        for name, m in zip(self.names, self.momentum):
            m.copy_(state["momentum"][name])
        self.step = int(state["step"])
