"""From a subnet to a model folder a user ships: fine-tune it on the task from the supernet's
weights, write the package (`models.deploy.classifier_package`), score its files on the dev
split and measure them on the hardware profile (`bench`), then write the card.

`bfnas task train` is this function; the demo and a notebook call it too. Everything that can
refuse the input (the task folder, the arch, the supernet and its task head, the tokenizer,
the profile and the device it names, the output folder) is checked before training starts,
and nothing is written until then. The output folder gets its files only once they are all
made, measured and described (`build_in_stage`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import FinetuneSettings

if TYPE_CHECKING:
    from bfnas.bench.device.contract import MeasurementResult
    from bfnas.bench.hardware_profile import HardwareProfile

# What a measurement record of a package file keeps (the samples stay out of the card).
MEASUREMENT_KEYS = (
    "status",
    "reason",
    "median_ms",
    "mean_ms",
    "p90_ms",
    "p99_ms",
    "min_ms",
    "runs",
    "median_rel_ci",
    "cov",
    "ratio",
    "ratio_rel_ci",
    "anchor_key",
    "attempts",
    "stop_reason",
    "timed_seconds",
)


def train_task_model(
    supernet: str | Path,
    cfg: SubnetConfig,
    task_dir: str | Path,
    profile: HardwareProfile | str | Path,
    out: str | Path,
    *,
    settings: FinetuneSettings | None = None,
    space: str = "minilm-l6",
    tokenizer: str | Path | None = None,
    artifacts: str | Path | None = None,
    make_runner: Callable | None = None,
    on_step: Callable[[dict], None] = lambda row: None,
    on_stage: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Fine-tune `cfg` on the task in `task_dir` from `supernet` (a checkpoint folder, a task
    supernet whose head it inherits, or 'minilm'), write the model folder `out` and return its
    card (what `out/model.json` holds).

    `profile` is a hardware profile (a name, a .toml path or a loaded one): its recipe makes
    model.int8.onnx and its harness measures both ONNX files. `settings` are the fine-tune's
    (`FinetuneSettings`, int8-aware training among them). `space` is the search space `cfg`
    must belong to; `tokenizer` defaults to the supernet folder's; `artifacts` is the
    artifact cache the profile's anchor models go to (default: bfnas's cache); `make_runner`
    makes the runner from the profile (default: its target kind's). `on_step` sees every
    training step, `on_stage` each stage as it begins."""
    from bfnas.bench.hardware_profile import HardwareProfile, load_profile
    from bfnas.bench.runners.base import runner_for
    from bfnas.bench.runners.usable import require_usable
    from bfnas.models.deploy.classifier_package import check_package_dir
    from bfnas.models.nn.checkpoint import (
        TASK_FILE,
        load_supernet,
        read_pooler,
        read_task_head,
        read_task_manifest,
        resolve_checkpoint,
    )
    from bfnas.models.space.search_space import load_space
    from bfnas.models.train.finetune import finetune_classifier, prepare_task
    from bfnas.models.train.glue_task import read_task
    from bfnas.models.train.task_supernet import check_task_labels

    settings = settings or FinetuneSettings()
    # The cheap checks first: nothing loads or trains for input that is refused anyway.
    out = check_package_dir(out, "out")
    load_space(space).check(cfg)
    task = read_task(task_dir)
    if not isinstance(profile, HardwareProfile):
        profile = load_profile(profile)
    profile_recipe(profile)  # an unknown recipe is refused before anything trains
    folder = resolve_checkpoint(supernet)
    if not folder.is_dir():
        raise InputError.bad_setting("checkpoint", f"{supernet}: not a directory")
    tokenizer_path = resolve_checkpoint(tokenizer) if tokenizer else folder
    if not tokenizer and not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
        raise InputError.bad_setting(
            "checkpoint", f"{folder} holds no tokenizer.json or vocab.txt: give a tokenizer"
        )
    head = read_task_head(folder)  # None unless a task supernet: then its labels must fit
    manifest = read_task_manifest(folder) if head is not None else None
    if manifest is not None:
        check_task_labels(manifest, folder / TASK_FILE, task)
    runner = (make_runner or runner_for)(profile)
    try:
        require_usable(profile, runner)  # a device that cannot measure is refused up front
        net = load_supernet(folder)
        pooler = head.pooler if head is not None else read_pooler(folder)
        classifier = head.classifier if head is not None else None
        data = prepare_task(net, cfg, task, tokenizer_path, settings)

        on_stage("fine-tuning")
        model, result = finetune_classifier(net, cfg, data, settings, pooler, on_step, classifier)
        return package_classifier(
            out,
            model,
            result,
            data,
            settings,
            profile,
            runner,
            manifest=manifest,
            artifacts=artifacts,
            on_stage=on_stage,
        )
    finally:
        runner.close()


def profile_recipe(profile: HardwareProfile) -> Any:
    """The INT8 recipe `profile` quantizes with (refused in one line when unknown)."""
    from bfnas.models.deploy.recipes import get_recipe

    q = profile.quantization
    return get_recipe(q.recipe, q.fuse, q.calibration_samples)


def package_classifier(
    out: Path,
    model: Any,
    result: dict[str, Any],
    data: Any,
    settings: FinetuneSettings,
    profile: HardwareProfile,
    runner: Any,
    *,
    manifest: dict[str, Any] | None = None,
    artifacts: str | Path | None = None,
    on_stage: Callable[[str], None] = lambda message: None,
    card_extra: dict[str, Any] | None = None,
    on_measurement: Callable[[str, MeasurementResult], None] = lambda file, result: None,
) -> dict[str, Any]:
    """A fine-tuned classifier (`finetune_classifier`'s model and result, on `data`) written
    as the model folder `out` (checked by `check_package_dir`), scored and measured on
    `profile` through `runner`: its card, which `card_extra` adds keys to (a lottery
    ticket's record). `on_measurement` gets each file's whole measurement ("int8" or
    "fp32", with its samples: what a latency store keeps). The folder appears only once
    every file is made."""
    from bfnas.models.deploy.classifier_package import build_in_stage

    recipe = profile_recipe(profile)

    def make(stage: Path) -> dict[str, Any]:
        return _package(
            stage,
            out,
            model,
            result,
            data,
            manifest,
            recipe,
            profile,
            runner,
            artifacts,
            settings,
            on_stage,
            card_extra or {},
            on_measurement,
        )

    return build_in_stage(out, make)


def _package(
    stage: Path,
    out: Path,
    model: Any,
    result: dict[str, Any],
    data: Any,
    manifest: dict[str, Any] | None,
    recipe: Any,
    profile: Any,
    runner: Any,
    artifacts: str | Path | None,
    settings: FinetuneSettings,
    on_stage: Callable[[str], None],
    card_extra: dict[str, Any],
    on_measurement: Callable[[str, MeasurementResult], None],
) -> dict[str, Any]:
    """Write, score and measure the package's files in `stage`; the card is the last file."""
    import torch

    from bfnas.models.deploy.classifier_package import (
        CARD_FORMAT,
        PackageSpec,
        accuracy,
        calibration_feeds,
        head_params,
        hf_loadable,
        onnx_logits,
        write_card,
        write_model_files,
    )
    from bfnas.models.deploy.text_classifier import FP32_FILE, INT8_FILE
    from bfnas.models.digest import file_sha256
    from bfnas.models.train.task_classifier import predict_logits
    from bfnas.version import bfnas_version

    task, cfg, vocab = data.task, model.bert.cfg, model.bert.vocab
    on_stage(f"writing the model files (INT8 recipe {recipe.name})")
    spec = PackageSpec(
        model=model,
        labels=task.label_names,
        text_columns=task.text_columns,
        max_len=settings.max_len,
        tokenizer=data.tokenizer,
        recipe=recipe,
        dropout=settings.dropout,
        calibration=calibration_feeds(data.train, recipe.calibration_samples),
    )
    made = write_model_files(stage, spec)

    on_stage("scoring the ONNX files on the dev split")
    gold = data.dev.labels
    torch_logits = predict_logits(model, data.dev, settings.batch, data.pad)
    fp32 = onnx_logits(stage / FP32_FILE, data.dev, data.pad)
    int8 = onnx_logits(stage / INT8_FILE, data.dev, data.pad)
    fp32_acc, int8_acc = accuracy(fp32, gold), accuracy(int8, gold)
    counts = torch.bincount(gold, minlength=len(task.label_names))

    on_stage(f"measuring {INT8_FILE} and {FP32_FILE} on {profile.name}")
    latency = _measure(stage, cfg, profile, runner, artifacts, recipe, on_measurement)

    params_encoder = cfg.params(embeddings=False)
    params_total = cfg.params(
        embeddings=True,
        vocab_size=vocab.vocab_size,
        max_positions=vocab.max_positions,
        type_vocab=vocab.type_vocab,
    )
    loadable, note = hf_loadable(cfg)
    card = {
        "format": CARD_FORMAT,
        "name": out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bfnas_version": bfnas_version(),
        "arch": cfg.to_dict(),
        "arch_key": cfg.key(),
        "params": {
            "total": params_total + head_params(cfg.hidden, len(task.label_names)),
            "encoder": params_encoder,
            "embeddings": params_total - params_encoder,
            "head": head_params(cfg.hidden, len(task.label_names)),
        },
        "labels": list(task.label_names),
        "max_len": settings.max_len,
        "task": {
            # As given: an absolute path says nothing on another machine (the files' sha256
            # below are what identify the task).
            "folder": str(task.folder),
            "train_file": task.train.path.name,
            "dev_file": task.dev.path.name,
            "train_sha256": file_sha256(task.train.path),
            "dev_sha256": file_sha256(task.dev.path),
            "train_examples": len(data.train.ids),
            "dev_examples": len(data.dev.ids),
            "text_columns": list(task.text_columns),
            "label_column": task.label_column,
            "truncated_examples": result["truncated_examples"],
        },
        "training": {
            "supernet": result["supernet"],
            "task_supernet": _head_record(manifest, task) if manifest is not None else None,
            "pooler": result["pooler"],
            "classifier": result["classifier"],
            "int8_aware": settings.int8_aware,
            "settings": asdict(settings),
            "steps": result["steps"],
            "epoch_losses": result["epoch_losses"],
            "train_seconds": result["train_seconds"],
            "inherited_weights_sha256": result["inherited_weights_sha256"],
            "tokenizer": result["tokenizer"],
            "threads": result["threads"],
        },
        "accuracy": {
            "fp32_torch": result["accuracy"],
            "fp32_onnx": fp32_acc,
            "int8_onnx": int8_acc,
            "int8_minus_fp32_points": 100 * (int8_acc - fp32_acc),
            "int8_fp32_agreement": float((int8.argmax(-1) == fp32.argmax(-1)).mean()),
            "fp32_onnx_max_abs_logit_diff": float(abs(fp32 - torch_logits.numpy()).max()),
            "macro_f1_fp32_torch": result["macro_f1"],
            "majority": float(counts.max()) / len(gold),
        },
        "latency": latency,
        "files": made["files"],
        "graph": made["graph"],
        "hf_transformers": {"loadable": loadable, "note": note},
        **card_extra,
    }
    write_card(stage, card)
    return card


def _head_record(manifest: dict[str, Any], task: Any) -> dict[str, Any]:
    """Where an inherited head was trained (its task.json), and whether on this very file."""
    from bfnas.models.digest import file_sha256

    trained_on = manifest["task"]
    return {
        "task": trained_on,
        "same_train_file": trained_on["train_sha256"] == file_sha256(task.train.path),
    }


def _measure(
    stage: Path,
    cfg: SubnetConfig,
    profile: Any,
    runner: Any,
    artifacts: Any,
    recipe: Any,
    on_measurement: Callable[[str, MeasurementResult], None] = lambda file, result: None,
) -> dict[str, Any]:
    """Both ONNX files timed by the profile's harness beside its anchor, with the trust
    verdict and what it was measured under."""
    from bfnas.bench.jobs.context import artifact_cache
    from bfnas.bench.jobs.measurement import measure_artifact
    from bfnas.bench.jobs.profiling import anchor_artifact
    from bfnas.commands.common import default_cache_dir
    from bfnas.models.deploy.text_classifier import FP32_FILE, INT8_FILE
    from bfnas.models.digest import file_sha256

    cache = artifact_cache(artifacts or default_cache_dir(), seq_len=profile.workload.seq_len)
    anchor = anchor_artifact(cache, profile, cfg)
    record: dict[str, Any] = {
        "profile": {"name": profile.name, "hash": profile.hash(), "source": profile.source},
        "precision": profile.precision,
        "recipe": recipe.to_dict(),
        "workload": profile.workload.model_dump(),
        "threads": profile.runtime.intra_op_threads,
        "provider": profile.runtime.runs_on,  # until a measurement says what really ran
        "anchor": anchor.key if anchor is not None else None,
    }
    for name, file in (("int8", INT8_FILE), ("fp32", FP32_FILE)):
        path = stage / file
        sha = file_sha256(path)
        r = measure_artifact(runner, str(path), sha, profile, anchor)
        on_measurement(name, r)
        env = r.environment or {}
        flat = r.to_dict()
        record[name] = {"file": file, "sha256": sha} | {
            k: flat[k] for k in MEASUREMENT_KEYS if flat.get(k) is not None
        }
        memory = r.memory or {}
        if memory:
            # What it takes to run on the device: above the runtime's baseline, and in all.
            record[name]["memory_mb"] = memory.get("peak_above_baseline_mb")
            record[name]["peak_rss_mb"] = memory.get("peak_rss_mb")
        if r.model_bytes is not None:
            record[name]["file_mb"] = r.model_bytes / 1e6
        if env:
            record.update(
                host=env.get("host"), cpu_model=env.get("cpu_model"), versions=env.get("versions")
            )
        if r.provider:
            record["provider"] = r.provider
    return record
