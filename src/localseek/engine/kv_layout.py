"""KV cache groups: which layers share a block table, and how a physical block is laid out. No torch.

A model whose layers all attend the same way keeps one block table per sequence, and a block
holds one token range's KV for every layer. Sliding-window layers need only the last `window`
tokens, so they must be able to give blocks back while full-attention layers keep theirs: they
need block tables of their own.

Layers are therefore split into groups of `page_layers` layers each, every group with one
attention kind (full, or one window size). A physical block is a page of `page_layers` layer
slots; a block id belongs to one group at a time, and layer slot s of that block holds the KV
of the group's s-th layer. All groups share one pool of block ids, so memory freed by a window
layer is immediately usable by any group (vLLM's hybrid allocator follows the same idea).
`page_layers` is the gcd of the layer counts per kind: Gemma 3 270M has 15 sliding and 3 full
layers -> pages of 3 layers, 5 sliding groups and 1 full group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class _Spec(Protocol):
    """What the layout reads from a layer's KVCacheSpec (kept torch-free)."""

    shapes: tuple[tuple[int, ...], ...]
    sliding_window: int | None


@dataclass(frozen=True)
class KVGroup:
    """Layers that share one block table per sequence."""

    sliding_window: int | None  # None: full attention, keeps every block
    layers: tuple[int, ...]  # model layer indices; layer layers[s] uses page slot s


@dataclass(frozen=True)
class KVLayout:
    """The groups of a model, full-attention groups first (their table is `seq.block_table`)."""

    groups: tuple[KVGroup, ...]
    page_layers: int  # layer slots per physical block (every group has this many layers)

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def windows(self) -> tuple[int | None, ...]:
        return tuple(g.sliding_window for g in self.groups)

    @property
    def has_sliding(self) -> bool:
        return any(w is not None for w in self.windows)

    @property
    def num_layers(self) -> int:
        return self.num_groups * self.page_layers

    def num_physical_blocks(self, whole_blocks: int) -> int:
        """Blocks of page_layers layers that take the bytes of `whole_blocks` all-layer blocks,
        plus the null block the block manager reserves when a window group exists."""
        return whole_blocks * self.num_groups + int(self.has_sliding)

    def group_of(self, layer: int) -> int:
        return self._position(layer)[0]

    def slot_of(self, layer: int) -> int:
        return self._position(layer)[1]

    def _position(self, layer: int) -> tuple[int, int]:
        for g, group in enumerate(self.groups):
            if layer in group.layers:
                return g, group.layers.index(layer)
        raise KeyError(f"layer {layer} is in no KV cache group")

    def describe(self) -> str:
        """One line for the load log, e.g. '1 full group, 5 sliding-window (512) groups ...'."""
        full = sum(w is None for w in self.windows)
        windows = sorted({w for w in self.windows if w is not None})
        parts = [f"{full} full-attention"] if full else []
        parts += [f"{self.windows.count(w)} sliding-window ({w} tokens)" for w in windows]
        return f"{' + '.join(parts)} groups of {self.page_layers} layers"


def first_visible_block(position: int, window: int, block_size: int) -> int:
    """First logical block holding a key that a query at `position` sees through `window`
    (keys position - window + 1 .. position); earlier blocks are out of reach for good."""
    return max(0, position - window + 1) // block_size


def single_group(num_layers: int, sliding_window: int | None = None) -> KVLayout:
    """Every layer in one group: one block table per sequence, blocks hold all layers."""
    return KVLayout((KVGroup(sliding_window, tuple(range(num_layers))),), num_layers)


def plan_kv_layout(specs: Sequence[_Spec]) -> KVLayout:
    """Group layers by attention kind so window layers can free blocks independently.

    Falls back to one group (windows then only mask, nothing is freed) when layers of
    different kinds store different shapes: they could not share a page slot.
    """
    if not specs:
        raise ValueError("a model needs at least one layer with a KV cache")
    kinds: dict[int | None, list[int]] = {}
    for i, spec in enumerate(specs):
        kinds.setdefault(spec.sliding_window, []).append(i)
    if len(kinds) == 1:
        (window,) = kinds
        return single_group(len(specs), window)
    if len({spec.shapes for spec in specs}) > 1:
        return single_group(len(specs))
    page = math.gcd(*(len(layers) for layers in kinds.values()))
    # Full attention first, then windows from small to large: deterministic and group 0 is
    # the table that covers the whole context whenever a full-attention layer exists.
    order = sorted(kinds, key=lambda w: (w is not None, w or 0))
    groups = tuple(
        KVGroup(window, tuple(kinds[window][start : start + page]))
        for window in order
        for start in range(0, len(kinds[window]), page)
    )
    return KVLayout(groups, page)
