"""Random documents fed to the parsers of user files: an architecture (JSON), a hardware
profile and a search space (TOML). Whatever the document, the parser returns a value or
raises the project's `InputError`, never anything else (a traceback a user would see)."""

import json
import math
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bfnas.bench.hardware_profile import load_profile, parse_profile
from bfnas.errors import InputError
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import KEYS, SubnetConfig

SPACE_KEYS = ("name", "description", "uniform", "layers", "hidden", "heads", "qkv", "ffn")
PROFILE_KEYS = (
    "name",
    "description",
    "precision",
    "runtime",
    "quantization",
    "measure",
    "target",
    "device",
    "intra_op_threads",
    "recipe",
    "min_runs",
    "cpu_affinity",
    "provider",
    "providers",
    "warmup_runs",
    "max_seconds",
)

# Scalars a hostile or careless file holds: huge and negative numbers, floats, NaN, strings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0, 1, 2, 3, 64, 128, 10**9, 2**63, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)


def documents(keys):
    """Nested dicts and lists, keyed mostly by the names the parser knows."""
    key = st.one_of(st.sampled_from(keys), st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=6), st.dictionaries(key, inner, max_size=8)
        ),
        max_leaves=30,
    )


def one_field_off(valid: st.SearchStrategy, wild: dict) -> st.SearchStrategy:
    """A valid document, or one with a single field replaced by a wild value: the cases the
    range and structure checks after the first one guard."""

    def spoil(doc, key, value, keep):
        return doc if keep else {**doc, key: value}

    return st.builds(
        lambda doc, pick, keep: spoil(doc, pick[0], pick[1], keep),
        valid,
        st.one_of(*[st.tuples(st.just(k), v) for k, v in wild.items()]),
        st.booleans(),
    )


def valid_arch():
    return st.integers(1, 4).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                "layers": st.just(n),
                "hidden": st.sampled_from([64, 128, 384]),
                "heads": st.one_of(
                    st.sampled_from([1, 2, 4]),
                    st.lists(st.sampled_from([1, 2, 4]), min_size=n, max_size=n),
                ),
                "qkv": st.one_of(
                    st.sampled_from([64, 128]),
                    st.lists(st.sampled_from([64, 128]), min_size=n, max_size=n),
                ),
                "ffn": st.one_of(
                    st.integers(1, 2048), st.lists(st.integers(1, 2048), min_size=n, max_size=n)
                ),
            }
        )
    )


def near_valid_arch():
    per_layer = st.one_of(
        st.integers(-5, 10**7), st.lists(st.integers(-5, 5000), max_size=8), scalars
    )
    wild = {
        "layers": st.one_of(st.integers(-2, 10**9), scalars),
        "hidden": scalars,
        "heads": per_layer,
        "qkv": per_layer,
        "ffn": per_layer,
    }
    return one_field_off(valid_arch(), wild)


def _parses_or_refuses(parse, document) -> None:
    try:
        parse(document)
    except InputError as exc:
        assert exc.line() and "\n" not in exc.line()


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.one_of(documents(KEYS), near_valid_arch()))
def test_arch_parser_raises_only_input_error(document):
    text = json.dumps(document, allow_nan=True)
    _parses_or_refuses(lambda t: SubnetConfig.from_json(t, where="--arch"), text)


@SETTINGS
@given(st.text(max_size=200))
def test_arch_parser_on_any_text(text):
    _parses_or_refuses(lambda t: SubnetConfig.from_json(t, where="--arch"), text)


@SETTINGS
@given(documents(SPACE_KEYS).filter(lambda d: isinstance(d, dict)))
def test_space_parser_raises_only_input_error(document):
    _parses_or_refuses(lambda d: SearchSpace.from_dict(d, "space.toml"), document)


def near_valid_space():
    valid = st.fixed_dictionaries(
        {
            "name": st.just("s"),
            "layers": st.just({"min": 1, "max": 3}),
            "hidden": st.sampled_from([[64, 128], {"min": 64, "max": 256, "step": 64}]),
            "heads": st.sampled_from([[1, 2], [2, 4]]),
            "qkv": st.sampled_from([[32, 64], {"min": 32, "max": 128, "step": 32}]),
            "ffn": st.sampled_from([[64], {"min": 64, "max": 512, "step": 64}]),
        }
    )
    choice = st.one_of(
        st.fixed_dictionaries({"min": scalars, "max": scalars}),
        st.fixed_dictionaries(
            {
                "min": st.integers(-4, 4096),
                "max": st.integers(-4, 10**13),
                "step": st.one_of(st.integers(-3, 512), scalars),
            }
        ),
        st.lists(st.one_of(st.integers(-3, 5000), scalars), max_size=6),
        scalars,
    )
    return one_field_off(
        valid,
        {
            k: choice
            for k in ("layers", "hidden", "heads", "qkv", "ffn", "uniform", "description", "name")
        },
    )


@SETTINGS
@given(near_valid_space())
def test_space_parser_on_near_valid_spaces(document):
    _parses_or_refuses(lambda d: SearchSpace.from_dict(d, "space.toml"), document)


@SETTINGS
@given(documents(PROFILE_KEYS).filter(lambda d: isinstance(d, dict)))
def test_profile_parser_raises_only_input_error(document):
    _parses_or_refuses(lambda d: parse_profile(d, "profile.toml"), document)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.text(max_size=300))
def test_toml_files_of_any_text(tmp_path, text):
    """The file readers, end to end: any text as a profile file and as a space file."""
    path = tmp_path / "any.toml"
    path.write_text(text, encoding="utf-8")
    _parses_or_refuses(load_profile, path)
    _parses_or_refuses(SearchSpace.from_toml, path)


def test_the_strategies_reach_valid_documents():
    """The random documents are not all refused at the first check: a valid arch and a
    valid space parse, so the properties above exercise the deeper checks too."""
    arch = {"layers": 2, "hidden": 128, "heads": 2, "qkv": 64, "ffn": [128, 256]}
    assert SubnetConfig.from_json(json.dumps(arch)).layers == 2
    space = {
        "name": "s",
        "layers": {"min": 1, "max": 2},
        "hidden": [64, 128],
        "heads": [1, 2],
        "qkv": [32, 64],
        "ffn": [64],
    }
    assert SearchSpace.from_dict(space, "s.toml").count() > 0
    assert math.isfinite(tomllib.loads("a = 1")["a"])
