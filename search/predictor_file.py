"""A predictor folder: `model.txt` (LightGBM's text model) and `predictor.json` (what it is).

One pydantic schema per kind of predictor says what its predictor.json holds, and the same
classes are what the code builds in Python (`PredictorScope`, `PredictorSettings`): nothing
is mirrored. Every kind shares `PredictorMeta` (the format, the kind, the features, the
settings of the `Estimator`, rounds, metrics, versions, model.txt's hash) and this module's
reading and writing; `LatencyMeta` adds what the latency predictor needs, `AccuracyMeta`
what the accuracy predictor does. A second kind adds
its own subclass with its own `kind` and uses `write_folder`, `read_meta` and `read_booster`
as they are.

Reading checks every field before anything is trusted: a damaged folder is one line naming
the file and the field. Nothing is pickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import lightgbm as lgb
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from bfnas.errors import InputError, read_text_input, short
from bfnas.models.outputs import write_atomic
from bfnas.search.estimator import (
    EstimatorSettings,
    Fraction,
    Positive,
    Settings,
    load_booster,
    python_init,
    write_booster,
)

FORMAT = 3
META_FILE = "predictor.json"
MODEL_FILE = "model.txt"
# Folders written before predictor.json named its kind hold a latency predictor, the only
# kind there was: they read as one.
DEFAULT_KIND = "latency"

_Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Part(BaseModel):
    # strict: "0.5" is not a number and true is not a count; extra: a typo is not ignored.
    model_config = ConfigDict(strict=True, extra="forbid")


class Metrics(BaseModel):
    # The fit's figures, shown to the user and never computed on: only the unit matters.
    model_config = ConfigDict(strict=True, extra="allow")
    label: str | None = None

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> dict:
        # Written as the fit gave them: no "label": null where it gave no label.
        data = handler(self)
        if "label" not in self.model_fields_set:
            data.pop("label", None)
        return data


class PredictorMeta(BaseModel):
    """What every predictor.json holds, whatever the kind of predictor."""

    model_config = ConfigDict(strict=True, extra="ignore")
    format: int
    kind: str
    features: list[str]
    settings: EstimatorSettings
    metrics: Metrics = Field(default_factory=Metrics)
    rounds: int | None = Field(ge=1)
    # Written since model.txt is checked by hash; a folder from before has none.
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # The versions that wrote the folder: for a reader, never checked.
    versions: dict[str, str] = Field(default_factory=dict)


# -- the latency predictor's --------------------------------------------------------------
class PredictorScope(Settings):
    """What a latency model is valid for: one device profile, one space, one workload."""

    profile_hash: str = Field(min_length=1)
    space: str = Field(min_length=1)
    seq_len: int = Field(ge=1)
    batch: int = Field(default=1, ge=1)

    @python_init
    def __init__(self, profile_hash: str, space: str, seq_len: int, batch: int = 1) -> None:
        # Positional, as a scope has always been written: PredictorScope(hash, space, 128).
        super().__init__(profile_hash=profile_hash, space=space, seq_len=seq_len, batch=batch)


class PredictorSettings(EstimatorSettings):
    # What LightGBM learns: latency, its log, or (default) its ratio to an analytic estimate.
    target: Literal["ms", "log", "ratio"] = "ratio"
    # Monotone constraints hold for latency itself ("ms", "log"), not for its ratio to the
    # estimate; with "ratio" they are ignored. On the seed table at n = 300 the ratio target
    # without them beat every other combination (issue 4's benchmark decides the default).
    monotone: bool = False


class PriorRef(_Part):
    profile_hash: str = Field(min_length=1)


class PriorChoice(_Part):
    profile_hash: str = Field(min_length=1)
    used: bool
    oof_mape_with_prior: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    oof_mape_from_scratch: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class LatencyMeta(PredictorMeta):
    """predictor.json as `LatencyPredictor.save` writes it (format 3)."""

    kind: Literal["latency"] = "latency"
    scope: PredictorScope
    settings: PredictorSettings
    estimate_columns: list[str]
    estimate_coef: list[_Finite] | None
    # Quantiles of measured / predicted, out of fold: the factors of the band.
    spread: Annotated[list[Positive], Field(min_length=2, max_length=2)] | None
    prior: PriorRef | None = None
    prior_choice: PriorChoice | None = None
    # Written since predictors record their store's anchor times; a folder from before has none.
    anchor_ms: dict[str, Positive] = Field(default_factory=dict)


# -- the accuracy predictor's -------------------------------------------------------------
class AccuracyScope(Settings):
    """What an accuracy model is valid for: the accuracies it learned are of one task (the
    sha256 of its files' bytes), under one fine-tune protocol (its hash; the name is for
    people), from one supernet's weights (and teacher), for subnets of one space. `seq_len`
    is the workload its MACs features are counted at."""

    task_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    protocol_hash: str = Field(min_length=1)
    protocol: str = Field(min_length=1)
    space: str = Field(min_length=1)
    weights_sha256: str = Field(min_length=1)
    teacher_sha256: str = ""
    seq_len: int = Field(default=128, ge=1)


class AccuracySettings(EstimatorSettings):
    """The estimator's settings for 15-60 rows (benchmarks/accuracy_predictor.py measured
    them): small trees on top of a line, leaves of a few rows, rounds picked by CV."""

    # At most: CV picks the rounds from 8 rows (100 trees fitted to seed noise ranked
    # accuracies that follow params at tau 0.89-0.92, where params rank them at 1.0).
    n_estimators: int = Field(default=100, ge=1)
    num_leaves: int = Field(default=3, ge=2)
    min_child_samples: int = Field(default=3, ge=1)
    # The subnet's columns: its sizes, or every column of the latency features
    # (`accuracy_predictor.FEATURE_SETS`).
    features: Literal["sizes", "all"] = "sizes"
    # What the trees learn: accuracy itself, or (default) what a least-squares line in
    # log(params) and the extra columns leaves over. Trees alone on 15 rows give a few
    # steps, so many subnets tie; the line ranks every one, the trees bend it.
    target: Literal["residual", "accuracy"] = "residual"
    # Weigh each subnet by its number of seeds: a mean of k seeds has 1/k of one's variance.
    weight_by_seeds: bool = True
    # Trees on the target: "auto" keeps them where they rank better out of fold than the
    # target alone (`AccuracyPredictor._fit_choosing_trees` says why), or "always", "never".
    trees: Literal["auto", "always", "never"] = "auto"
    # How much higher the trees' out-of-fold Kendall tau must be than the line's ("auto").
    trees_margin: Fraction = 0.02


class AccuracyMeta(PredictorMeta):
    """predictor.json as `AccuracyPredictor.save` writes it."""

    kind: Literal["accuracy"] = "accuracy"
    scope: AccuracyScope
    settings: AccuracySettings
    # The caller's own columns (a one-shot score, ...), after the subnet's features.
    extra: list[Annotated[str, Field(min_length=1)]]
    # The line under the "residual" target: its columns and coefficients (intercept first).
    baseline_columns: list[str]
    baseline_coef: list[_Finite] | None
    # Quantiles of measured - predicted accuracy, out of fold: added to a prediction.
    spread: Annotated[list[_Finite], Field(min_length=2, max_length=2)] | None


# -- writing and reading ------------------------------------------------------------------
Meta = TypeVar("Meta", bound=PredictorMeta)


def write_folder(folder: str | Path, booster: lgb.Booster, meta: PredictorMeta) -> Path:
    """model.txt, then predictor.json holding its sha256 and the versions writing it (the
    meta's own are replaced): a folder whose predictor.json is complete has its model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # What `read_booster` checks model.txt against: LightGBM's parser trusts its file, and a
    # damaged one can abort the process rather than raise.
    sha256 = write_booster(booster, folder / MODEL_FILE)
    versions = {p: metadata.version(p) for p in ("bfnas", "lightgbm", "numpy")}
    meta = meta.model_copy(update={"model_sha256": sha256, "versions": versions})
    # Python's own dump, not pydantic's JSON: the metrics' extra figures are written as they
    # always were (a NaN tau stays NaN rather than null).
    write_atomic(folder / META_FILE, json.dumps(meta.model_dump(), indent=2, sort_keys=True))
    return folder


def predictor_folder(folder: str | Path, written_by: str) -> Path:
    """The folder, refused in one line where there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            str(folder),
            None,
            f"no such predictor folder (one holding {META_FILE} and {MODEL_FILE}, "
            f"written by {written_by})",
        )
    return folder


def read_meta(
    path: Path, schema: type[Meta], features: Sequence[str] | Callable[[Meta], Sequence[str]]
) -> Meta:
    """predictor.json, validated against `schema` (its kind's) and the `features` this bfnas
    computes: the file and field of the first fault, as one line. `features` may be a function
    of the validated meta, for a kind whose columns depend on what it was fitted with (the
    accuracy predictor's extra columns)."""
    where = str(path)
    text = read_text_input(path, where)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            where, None, f"not a bfnas predictor: not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None
    except RecursionError:  # the parser recurses per level: a hostile file nests deeply
        raise InputError(where, None, "not a bfnas predictor: JSON nested too deeply") from None
    if not isinstance(raw, dict):
        raise InputError(
            where, None, f"not a bfnas predictor: expected a JSON object, got {type(raw).__name__}"
        )
    # The format and the kind first: another's fields would be blamed one by one otherwise.
    if raw.get("format") != FORMAT:
        raise InputError(where, "format", f"{short(raw.get('format'))}, this bfnas reads {FORMAT}")
    kind, want = raw.get("kind", DEFAULT_KIND), schema.model_fields["kind"].default
    if kind != want:
        raise InputError(where, "kind", f"a predictor of kind {short(kind)}, not {want!r}")
    try:
        meta = schema.model_validate_json(text)
    except ValidationError as exc:
        raise schema_error(where, exc) from None
    # A file says what its model was fitted with: a setting it lacks is refused, not taken
    # from this bfnas's defaults (which can change from one version to the next).
    for name in type(meta).model_fields:
        part = getattr(meta, name)
        if isinstance(part, Settings):
            for key in type(part).model_fields:
                if key not in part.model_fields_set:
                    raise InputError(where, f"{name}.{key}", "missing")
    if callable(features):
        features = features(meta)
    if meta.features != list(features):
        raise InputError(where, "features", "fitted on other features than this bfnas computes")
    lo, hi = meta.settings.spread_quantiles
    if lo >= hi:
        raise InputError(where, "settings.spread_quantiles", f"low {lo} is not below high {hi}")
    return meta


def read_booster(path: Path, meta: PredictorMeta, meta_path: Path) -> lgb.Booster:
    """model.txt as a LightGBM booster that agrees with predictor.json."""
    where = str(path)
    booster = load_booster(path, meta.model_sha256, f"{meta_path.name}'s model_sha256")
    if booster.num_feature() != len(meta.features) or booster.feature_name() != meta.features:
        raise InputError(
            where,
            "feature_names",
            f"{booster.num_feature()} features, not the {len(meta.features)} of {meta_path.name}",
        )
    if meta.rounds is not None and booster.current_iteration() != meta.rounds:
        raise InputError(
            where,
            "tree_sizes",
            f"{booster.current_iteration()} trees, but "
            f"{meta_path.name} says rounds = {meta.rounds}",
        )
    return booster


def schema_error(where: str, exc: ValidationError) -> InputError:
    """A file's first schema fault as one line: the file, the field's path, the reason."""
    err = exc.errors()[0]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    msg = {"extra_forbidden": "unknown field", "missing": "missing"}.get(err["type"], err["msg"])
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict):
        msg = f"{msg} (got {short(err.get('input'))})"
    return InputError(where, field or None, msg)
