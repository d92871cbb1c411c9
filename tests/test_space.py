import ast
import random

import pytest
from conftest import SEED_FILE
from hypothesis import given, settings
from hypothesis import strategies as st

from bfnas.errors import InputError
from bfnas.models.space.search_space import SearchSpace, load_space, shipped_spaces
from bfnas.models.space.subnet import SubnetConfig

SHIPPED = sorted(shipped_spaces())


def test_three_spaces_ship():
    assert set(SHIPPED) >= {"bigger-faster", "autotinybert", "minilm-l6"}


def test_bigger_faster_is_exactly_the_seed_grid():
    space = load_space("bigger-faster")
    seen = set()
    for line in SEED_FILE.read_text().splitlines():
        d = ast.literal_eval(line.split("\t")[0])
        n = d["sample_layer_num"]
        cfg = SubnetConfig.from_dict(
            {
                "layers": n,
                "hidden": d["sample_hidden_size"],
                "heads": d["sample_num_attention_heads"][:n],
                "qkv": d["sample_qkv_sizes"][:n],
                "ffn": d["sample_intermediate_sizes"][:n],
            }
        )
        space.check(cfg)
        seen.add(cfg.key())
    assert len(seen) == space.count() == 14250


def test_minilm_space_fits_the_checkpoint_shape():
    space = load_space("minilm-l6")
    big = space.largest()
    assert (big.layers, big.hidden, big.heads[0], big.qkv[0], big.ffn[0]) == (6, 384, 12, 384, 1536)
    assert all(q == 32 * a for a, q in space.layer_pairs(384))


def test_count_matches_enumeration_on_a_small_space(tiny_space):
    # Count by brute force over every combination and compare with the formula.
    total = 0
    for layers in tiny_space.layers.values:
        for hidden in tiny_space.hidden.values:
            per_layer = len(tiny_space.layer_pairs(hidden)) * len(tiny_space.ffn.values)
            total += per_layer**layers
    assert tiny_space.count() == total
    seen = {tiny_space.sample(random.Random(i)).key() for i in range(4000)}
    assert len(seen) <= total


def test_check_names_the_offending_field():
    space = load_space("minilm-l6")
    cfg = SubnetConfig(2, 384, (12, 12), (384, 384), (1536, 4000))
    with pytest.raises(InputError) as err:
        space.check(cfg)
    assert err.value.field == "ffn[1]" and "4000" in err.value.reason
    cfg = SubnetConfig(2, 384, (12, 6), (384, 384), (1536, 1536))  # qkv != 32 x heads
    with pytest.raises(InputError) as err:
        space.check(cfg)
    assert err.value.field == "qkv[1]"
    uniform = load_space("bigger-faster")
    with pytest.raises(InputError) as err:
        uniform.check(SubnetConfig(2, 120, (12, 12), (120, 120), (128, 140)))
    assert "uniform" in err.value.reason


MALFORMED = [
    ("layers = {min = 1, max = 3}\n", "name"),
    (
        'name = "x"\nlayers = {min = 3, max = 1}\nhidden = 64\nheads = 1\nqkv = 64\nffn = 64\n',
        "layers.max",
    ),
    (
        'name = "x"\nlayers = {min = 1, max = 2, stride = 1}\nhidden = 64\nheads = 1\nqkv = '
        "64\nffn = 64\n",
        "layers.stride",
    ),
    ('name = "x"\nlayers = 2\nhidden = "wide"\nheads = 1\nqkv = 64\nffn = 64\n', "hidden"),
    ('name = "x"\nlayers = 2\nhidden = 64\nheads = [0]\nqkv = 64\nffn = 64\n', "heads"),
    ('name = "x"\nlayers = 2\nhidden = 64\nheads = 1\nqkv = "width"\nffn = 64\n', "qkv"),
    ('name = "x"\nlayers = 2\nhidden = 64\nheads = 7\nqkv = 64\nffn = 64\n', "qkv"),
    (
        'name = "x"\nlayers = 2\nhidden = 64\nheads = 1\nqkv = {head_size = -2}\nffn = 64\n',
        "qkv.head_size",
    ),
    (
        'name = "x"\nlayers = 2\nhidden = 64\nheads = 1\nqkv = 64\nffn = 64\nuniform = "yes"\n',
        "uniform",
    ),
    ('name = "x"\nlayers = 2\nhidden = 64\nheads = 1\nqkv = 64\nffn = 64\ncolour = 1\n', "colour"),
    ('name = "x"\nlayers = {max = 2}\nhidden = 64\nheads = 1\nqkv = 64\nffn = 64\n', "layers.min"),
    ('name = "x"\nlayers = [1, 2.5]\nhidden = 64\nheads = 1\nqkv = 64\nffn = 64\n', "layers"),
]


@pytest.mark.parametrize(("text", "field"), MALFORMED)
def test_malformed_space_names_file_and_field(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        SearchSpace.from_toml(path)
    assert err.value.where == str(path) and err.value.field == field
    assert "\n" not in err.value.line()


def test_toml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x\nlayers = \n')
    with pytest.raises(InputError) as err:
        SearchSpace.from_toml(path)
    assert err.value.where == str(path) and "TOML" in err.value.reason


# -- evolution stays inside the space (property tests) --------------------------------------
@st.composite
def spaces(draw):
    """Random small spaces, including tied and per-layer ones."""
    lo = draw(st.integers(1, 3))
    qkv_kind = draw(st.sampled_from(["hidden", "head_size", "choices"]))
    heads = sorted(set(draw(st.lists(st.integers(1, 8), min_size=1, max_size=4))))
    hidden_step = 8 * draw(st.integers(1, 4))
    data = {
        "name": "generated",
        "uniform": draw(st.booleans()),
        "layers": {"min": lo, "max": lo + draw(st.integers(0, 4))},
        "hidden": {
            "min": 840,
            "max": 840 + hidden_step * draw(st.integers(0, 5)),
            "step": hidden_step,
        },
        "heads": heads,
        "ffn": {"min": 16, "max": 16 + 16 * draw(st.integers(0, 6)), "step": 16},
    }
    if qkv_kind == "hidden":
        data["qkv"] = "hidden"  # 840 and its steps of 8 are divisible by 1, 2, 4, 8 but not all
    elif qkv_kind == "head_size":
        data["qkv"] = {"head_size": draw(st.integers(1, 64))}
    else:
        data["qkv"] = {"min": 840, "max": 840 + 840, "step": 24}
    try:
        return SearchSpace.from_dict(data, "<generated>")
    except InputError:
        # Some drawn spaces have a hidden size no head count divides: a valid refusal.
        return SearchSpace.from_dict({**data, "heads": [1]}, "<generated>")


space_strategy = st.one_of(st.sampled_from([load_space(n) for n in SHIPPED]), spaces())


@settings(max_examples=150, deadline=None)
@given(space=space_strategy, seed=st.integers(0, 2**32 - 1))
def test_sample_mutate_crossover_stay_inside(space, seed):
    rng = random.Random(seed)
    a, b = space.sample(rng), space.sample(rng)
    assert space.contains(a) and space.contains(b)
    for rate in (0.1, 0.5, 1.0):
        m = space.mutate(a, rng, rate)
        assert space.contains(m), m
    c = space.crossover(a, b, rng)
    assert space.contains(c), c
    assert c.layers in (a.layers, b.layers) and c.hidden in (a.hidden, b.hidden)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutation_changes_the_architecture(seed):
    space = load_space("minilm-l6")
    rng = random.Random(seed)
    a = space.sample(rng)
    assert space.mutate(a, rng, 0.2) != a


def test_sampling_is_reproducible():
    space = load_space("autotinybert")
    first = [space.sample(random.Random(7)).key() for _ in range(3)]
    assert len(set(first)) == 1
    assert space.sample(random.Random(8)).key() != first[0] or space.count() == 1
