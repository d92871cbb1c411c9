"""The models a user would pick by hand, which every accuracy search is held against.

The hand-scaled model: the space's largest subnet with fewer layers at full width, or all
its layers uniformly narrower, its shape kept (MiniLM's heads of 32 dimensions and an FFN
four times hidden: the largest subnet's head size and FFN ratio). Under a latency budget the
baseline is the largest member of each family whose *measured* latency fits; fine-tuned with
the winner's protocol and seeds, the more accurate of the two is the one the winner must
beat.
"""

from __future__ import annotations

from collections.abc import Callable

from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig


def hand_scaled(space: SearchSpace) -> dict[str, list[SubnetConfig]]:
    """Each family's members in `space`, smallest first."""
    top = space.largest()
    fewer = [
        SubnetConfig.uniform(n, top.hidden, top.heads[0], top.qkv[0], top.ffn[0])
        for n in range(1, top.layers + 1)
    ]
    head = top.qkv[0] // top.heads[0]
    ratio = top.ffn[0] / top.hidden
    narrower = [
        SubnetConfig.uniform(top.layers, head * k, k, head * k, round(ratio * head * k))
        for k in range(1, top.heads[0] + 1)
    ]
    return {
        "fewer layers": [c for c in fewer if space.contains(c)],
        "narrower": [c for c in narrower if space.contains(c)],
    }


def largest_fitting(
    space: SearchSpace, fits: Callable[[SubnetConfig], bool]
) -> dict[str, SubnetConfig]:
    """Each family's largest member for which `fits` holds (a measured latency within the
    budget); a family none of whose members fits is left out. Members are tried from the
    largest down, so `fits` measures only as many as it must."""
    found = {}
    for family, members in hand_scaled(space).items():
        for cfg in reversed(members):
            if fits(cfg):
                found[family] = cfg
                break
    return found
