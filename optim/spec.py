"""The parameter spec a run agrees on: names, shapes, chunking, selection groups, k and value
mode, and its hash.

Top-k picks within groups of coefficients: each chunk is a group (select "chunk"), or a whole
tensor's chunks, in chunk-major order, are one (select "tensor"). What it picks is a unit: one
coefficient, or with `tile` > 1 a tile of tile x tile neighbouring coefficients of a chunk
(ranked by their sum of squares), whose position costs as many bits as one coefficient's and
which sends a value per coefficient. Where a chunk's side is not a multiple of the tile's, the
last row or column of coefficients (the chunk's highest frequency along that side) is in no
tile and never sent. On the wire an index is a unit's position within its group;
`TensorSpec.positions` maps it to the block layout.

Every payload carries the spec's sha256; a payload built for another model, chunking, k or value
mode is rejected before any of its contents are read.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property

import torch

from optim.config import DemoConfig, ValueMode
from optim.dct import ChunkLayout, block_positions, layout_for

CODEC_VERSION = 2  # 2: the header names the round and the origin


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layout: ChunkLayout
    k: int  # units sent per group, at most units
    chunks_per_group: int = 1
    tile: tuple[int, int] = (1, 1)  # rows, cols of a unit

    @property
    def width(self) -> int:
        """Coefficients (and values) per unit."""
        return self.tile[0] * self.tile[1]

    @property
    def units(self) -> int:
        """Units per group: the range of an index on the wire."""
        return self.chunks_per_group * self.per_chunk

    @property
    def per_chunk(self) -> int:
        """Units in each chunk: whole tiles only."""
        return (self.layout.chunk_rows // self.tile[0]) * (self.layout.chunk_cols // self.tile[1])

    @property
    def groups(self) -> int:
        return self.layout.n_chunks // self.chunks_per_group

    @property
    def group_numel(self) -> int:
        return self.chunks_per_group * self.layout.chunk_numel

    @property
    def rice_max(self) -> int:
        """Largest Rice parameter that can be useful: enough bits for any gap in a group."""
        return (self.units - 1).bit_length()

    def coefficients(self, units: torch.Tensor) -> torch.Tensor:
        """Indices within the group of the coefficients of units (A, k): (A, k * width), unit by unit."""
        if self.width == 1:
            return units
        table = self.tile_table.to(units.device)
        inside = (units // self.per_chunk * self.layout.chunk_numel)[..., None] + table[
            units % self.per_chunk
        ]
        return inside.reshape(*units.shape[:-1], -1)

    @cached_property
    def tile_table(self) -> torch.Tensor:
        """Index within a chunk of each coefficient of each of its tiles: (units per chunk, width),
        tiles in row-major order over the chunk."""
        th, tw = self.tile
        sh, sw = self.layout.chunk_rows, self.layout.chunk_cols
        rows = torch.arange(sh // th)[:, None, None, None] * th + torch.arange(th)[None, None, :, None]
        cols = torch.arange(sw // tw)[None, :, None, None] * tw + torch.arange(tw)[None, None, None, :]
        return (rows * sw + cols).reshape(-1, th * tw)

    def unit_scores(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """What top-k ranks: |coefficient| (rows of group_numel), or each tile's sum of squares."""
        if self.width == 1:
            return magnitudes
        per_chunk = magnitudes.view(*magnitudes.shape[:-1], -1, self.layout.chunk_numel)
        tiles = per_chunk[..., self.tile_table.to(magnitudes.device)]
        return tiles.square().sum(-1).flatten(-2)

    def positions(self, groups: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Flat offsets into the block layout of (group id (A,), unit index within the group
        (A, k)): (A, k * width)."""
        indices = self.coefficients(indices)
        if self.chunks_per_group == 1:
            return block_positions(self.layout, groups, indices)
        n = self.layout.chunk_numel
        chunks = groups[:, None] * self.chunks_per_group + indices // n
        return block_positions(self.layout, chunks, indices % n)


def tile_shape(lay: ChunkLayout, tile: int) -> tuple[int, int]:
    """A tile's rows and columns in this layout: `tile` along each side of a chunk at least that
    long, 1 along any other (a 1-D tensor's chunks are single rows)."""
    return tuple(tile if side >= tile else 1 for side in (lay.chunk_rows, lay.chunk_cols))


def tensor_spec(
    name: str, shape: tuple[int, ...], chunk: int, topk: int, select: str, tile: int = 1
) -> TensorSpec:
    """`topk` counts coefficients per chunk x chunk block; tiles of w coefficients send 1/w as many units."""
    lay = layout_for(shape, chunk)
    whole = select == "tensor"
    unsized = TensorSpec(name, lay, 0, lay.n_chunks if whole else 1, tile_shape(lay, tile))
    # over a tensor, the same share of its entries as topk per full chunk x chunk block
    share = topk * lay.numel / chunk**2 if whole else topk
    return replace(unsized, k=max(1, min(round(share / unsized.width), unsized.units)))


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
        tile: int = 1,
    ) -> "ParamSpec":
        tensors = [tensor_spec(name, tuple(shape), chunk, topk, select, tile) for name, shape in shapes]
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        return cls(tuple(tensors), ValueMode(mode))

    @classmethod
    def for_config(cls, shapes: Iterable[tuple[str, tuple[int, ...]]], config: DemoConfig) -> "ParamSpec":
        return cls.build(shapes, config.chunk, config.topk, config.values, config.select, config.tile)

    @cached_property
    def digest(self) -> bytes:
        canonical = {
            "codec": CODEC_VERSION,
            "mode": int(self.mode),
            "tensors": [
                [t.name, list(t.layout.shape), [t.layout.chunk_rows, t.layout.chunk_cols], t.k]
                + ([t.chunks_per_group] if t.chunks_per_group > 1 else [])
                + ([list(t.tile)] if t.width > 1 else [])
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
