"""KV cache groups: layers of one attention kind share a table; pages hold gcd-many layers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from localseek.engine.kv_layout import plan_kv_layout, single_group

KV = ((1, 64), (1, 64))


@dataclass(frozen=True)
class Spec:
    shapes: tuple = KV
    sliding_window: int | None = None


def gemma3_specs(num_layers: int, window: int = 512, period: int = 6) -> list[Spec]:
    """Gemma 3's pattern: every period-th layer global, the others local."""
    return [Spec(KV, None if (i + 1) % period == 0 else window) for i in range(num_layers)]


def test_uniform_model_has_one_group_of_every_layer():
    layout = plan_kv_layout([Spec()] * 4)
    assert layout == single_group(4)
    assert layout.page_layers == 4 and not layout.has_sliding


def test_all_window_model_has_one_window_group():
    layout = plan_kv_layout([Spec(KV, 4096)] * 3)
    assert layout.windows == (4096,) and layout.page_layers == 3


def test_gemma3_270m_pages_of_three_layers_one_full_and_five_window_groups():
    layout = plan_kv_layout(gemma3_specs(18))
    assert layout.page_layers == 3
    assert layout.windows == (None, 512, 512, 512, 512, 512)
    assert layout.groups[0].layers == (5, 11, 17)  # full attention first
    assert layout.groups[1].layers == (0, 1, 2)
    # Every layer is in exactly one group, at one slot.
    seen = sorted(layer for group in layout.groups for layer in group.layers)
    assert seen == list(range(18))
    assert (layout.group_of(11), layout.slot_of(11)) == (0, 1)
    assert layout.groups[2].layers == (3, 4, 6)  # local layers in order, the global 5 skipped
    assert (layout.group_of(7), layout.slot_of(7)) == (3, 0)
    assert layout.describe() == (
        "1 full-attention + 5 sliding-window (512 tokens) groups of 3 layers"
    )


def test_gemma3_1b_pattern_gives_pages_of_two_layers():
    layout = plan_kv_layout(gemma3_specs(26))  # 4 global, 22 local
    assert layout.page_layers == 2 and layout.num_groups == 13
    assert layout.windows.count(None) == 2


def test_kinds_with_different_shapes_fall_back_to_one_group():
    specs = [Spec(KV, 8), Spec(((2, 32), (2, 32)), None)]
    layout = plan_kv_layout(specs)
    assert layout.num_groups == 1 and layout.windows == (None,)


def test_unknown_layer_is_named():
    with pytest.raises(KeyError, match="layer 9"):
        single_group(2).group_of(9)
