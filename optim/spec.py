"""The parameter spec a run agrees on: names, shapes, chunking, selection groups, k and value
mode, and its hash.

Top-k picks within groups of coefficients: each chunk is a group (select "chunk"), or a whole
tensor's chunks, in chunk-major order, are one (select "tensor"). On the wire an index is a
position within its group; `TensorSpec.positions` maps it to the block layout.

Every payload carries the spec's sha256; a payload built for another model, chunking, k or value
mode is rejected before any of its contents are read.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import torch

from optim.config import DemoConfig, ValueMode
from optim.dct import ChunkLayout, block_positions, layout_for

CODEC_VERSION = 2  # 2: the header names the round and the origin


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layout: ChunkLayout
    k: int  # coefficients sent per group, at most group_numel
    chunks_per_group: int = 1

    @property
    def groups(self) -> int:
        return self.layout.n_chunks // self.chunks_per_group

    @property
    def group_numel(self) -> int:
        return self.chunks_per_group * self.layout.chunk_numel

    @property
    def rice_max(self) -> int:
        """Largest Rice parameter that can be useful: enough bits for any gap in a group."""
        return (self.group_numel - 1).bit_length()

    def positions(self, groups: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Flat offsets into the block layout of (group id (A,), index within the group (A, k))."""
        if self.chunks_per_group == 1:
            return block_positions(self.layout, groups, indices)
        n = self.layout.chunk_numel
        chunks = groups[:, None] * self.chunks_per_group + indices // n
        return block_positions(self.layout, chunks, indices % n)


def tensor_spec(name: str, shape: tuple[int, ...], chunk: int, topk: int, select: str) -> TensorSpec:
    lay = layout_for(shape, chunk)
    if select == "chunk":
        return TensorSpec(name, lay, min(topk, lay.chunk_numel))
    # the same share of the tensor's entries as k per full chunk x chunk block
    k = max(1, round(topk * lay.numel / chunk**2))
    return TensorSpec(name, lay, min(k, lay.n_chunks * lay.chunk_numel), lay.n_chunks)


@dataclass(frozen=True)
class ParamSpec:
    tensors: tuple[TensorSpec, ...]
    mode: ValueMode

    @classmethod
    def build(
        cls,
        shapes: Iterable[tuple[str, tuple[int, ...]]],
        chunk: int,
        topk: int,
        mode: ValueMode,
        select: str = "chunk",
    ) -> "ParamSpec":
        tensors = [tensor_spec(name, tuple(shape), chunk, topk, select) for name, shape in shapes]
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return cls(tuple(tensors), ValueMode(mode))

    @classmethod
    def for_config(cls, shapes: Iterable[tuple[str, tuple[int, ...]]], config: DemoConfig) -> "ParamSpec":
        return cls.build(shapes, config.chunk, config.topk, config.values, config.select)

    @cached_property
    def digest(self) -> bytes:
        canonical = {
            "codec": CODEC_VERSION,
            "mode": int(self.mode),
            "tensors": [
                [t.name, list(t.layout.shape), [t.layout.chunk_rows, t.layout.chunk_cols], t.k]
                + ([t.chunks_per_group] if t.chunks_per_group > 1 else [])
                for t in self.tensors
            ],
        }
        return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).digest()

    @property
    def numel(self) -> int:
        return sum(t.layout.numel for t in self.tensors)

    @property
    def n_chunks(self) -> int:
        return sum(t.layout.n_chunks for t in self.tensors)
