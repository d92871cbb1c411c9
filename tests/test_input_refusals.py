"""Bad input in files and flags (issue 15, causes 1-3 and 14), table-driven: each row is one
line naming the file or flag and the field, exit 2, the folder byte-identical afterwards.

Causes: 1 a binary file where text is expected; 2 JSON nested deeper than the parser
recurses; 3 sizes so large that expanding them would exhaust memory (checked before anything
is built); 14 messages that blame the wrong flag or echo an enormous value."""

import time

import pytest
from refusals import Refusal, check_refusal

BINARY = bytes(range(256)) * 4
ARCH = '{"layers": 1, "hidden": 64, "heads": 2, "qkv": 64, "ffn": 128}'
SPACE = 'name = "s"\nlayers = 2\nhidden = [64, 128]\nheads = 2\nqkv = 64\nffn = 128\n'


def bench(*argv: str) -> list[str]:
    return [
        "bench",
        "--hw",
        "local-cpu-int8",
        "--space",
        "bigger-faster",
        "--artifacts",
        "{tmp}/art",
        "--db",
        "{tmp}/lat.db",
        *argv,
    ]


def nested(depth: int) -> str:
    return '{"layers": ' + "[" * depth + "]" * depth + "}"


def arch_with(**fields) -> str:
    base = {"layers": 1, "hidden": 64, "heads": 2, "qkv": 64, "ffn": 128, **fields}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}"


CASES = [
    # 1: a binary file where text is expected
    Refusal(
        "binary-arch-file", bench("--arch", "{tmp}/a.json"), "{tmp}/a.json", {"a.json": BINARY}
    ),
    Refusal(
        "binary-profile",
        ["hw", "show", "{tmp}/p.toml"],
        "{tmp}/p.toml: not a text file",
        {"p.toml": BINARY},
    ),
    Refusal(
        "binary-space",
        ["space", "show", "{tmp}/s.toml"],
        "{tmp}/s.toml: not a text file",
        {"s.toml": BINARY},
    ),
    Refusal(
        "binary-space-for-export",
        ["export", "--space", "{tmp}/s.toml", "--arch", ARCH, "--out", "{tmp}/out"],
        "{tmp}/s.toml: not a text file",
        {"s.toml": b"\xff\xfe" + BINARY},
    ),
    Refusal(
        "binary-import",
        [
            "import",
            "{tmp}/t.tsv",
            "--hw",
            "seed-cpu-fp32",
            "--space",
            "bigger-faster",
            "--db",
            "{tmp}/lat.db",
        ],
        "{tmp}/t.tsv",
        {"t.tsv": BINARY},
    ),
    Refusal(
        "latin-1-profile",
        ["hw", "show", "{tmp}/p.toml"],
        "not a text file",
        {"p.toml": 'name = "caf\xe9"\n'.encode("latin-1")},
    ),
    # 2: nesting deeper than a recursive parser goes
    Refusal("nested-arch-inline", bench("--arch", nested(100_000)), "--arch: JSON nested"),
    Refusal(
        "nested-arch-file",
        bench("--arch", "{tmp}/a.json"),
        "{tmp}/a.json: JSON nested",
        {"a.json": nested(200_000)},
    ),
    Refusal("nested-list-unclosed", bench("--arch", '{"a": ' + "[" * 100_000), "--arch"),
    # 3: sizes bounded before anything is expanded or built
    Refusal(
        "arch-layers-1e9",
        bench("--arch", arch_with(layers=10**9)),
        "--arch: layers: must be at most",
    ),
    Refusal(
        "arch-layers-1e8-file",
        bench("--arch", "{tmp}/a.json"),
        "{tmp}/a.json: layers",
        {"a.json": arch_with(layers=10**8, heads=2)},
    ),
    Refusal("arch-hidden-1e12", bench("--arch", arch_with(hidden=10**12)), "hidden"),
    Refusal(
        "space-hidden-1e12",
        ["space", "show", "{tmp}/s.toml"],
        "hidden.max",
        {"s.toml": SPACE.replace("hidden = [64, 128]", "hidden = {min = 1, max = 1e12}")},
    ),
    Refusal(
        "space-ffn-range-1e9",
        ["space", "sample", "{tmp}/s.toml"],
        "ffn",
        {"s.toml": SPACE.replace("ffn = 128", "ffn = {min = 1, max = 1000000000}")},
    ),
    Refusal(
        "space-layers-1e9",
        ["space", "show", "{tmp}/s.toml"],
        "layers",
        {"s.toml": SPACE.replace("layers = 2", "layers = {min = 1, max = 1000000000}")},
    ),
    Refusal(
        "import-row-layers-1e9",
        [
            "import",
            "{tmp}/t.tsv",
            "--hw",
            "seed-cpu-fp32",
            "--space",
            "bigger-faster",
            "--db",
            "{tmp}/lat.db",
        ],
        "{tmp}/t.tsv",
        {
            "t.tsv": "{'sample_layer_num': 1000000000, 'sample_num_attention_heads': [12], "
            "'sample_hidden_size': 120, 'sample_intermediate_sizes': [128], "
            "'sample_qkv_sizes': [120]}\t5.6\n"
        },
    ),
    # 14: the right flag blamed, long values cut
    Refusal(
        "ffn-200000-entries",
        bench("--arch", arch_with(layers=2, ffn="[" + "1, " * 200_000 + "1]")),
        "ffn",
    ),
    Refusal(
        "heads-list-echo-cut",
        bench("--arch", arch_with(heads="[" + "3, " * 50_000 + "3]")),
        "heads",
    ),
    Refusal("negative-samples", ["space", "sample", "minilm-l6", "-n", "-3"], "-n"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(case, tmp_path, capsys, monkeypatch):
    t = time.perf_counter()
    line = check_refusal(case, tmp_path, capsys, monkeypatch)
    assert len(line) < 500  # an echoed value is cut, never the whole input
    assert time.perf_counter() - t < 10  # cheap checks come before anything is built
