"""The hand-scaled baselines every accuracy search is held against."""

from bfnas.models.space.search_space import load_space
from bfnas.search.baselines import hand_scaled, largest_fitting


def test_each_family_grows_and_stays_in_the_space():
    space = load_space("minilm-l6")
    families = hand_scaled(space)
    assert set(families) == {"fewer layers", "narrower"}
    for members in families.values():
        params = [c.params() for c in members]
        assert params == sorted(params) and len(set(params)) == len(params)
        assert all(space.contains(c) for c in members)
        assert members[-1] == space.largest()  # both families end at the full model
    assert [c.layers for c in families["fewer layers"]] == [1, 2, 3, 4, 5, 6]
    assert all(c.ffn[0] == 4 * c.hidden == 4 * c.qkv[0] for c in families["narrower"])


def test_the_largest_fitting_member_of_each_family_measuring_from_the_top_down():
    space = load_space("minilm-l6")
    tried = []

    def fits(cfg):
        tried.append(cfg)
        return cfg.layers * cfg.hidden <= 2 * 384  # a stand-in for a measured latency

    found = largest_fitting(space, fits)
    assert found["fewer layers"].layers == 2
    assert found["narrower"].hidden == 128
    # Nothing smaller than a fitting member was measured.
    assert len(tried) == (6 - 2 + 1) + 9
    assert largest_fitting(space, lambda cfg: False) == {}
