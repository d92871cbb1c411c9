"""A refused setting is named by the library's own name for it (the dataclass field or the
function parameter, `seq_len`), never by a CLI flag: from Python (a notebook) the line reads
`seq_len: must be ...`. The CLI prints the flag of the running command whose dest is that
setting (`--seq-len`), or, where the two differ, the flag its alias table names.
"""

import ast
import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from bfnas.bench.hardware_profile import load_profile
from bfnas.bench.jobs.profiling import plan_subnets
from bfnas.cli import build_parser, main, setting_flag
from bfnas.errors import InputError
from bfnas.models.deploy.artifacts import ArtifactCache
from bfnas.models.deploy.recipes import get_recipe
from bfnas.models.space.search_space import load_space
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.distill import TrainSettings
from bfnas.models.train.finetune import FinetuneSettings
from bfnas.models.train.parallel import Distributed, init_distributed, pick_device
from bfnas.models.train.pretraining_data import DataSettings
from bfnas.search.evolution import Budget, EvolutionSettings
from bfnas.search.loop import SearchJob
from bfnas.search.objectives import load_objective
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.training import check_folds, holdout_split

REPO = Path(__file__).resolve().parents[1]
ARCH = '{"layers": 1, "hidden": 64, "heads": 1, "qkv": 32, "ffn": 64}'


def _search_job(**change) -> SearchJob:
    """A search job that fails its own checks before it touches the store or the device."""
    nothing = None  # the store, profile and space are never reached
    return SearchJob(
        store=nothing,
        profile=nothing,
        space=nothing,
        objective=lambda cfg: 0.0,
        budget=Budget(5.0),
        **change,
    )


# (what is refused, the call, the setting it names, where the library declares that name)
PYTHON_CASES: list[tuple[str, Callable[..., object], str, object]] = [
    ("seq-len", lambda sn: DataSettings(seq_len=4), "seq_len", DataSettings),
    ("shard-size", lambda sn: DataSettings(shard_size=0), "shard_size", DataSettings),
    ("mask-prob", lambda sn: DataSettings(mask_prob=1.0), "mask_prob", DataSettings),
    ("epochs", lambda sn: FinetuneSettings(epochs=0), "epochs", FinetuneSettings),
    ("finetune-batch", lambda sn: FinetuneSettings(batch=0), "batch", FinetuneSettings),
    ("max-len", lambda sn: FinetuneSettings(max_len=2), "max_len", FinetuneSettings),
    ("lr", lambda sn: FinetuneSettings(lr=0.0), "lr", FinetuneSettings),
    ("loss", lambda sn: TrainSettings(loss="nope"), "loss", TrainSettings),
    ("steps", lambda sn: TrainSettings(steps=0), "steps", TrainSettings),
    ("train-batch", lambda sn: TrainSettings(batch=0), "batch", TrainSettings),
    ("every", lambda sn: TrainSettings(checkpoint_every=0), "checkpoint_every", TrainSettings),
    ("uneven-batch", lambda sn: Distributed(world=3).shard(8), "batch", TrainSettings),
    ("device", lambda sn: pick_device("tpu"), "device", init_distributed),
    ("recipe", lambda sn: get_recipe("int4"), "recipe", ArtifactCache.build),
    (
        "precision",
        lambda sn: ArtifactCache(Path("unused")).build(sn, SubnetConfig.from_json(ARCH), "int3"),
        "precision",
        ArtifactCache.build,
    ),
    ("space", lambda sn: load_space("no-such-space"), "space", None),
    ("space-fit", lambda sn: sn.check_space(load_space("minilm-l6")), "space", None),
    (
        "arch-fit",
        lambda sn: sn.check_fits(SubnetConfig.uniform(1, 4096, 1, 64, 64)),
        "arch",
        None,
    ),
    ("hw", lambda sn: load_profile("no-such-profile"), "hw", None),
    (
        "strategy",
        lambda sn: plan_subnets(load_space("minilm-l6"), 1, "zigzag", 0),
        "strategy",
        plan_subnets,
    ),
    ("mode", lambda sn: EvolutionSettings(mode="worst"), "mode", EvolutionSettings),
    ("population", lambda sn: EvolutionSettings(population=0), "population", EvolutionSettings),
    (
        "parents",
        lambda sn: EvolutionSettings(population=4, parents=5),
        "parents",
        EvolutionSettings,
    ),
    ("generations", lambda sn: EvolutionSettings(generations=0), "generations", EvolutionSettings),
    ("max-ms", lambda sn: Budget(0.0), "max_ms", Budget),
    ("min-ms", lambda sn: Budget(5.0, min_ms=9.0), "min_ms", Budget),
    ("train-size", lambda sn: holdout_split(100, 5, 3, 0), "train_size", holdout_split),
    ("test-size", lambda sn: holdout_split(100, 20, 0, 0), "test_size", holdout_split),
    ("too-many-rows", lambda sn: holdout_split(30, 20, 20, 0), "train_size", holdout_split),
    ("folds", lambda sn: check_folds(100, 1), "folds", check_folds),
    ("few-rows", lambda sn: check_folds(15, 2), "folds", check_folds),
    ("target", lambda sn: PredictorSettings(target="cubic"), "target", PredictorSettings),
    ("objective", lambda sn: load_objective("no-such-objective"), "objective", SearchJob),
    ("rounds", lambda sn: _search_job(rounds=0).run(), "rounds", SearchJob),
    ("verify", lambda sn: _search_job(verify=-1).run(), "verify", SearchJob),
]


def _declared_names(owner: object) -> set[str]:
    """The names a dataclass or a function gives its settings."""
    if dataclasses.is_dataclass(owner):
        return {f.name for f in dataclasses.fields(owner)}
    return set(inspect.signature(owner).parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call, setting, owner", [c[1:] for c in PYTHON_CASES], ids=[c[0] for c in PYTHON_CASES]
)
def test_from_python_an_error_names_the_setting_not_a_flag(tiny_supernet, call, setting, owner):
    with pytest.raises(InputError) as err:
        call(tiny_supernet)
    exc = err.value
    assert exc.setting == setting and exc.where is None
    assert str(exc).startswith(f"{setting}: ") and "--" not in str(exc)
    assert str(exc) == exc.line()
    if owner is not None:  # the name is the library's own, not one made up for the message
        assert setting in _declared_names(owner)


def test_a_setting_refused_in_a_file_keeps_the_file_first():
    exc = InputError("/tmp/lat.db", None, "no profile 'x' in the store", setting="hw")
    assert exc.line() == "/tmp/lat.db: hw: no profile 'x' in the store"
    assert exc.line("--hw") == "/tmp/lat.db: --hw: no profile 'x' in the store"
    inside = InputError.bad_setting("arch", "250 not in space", field="hidden")
    assert inside.line() == "arch: hidden: 250 not in space"
    assert inside.line("--arch") == "--arch: hidden: 250 not in space"
    plain = InputError("/tmp/s.toml", "layers.max", "must be at least 1")
    assert plain.setting is None and plain.line("--ignored") == plain.line()


DATA = ["data", "build", "--corpus", "c.txt", "--tokenizer", "t", "--out", "o"]
TASK_DATA = ["data", "task", "--out", "o"]
PREDICT = ["task", "predict", "--model", "m", "--text", "a b"]
TASK = ["task", "eval", "--supernet", "s", "--task-dir", "d", "--arch", ARCH, "--space", "x"]
TRAIN = ["supernet", "train", "--teacher", "t", "--data", "d", "--space", "x", "--out", "o"]
EXPORT = ["export", "--space", "x", "--arch", ARCH, "--out", "o"]
PROFILE = ["profile", "--space", "x", "--samples", "3", "--db", "d"]
UNTIL = ["profile", "--space", "x", "--until", "0.9", "--db", "d"]
SEARCH = ["search", "--space", "x", "--db", "d", "--out", "o", "--max-latency-ms", "5"]
FIT = ["predictor", "fit", "--hw", "h", "--db", "d", "--out", "o"]
FINETUNE = ["supernet", "finetune", "--supernet", "s", "--task-dir", "d", "--out", "o"]
ACCURACY = ["accuracy", "measure", "--supernet", "s", "--task-dir", "d", "--hand-scaled"]
COLLECT = [
    "accuracy",
    "collect",
    "--supernet",
    "s",
    "--task-dir",
    "d",
    "--until",
    "0.5",
    "--out",
    "o",
]

# (a command line that parses, the setting, the flag the CLI names it by)
CLI_CASES = [
    (ACCURACY, "protocol", "--protocol"),
    (COLLECT, "target_tau", "--until"),
    (COLLECT, "max_finetunes", "--max-finetunes"),
    (COLLECT, "max_minutes", "--max-minutes"),
    (COLLECT, "confidence", "--confidence"),
    (COLLECT, "first", "--first"),
    (COLLECT, "round_size", "--round-size"),
    (DATA, "seq_len", "--seq-len"),
    (DATA, "shard_size", "--shard-size"),
    (DATA, "mask_prob", "--mask-prob"),
    (PREDICT, "text", "--text"),
    (TASK_DATA, "classes", "--classes"),
    (TASK_DATA, "max_per_class", "--max-per-class"),
    (TASK_DATA, "dev_fraction", "--dev-fraction"),
    (TASK_DATA, "min_words", "--min-words"),
    (TASK_DATA, "near_duplicate", "--near-duplicate"),
    (TASK, "epochs", "--epochs"),
    (TASK, "batch", "--batch"),
    (TASK, "max_len", "--max-len"),
    (TASK, "lr", "--lr"),
    (TASK, "arch", "--arch"),
    (TASK, "checkpoint", "--supernet"),
    (TRAIN, "loss", "--loss"),
    (TRAIN, "steps", "--steps"),
    (TRAIN, "batch", "--batch"),
    (TRAIN, "checkpoint_every", "--checkpoint-every"),
    (TRAIN, "device", "--device"),
    (TRAIN, "space", "--space"),
    (EXPORT, "recipe", "--recipe"),
    (EXPORT, "precision", "--precision"),
    (EXPORT, "checkpoint", "--checkpoint"),
    (EXPORT, "space", "--space"),
    (PROFILE, "strategy", "--strategy"),
    (PROFILE, "hw", "--hw"),
    *[
        (UNTIL, setting, flag)
        for setting, flag in (
            ("tolerance", "--tolerance"),
            ("confidence", "--confidence"),
            ("first", "--first"),
            ("round_size", "--round-size"),
            ("max_subnets", "--max-subnets"),
            ("max_device_s", "--max-device-minutes"),
            ("choose", "--choose"),
            ("audit", "--audit"),
            ("pool", "--pool"),
        )
    ],
    (SEARCH, "max_ms", "--max-latency-ms"),
    (SEARCH, "min_ms", "--min-latency-ms"),
    (SEARCH, "mode", "--mode"),
    (SEARCH, "population", "--population"),
    (SEARCH, "parents", "--parents"),
    (SEARCH, "generations", "--generations"),
    (SEARCH, "rounds", "--rounds"),
    (SEARCH, "verify", "--verify"),
    (SEARCH, "objective", "--objective"),
    (SEARCH, "task_supernet", "--task-supernet"),
    (SEARCH, "task_dir", "--task-dir"),
    (SEARCH, "accuracy_model", "--accuracy-model"),
    (SEARCH, "oneshot", "--data"),  # the oneshot objective's scorer is made from --data
    # an output folder holding another build or training run
    (DATA, "out", "--out"),
    (TRAIN, "out", "--out"),
    (FINETUNE, "out", "--out"),
    # task-finetune's fine-tune settings, by their flags in the search command
    (SEARCH, "epochs", "--finetune-epochs"),
    (SEARCH, "batch", "--finetune-batch"),
    (SEARCH, "lr", "--finetune-lr"),
    (SEARCH, "max_len", "--finetune-max-len"),
    (SEARCH, "workers", "--finetune-workers"),
    (SEARCH, "train_examples", "--finetune-examples"),
    (FINETUNE, "kd", "--kd"),
    (FINETUNE, "kd_weight", "--kd-weight"),
    (FINETUNE, "temperature", "--temperature"),
    (FINETUNE, "random_subnets", "--random-subnets"),
    (FINETUNE, "warmup_steps", "--warmup-steps"),
    (FINETUNE, "batch", "--batch"),
    (FINETUNE, "space", "--space"),
    (FIT, "train_size", "--train-size"),
    (FIT, "test_size", "--test-size"),
    (FIT, "folds", "--folds"),
    (FIT, "target", "--target"),
    (FIT, "space", "--space"),
    (["hw", "show", "local-cpu-int8"], "hw", "profile"),  # a positional, by its name
    (["space", "show", "minilm-l6"], "space", "space"),
    (SEARCH, "seq_len", "seq_len"),  # set by no flag of `search` (the profile file sets it)
]


@pytest.mark.parametrize("argv, setting, flag", CLI_CASES)
def test_the_cli_names_a_setting_by_the_flag_that_set_it(argv, setting, flag):
    parser = build_parser()
    args = parser.parse_args(argv)
    assert setting_flag(parser, args, setting) == flag


def _library_settings() -> set[str]:
    """Every setting name a library error can carry, read from the source: the first argument
    of `InputError.bad_setting`, a `setting=` keyword, a `setting` parameter's default, and the
    names a loop hands to `bad_setting(name, ...)`."""
    names: set[str] = set()
    for folder in ("models", "bench", "search"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names |= _settings_in(node)
    return names


def _constant(node: ast.AST | None) -> set[str]:
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


def _settings_in(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Call):
        found = {s for k in node.keywords if k.arg == "setting" for s in _constant(k.value)}
        if isinstance(node.func, ast.Attribute) and node.func.attr == "bad_setting" and node.args:
            found |= _constant(node.args[0])
        return found
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        params = [p.arg for p in (*node.args.posonlyargs, *node.args.args)]
        # the defaults belong to the last parameters: fewer defaults than parameters
        defaults = dict(zip(params[::-1], node.args.defaults[::-1], strict=False))
        return _constant(defaults.get("setting"))
    if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
        if any(
            isinstance(c.func, ast.Attribute)
            and c.func.attr == "bad_setting"
            and c.args
            and isinstance(c.args[0], ast.Name)
            for c in calls
        ):
            return {s for e in node.iter.elts for s in _constant(e)}
    return set()


# Settings of library APIs that no command sets yet, each with the test that checks its
# refusal from Python. A command that comes adds its flag cases above and removes its names
# here (a name flagged above and still here fails the test below).
NO_COMMAND_YET: dict[str, str] = {}


def test_every_setting_the_library_refuses_has_a_flag_case():
    """A new setting error needs a CLI case above, so that its flag is checked."""
    flagged = {setting for _, setting, flag in CLI_CASES if flag.startswith("--")}
    missing = _library_settings() - flagged - set(NO_COMMAND_YET)
    assert not missing, f"settings with no checked flag: {sorted(missing)}"
    stale = set(NO_COMMAND_YET) & (flagged | (set(NO_COMMAND_YET) - _library_settings()))
    assert not stale, f"NO_COMMAND_YET names settings flagged above or refused nowhere: {stale}"
    assert all((REPO / test).is_file() for test in NO_COMMAND_YET.values())
    assert {"seq_len", "max_ms", "objective", "arch", "hw"} <= _library_settings()


@pytest.mark.parametrize(
    "argv, line",
    [
        ([*DATA, "--seq-len", "4"], "--seq-len: must be in [8, 512], got 4"),
        ([*DATA, "--mask-prob", "1.5"], "--mask-prob: must be in (0, 1), got 1.5"),
        ([*TASK, "--lr", "0"], "--lr: must be positive, got 0.0"),
        ([*TASK, "--epochs", "0"], "--epochs: must be at least 1, got 0"),
        ([*TRAIN, "--checkpoint-every", "0"], "--checkpoint-every: must be at least 1, got 0"),
        ([*SEARCH, "--max-latency-ms", "0"], "--max-latency-ms: must be positive, got 0.0"),
        (
            [*SEARCH, "--min-latency-ms", "9"],
            "--min-latency-ms: must be in [0, 5.0), got 9.0",
        ),
        (
            [*SEARCH, "--population", "0"],
            "--population: must be at least 1, got 0",
        ),
        (["space", "show", "no-such-space"], "space: no space named 'no-such-space'"),
    ],
)
def test_a_bad_setting_on_the_command_line_is_one_line_naming_its_flag(
    capsys, tmp_path, monkeypatch, argv, line
):
    monkeypatch.chdir(tmp_path)  # the dummy paths above name nothing that exists
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"bfnas: error: {line}") and captured.err.count("\n") == 1
    assert captured.out == ""
