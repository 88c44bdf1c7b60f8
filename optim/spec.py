"""The parameter spec a run agrees on: names, shapes, chunking, k and value mode, and its hash.

Every payload carries the spec's sha256; a payload built for another model, chunking, k or value
mode is rejected before any of its contents are read.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from optim.config import ValueMode
from optim.dct import ChunkLayout, layout_for

CODEC_VERSION = 2  # 2: the header names the round and the origin


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layout: ChunkLayout
    k: int  # coefficients sent per chunk: min(topk, chunk_numel)

    @property
    def rice_max(self) -> int:
        """Largest Rice parameter that can be useful: enough bits for any gap in a chunk."""
        return (self.layout.chunk_numel - 1).bit_length()


@dataclass(frozen=True)
class ParamSpec:
    tensors: tuple[TensorSpec, ...]
    mode: ValueMode

    @classmethod
    def build(
        cls, shapes: Iterable[tuple[str, tuple[int, ...]]], chunk: int, topk: int, mode: ValueMode
    ) -> "ParamSpec":
        tensors = []
        for name, shape in shapes:
            lay = layout_for(tuple(shape), chunk)
            tensors.append(TensorSpec(name, lay, min(topk, lay.chunk_numel)))
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return cls(tuple(tensors), ValueMode(mode))

    @cached_property
    def digest(self) -> bytes:
        canonical = {
            "codec": CODEC_VERSION,
            "mode": int(self.mode),
            "tensors": [
                [t.name, list(t.layout.shape), [t.layout.chunk_rows, t.layout.chunk_cols], t.k]
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
