"""Lottery tickets of a pre-trained BERT (Chen et al., "The Lottery Ticket Hypothesis for
Pre-trained BERT Networks", 2020), found on a task and measured by the same harness as the
searched subnets.

`find_tickets(settings)` runs iterative magnitude pruning (IMP) with rewinding:

- round 0 fine-tunes the dense checkpoint: the reference every ticket is held against;
- each later round prunes `prune_fraction` of the surviving encoder linear weights (query,
  key, value, attention output, the FFN's two; `models.prune.masks`) by global magnitude of
  the previous round's fine-tuned weights, rewinds the survivors to the pre-trained values
  (and the new classifier head to the same initialisation: one seed throughout) and
  fine-tunes again with the mask held. A round that would pass a requested sparsity stops
  exactly at it, so the fine-tune of that round *is* the ticket's fine-tune from its rewound
  weights;
- with `control="random"`, each requested sparsity also gets a random mask (the paper's
  check that IMP's mask matters), rewound and fine-tuned the same way.

The dense model and every ticket are written as the model folder `bfnas task train` writes
(HF weights, model.onnx, model.int8.onnx with the profile's recipe, tokenizer, card), scored
FP32 and INT8 on dev and measured on the profile at the fine-tune's length; their INT8
measurements go to the latency store as role "ticket" with the ticket's provenance (kept
out of the latency predictor's rows: a ticket's weights are not the supernet's).

Everything lives in `out`: `tickets.json` (what the run is: a rerun with other settings is
refused), `rounds/` (each finished round and the next round's mask), `models/NAME/`. A rerun
continues from the last finished round and skips every model folder already written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bfnas.bench.device.contract import MeasurementResult
from bfnas.errors import InputError

MANIFEST = "tickets.json"
FORMAT = 1


def _magnitude(weights: Any, masks: Any, target: float, head_size: int) -> Any:
    from bfnas.models.prune.masks import magnitude_masks

    return magnitude_masks(weights, masks, target)


def _structured(weights: Any, masks: Any, target: float, head_size: int) -> Any:
    from bfnas.models.prune.structured import structured_masks

    return structured_masks(weights, masks, target, head_size)


# How an IMP round prunes: single weights, or whole heads and FFN neurons (`structured`).
PRUNERS: dict[bool, Callable[[Any, Any, float, int], Any]] = {
    False: _magnitude,
    True: _structured,
}


def _random_control(masks: Any, target: float, seed: int, prune: Callable, head_size: int):
    """The same pruning step on random scores instead of the fine-tuned weights: random
    weights, or random whole units for a structured run."""
    from bfnas.models.prune.masks import random_scores

    return prune(random_scores(masks, seed), masks, target, head_size)


# The controls a run can add beside IMP: name -> masks at a sparsity from the full masks.
CONTROLS: dict[str, Callable[..., Any]] = {"random": _random_control}


@dataclass(frozen=True)
class TicketSettings:
    """What `find_tickets` runs (see the module's docstring). `epochs` and `max_len`, when
    given, replace the protocol's."""

    task_dir: str
    out: str
    checkpoint: str = "minilm"
    sparsity: tuple[float, ...] = (0.5, 0.7, 0.9)
    prune_fraction: float = 0.2
    protocol: str = "standard"
    epochs: int | None = None
    max_len: int | None = None
    seed: int = 0
    hw: str = "local-cpu-int8"
    control: str | None = None
    structured: bool = False  # whole heads and FFN neurons (`models.prune.structured`)
    db: str | None = None  # the latency store (default: out/latency.db)
    artifacts: str | None = None  # the cache the profile's anchor models go to

    def __post_init__(self) -> None:
        from bfnas.models.train.protocols import get_protocol

        if not self.sparsity:
            raise InputError.bad_setting("sparsity", "give at least one sparsity")
        for i, s in enumerate(self.sparsity):
            if not 0.0 < s < 1.0:
                raise InputError.bad_setting(
                    "sparsity", f"must be in (0, 1), got {s}", field=f"[{i}]"
                )
        if not 0.0 < self.prune_fraction < 1.0:
            raise InputError.bad_setting(
                "prune_fraction", f"must be in (0, 1), got {self.prune_fraction}"
            )
        if self.control is not None and self.control not in CONTROLS:
            raise InputError.bad_setting(
                "control", f"unknown {self.control!r}; known: {', '.join(CONTROLS)}"
            )
        get_protocol(self.protocol)
        _ = self.finetune  # epochs and max_len refused here by the fine-tune's own checks

    @property
    def finetune(self) -> Any:
        """The fine-tune every round and ticket runs (`FinetuneSettings`)."""
        from bfnas.models.train.protocols import get_protocol

        base = get_protocol(self.protocol).for_seed(self.seed)
        changes = {k: v for k, v in (("epochs", self.epochs), ("max_len", self.max_len)) if v}
        return replace(base, **changes)

    @property
    def targets(self) -> list[float]:
        return sorted(set(self.sparsity))


@dataclass
class TicketEvent:
    """What `find_tickets` reports as it goes: `kind` is "round" (a fine-tune starts),
    "step" (a training step), "stage" (packaging) or "done" (a model folder is written)."""

    kind: str
    message: str
    done: int = 0
    total: int = 0
    data: dict[str, Any] = field(default_factory=dict)


def ticket_name(kind: str, sparsity: float) -> str:
    """A ticket's folder name: `imp-70`, `random-90`, `dense`."""
    return "dense" if kind == "dense" else f"{kind}-{round(100 * sparsity):02d}"


def find_tickets(
    settings: TicketSettings, on_event: Callable[[TicketEvent], None] = lambda e: None
) -> dict[str, Any]:
    """Run (or continue) the IMP rounds and the control, write and measure every ticket's
    model folder; the result (`TicketRun.run`). Every input is checked before anything is
    written."""
    with TicketRun(settings) as run:
        return run.run(on_event)


class TicketRun:
    """One run of `find_tickets`, opened: every input checked and the task tokenized
    (refused in one line before anything is written), then `run`."""

    def __init__(self, settings: TicketSettings) -> None:
        self.settings = settings
        self.on_event: Callable[[TicketEvent], None] = lambda e: None
        self.runner = None
        self._check_and_load()

    def __enter__(self) -> TicketRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks, before anything is written -------------------------------------------
    def _check_and_load(self) -> None:
        from bfnas.bench.hardware_profile import load_profile
        from bfnas.bench.runners.base import runner_for
        from bfnas.bench.runners.usable import require_usable
        from bfnas.models.digest import file_sha256
        from bfnas.models.nn.checkpoint import load_supernet, read_pooler, resolve_checkpoint
        from bfnas.models.space.subnet import SubnetConfig
        from bfnas.models.train.finetune import prepare_task
        from bfnas.models.train.glue_task import read_task
        from bfnas.task_model import profile_recipe

        s = self.settings
        ft = s.finetune
        self.out = Path(s.out)
        task = read_task(s.task_dir)
        self.profile = load_profile(s.hw).at_seq_len(ft.max_len)
        profile_recipe(self.profile)
        folder = resolve_checkpoint(s.checkpoint)
        if not folder.is_dir():
            raise InputError.bad_setting("checkpoint", f"{s.checkpoint}: not a directory")
        if not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
            raise InputError.bad_setting(
                "checkpoint", f"{folder} holds no tokenizer.json or vocab.txt"
            )
        self.net = load_supernet(folder)  # refuses a folder that is not a BERT checkpoint
        d = self.net.dims
        self.cfg = SubnetConfig.uniform(d.layers, d.hidden, self.net.source["heads"], d.qkv, d.ffn)
        self.pooler = read_pooler(folder)
        self.data = prepare_task(self.net, self.cfg, task, folder, ft)
        self.identity = {
            "checkpoint_weights_sha256": self.net.source["weights_sha256"],
            "task_train_sha256": file_sha256(task.train.path),
            "task_dev_sha256": file_sha256(task.dev.path),
            "finetune": asdict(ft),
            "prune_fraction": s.prune_fraction,
            "seed": s.seed,
            "structured": s.structured,
            "profile_hash": self.profile.hash(),
        }
        self.head_size = d.qkv // self.net.source["heads"]
        self.prune = PRUNERS[s.structured]
        self._check_out()
        self.runner = runner_for(self.profile)
        require_usable(self.profile, self.runner)

    def _check_out(self) -> None:
        """A new or empty folder, or one this very run (same identity) started."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise InputError.bad_setting("out", f"{out}: not a directory")
        if not out.exists() or not any(out.iterdir()):
            return
        manifest = out / MANIFEST
        if not manifest.is_file():
            raise InputError.bad_setting(
                "out", f"{out}: not empty and holds no {MANIFEST} (not a tickets folder)"
            )
        try:
            kept = json.loads(manifest.read_text(encoding="utf-8"))
            identity = kept["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(str(manifest), None, "not a tickets manifest") from None
        for key, value in self.identity.items():
            if identity.get(key) != value:
                raise InputError(
                    str(manifest),
                    key,
                    "an output folder of another run (this run differs here): use another folder",
                )

    @property
    def imp_kind(self) -> str:
        return "structured" if self.settings.structured else "imp"

    # -- the run ---------------------------------------------------------------------
    def run(self, on_event: Callable[[TicketEvent], None] = lambda e: None) -> dict[str, Any]:
        """The rounds, the control and the result: per ticket its measured sparsity,
        accuracy FP32 and INT8, INT8 raw median and folder (see `_summary`)."""
        self.on_event = on_event
        s = self.settings
        (self.out / "rounds").mkdir(parents=True, exist_ok=True)
        (self.out / "models").mkdir(exist_ok=True)
        _write_json(
            self.out / MANIFEST,
            {"format": FORMAT, "identity": self.identity, "checkpoint": s.checkpoint},
        )
        started = time.monotonic()
        try:
            rounds = self._imp()
            controls = self._control() if s.control else []
            self._note_speed([r["ticket"] for r in rounds] + [c["ticket"] for c in controls])
        finally:
            # What the run cost, every invocation added (a rerun reads finished work back).
            spent = self.out / "seconds.json"
            before = json.loads(spent.read_text())["seconds"] if spent.is_file() else 0.0
            _write_json(spent, {"seconds": before + time.monotonic() - started})
        return self._summary(rounds, controls)

    def _imp(self) -> list[dict[str, Any]]:
        from bfnas.models.prune.masks import (
            full_masks,
            imp_schedule,
            load_masks,
            masks_sha256,
            prunable,
            save_masks,
            sparsity,
        )

        s = self.settings
        levels = [0.0, *imp_schedule(s.targets, s.prune_fraction)]
        done: list[dict[str, Any]] = []
        for k, level in enumerate(levels):
            record_path = self.out / "rounds" / f"round-{k:02d}.json"
            kind = "dense" if k == 0 else self.imp_kind
            target = k == 0 or any(abs(level - t) < 1e-9 for t in s.targets)
            name = ticket_name(kind, level) if target else None
            folder = self.out / "models" / name if name else None
            # A round is done when its record and its ticket are kept. A rerun asking for a
            # higher sparsity also needs the last done round's pruning, which it had no reason
            # to write: that round is fine-tuned again (same seed) for the next masks only.
            next_masks = self.out / "rounds" / f"masks-{k + 1:02d}.safetensors"
            needs_next = k + 1 < len(levels) and not next_masks.is_file()
            kept = record_path.is_file() and (folder is None or folder.is_dir())
            if kept and not needs_next:
                done.append(json.loads(record_path.read_text(encoding="utf-8")))
                continue
            masks = load_masks(self.out / "rounds" / f"masks-{k:02d}.safetensors") if k else None
            self._say("round", f"IMP round {k}/{len(levels) - 1}: sparsity {level:.1%}", k, levels)
            model, result = self._finetune(masks)
            if k + 1 < len(levels):
                current = masks if masks is not None else full_masks(model)
                weights = {n: p.detach() for n, p in prunable(model).items()}
                nxt = self.prune(weights, current, levels[k + 1], self.head_size)
                save_masks(nxt, next_masks)
            if kept:
                done.append(json.loads(record_path.read_text(encoding="utf-8")))
                continue
            record = {
                "round": k,
                "sparsity": level,
                "mask_sparsity": 0.0 if masks is None else sparsity(masks),
                "mask_sha256": None if masks is None else masks_sha256(masks),
                "accuracy": result["accuracy"],
                "train_seconds": result["train_seconds"],
                "ticket": name,
            }
            if folder is not None and not folder.is_dir():
                self._package(folder, model, result, kind, record, masks)
            _write_json(record_path, record)
            done.append(record)
        return done

    def _control(self) -> list[dict[str, Any]]:
        from bfnas.models.prune.masks import full_masks, masks_sha256, sparsity
        from bfnas.models.train.task_classifier import build_classifier

        s = self.settings
        kind = f"{s.control}-structured" if s.structured else s.control
        template = full_masks(build_classifier(self.net, self.cfg, 2))
        out = []
        for i, target in enumerate(s.targets):
            name = ticket_name(kind, target)
            folder = self.out / "models" / name
            masks = CONTROLS[s.control](template, target, s.seed, self.prune, self.head_size)
            record = {
                "sparsity": target,
                "mask_sparsity": sparsity(masks),
                "mask_sha256": masks_sha256(masks),
                "ticket": name,
            }
            if not folder.is_dir():
                self._say("round", f"{kind} control at sparsity {target:.0%}", i, s.targets)
                model, result = self._finetune(masks)
                record |= {"accuracy": result["accuracy"], "train_seconds": result["train_seconds"]}
                self._package(folder, model, result, kind, record, masks)
            out.append(record)
        return out

    def seed_accuracies(self, name: str, seeds: tuple[int, ...]) -> dict[int, float]:
        """Dev accuracy of ticket `name` (an IMP round's) fine-tuned from its rewound weights
        with its mask held, once per seed: the spread a comparison with other models needs
        (the run itself fine-tunes each ticket under one seed, the rewind's). Each seed's
        result is kept in `out/seeds/`, so a rerun reads it back."""
        from bfnas.models.prune.masks import load_masks

        rounds = {
            json.loads(p.read_text(encoding="utf-8"))["ticket"]: p
            for p in sorted((self.out / "rounds").glob("round-*.json"))
        }
        if name not in rounds:
            raise ValueError(f"{name}: no finished IMP round made this ticket")
        record = json.loads(rounds[name].read_text(encoding="utf-8"))
        k = record["round"]
        masks = load_masks(self.out / "rounds" / f"masks-{k:02d}.safetensors") if k else None
        folder = self.out / "seeds"
        folder.mkdir(exist_ok=True)
        out: dict[int, float] = {}
        for seed in seeds:
            if seed == self.settings.seed:
                out[seed] = record["accuracy"]
                continue
            path = folder / f"{name}-seed{seed}.json"
            if not path.is_file():
                self._say("round", f"{name}: fine-tuning under seed {seed}")
                _, result = self._finetune(masks, seed)
                _write_json(path, {"seed": seed, "accuracy": result["accuracy"]})
            out[seed] = json.loads(path.read_text(encoding="utf-8"))["accuracy"]
        return out

    def _finetune(self, masks: Any, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        from bfnas.models.train.finetune import finetune_classifier

        def step(row: dict) -> None:
            self.on_event(
                TicketEvent(
                    "step",
                    f"epoch {row['epoch']} loss {row['loss']:.4f}",
                    row["step"],
                    row["total"],
                )
            )

        return finetune_classifier(
            self.net,
            self.cfg,
            self.data,
            replace(self.settings.finetune, seed=self.settings.seed if seed is None else seed),
            self.pooler,
            step,
            masks=masks,
        )

    def _package(
        self,
        folder: Path,
        model: Any,
        result: dict,
        kind: str,
        record: dict[str, Any],
        masks: Any,
    ) -> None:
        from bfnas.bench.store.latency_store import LatencyStore
        from bfnas.models.prune.masks import weight_sparsity
        from bfnas.task_model import package_classifier

        s = self.settings
        cfg = self.cfg
        if s.structured and kind != "dense":
            model = shrink_classifier(model, masks, self.head_size)
            cfg = model.bert.cfg
        ticket = {
            "kind": kind,
            "structured": s.structured and kind != "dense",
            "arch": cfg.to_dict(),
            "requested_sparsity": record["sparsity"],
            "mask_sha256": record["mask_sha256"],
            "weight_sparsity": weight_sparsity(model),
            "prune_fraction": s.prune_fraction if kind == "imp" else None,
            "round": record.get("round"),
            "rewound_to": self.net.source["weights_sha256"],
            "pruned": (
                "whole attention heads and FFN neurons, a dense smaller model"
                if s.structured and kind != "dense"
                else "encoder linear weights (query, key, value, attention output, FFN in "
                "and out); embeddings, biases, LayerNorms, pooler and classifier dense"
            ),
        }
        measured: dict[str, MeasurementResult] = {}
        card = package_classifier(
            folder,
            model,
            result,
            self.data,
            s.finetune,
            self.profile,
            self.runner,
            artifacts=s.artifacts,
            on_stage=lambda m: self._say("stage", f"{folder.name}: {m}"),
            card_extra={"ticket": ticket},
            on_measurement=lambda file, r: measured.__setitem__(file, r),
        )
        db = Path(s.db) if s.db else self.out / "latency.db"
        with LatencyStore(db) as store:
            p = self.profile
            store.add_profile(p.name, p.resolved(), p.hash())
            for file, r in measured.items():
                if file != "int8":
                    continue
                store.add_measurement(
                    self.profile.hash(),
                    cfg,
                    "checkpoint",
                    r,
                    role="ticket",
                    artifact={
                        "file": str(folder / card["latency"]["int8"]["file"]),
                        "sha256": card["latency"]["int8"]["sha256"],
                        "ticket": ticket,
                    },
                )
        self.on_event(TicketEvent("done", f"wrote {folder}", data={"name": folder.name}))

    def _say(self, kind: str, message: str, done: int = 0, of: list | None = None) -> None:
        self.on_event(TicketEvent(kind, message, done, len(of) if of else 0))

    def _note_speed(self, names: list[str | None]) -> None:
        """Each unstructured ticket's card says what its INT8 latency measured against the
        dense model's (measured, not assumed: `speed_words`)."""
        from bfnas.models.deploy.classifier_package import write_card

        models = self.out / "models"
        dense = json.loads((models / "dense" / "model.json").read_text(encoding="utf-8"))
        d = dense["latency"]["int8"]
        for name in names:
            if not name or name == "dense":
                continue
            card = json.loads((models / name / "model.json").read_text(encoding="utf-8"))
            t, m = card["ticket"], card["latency"]["int8"]
            if t["structured"] or not m.get("median_ms") or not d.get("median_ms"):
                continue
            same_anchor = m.get("anchor_key") == d.get("anchor_key")
            paired = m.get("ratio") and d.get("ratio") and same_anchor
            key, how = ("ratio", "ratio to the anchor") if paired else ("median_ms", "raw median")
            x = m[key] / d[key]
            t["speed"] = {
                "vs_dense": x,
                "measure": how,
                "text": f"{x:.2f}x the dense model's INT8 latency on {self.profile.name} "
                f"({how}, the same run): {speed_words(x, x)}",
            }
            write_card(models / name, card)

    # -- the result ------------------------------------------------------------------
    def _summary(self, rounds: list[dict], controls: list[dict]) -> dict[str, Any]:
        from bfnas.models.prune.masks import onnx_linear_weights, onnx_weight_sparsity

        tickets = []
        names = [r["ticket"] for r in rounds if r["ticket"]] + [c["ticket"] for c in controls]
        # Counted once: the dense file is as large as the model (loading it per ticket was a
        # second read of ~90 MB for every ticket).
        dense_count = onnx_linear_weights(self.out / "models" / "dense" / "model.onnx")[1]
        for name in names:
            folder = self.out / "models" / name
            card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
            t, a, lat = card["ticket"], card["accuracy"], card["latency"]
            tickets.append(
                {
                    "name": name,
                    "kind": t["kind"],
                    "structured": t["structured"],
                    "sparsity": onnx_weight_sparsity(folder / lat["fp32"]["file"], dense_count),
                    "arch": t.get("arch"),
                    "requested_sparsity": t["requested_sparsity"],
                    "mask_sha256": t["mask_sha256"],
                    "accuracy_fp32": a["fp32_onnx"],
                    "accuracy_int8": a["int8_onnx"],
                    "latency_ms": lat["int8"].get("median_ms"),
                    "latency_status": lat["int8"].get("status"),
                    # Against the dense model, as its card says (`_note_speed`).
                    "speed": t.get("speed"),
                    "fp32_latency_ms": lat["fp32"].get("median_ms"),
                    "path": str(folder),
                }
            )
        dense = next((t for t in tickets if t["kind"] == "dense"), None)
        return {
            "out": str(self.out),
            "checkpoint": self.settings.checkpoint,
            "task": str(self.data.task.folder),
            "profile": self.profile.name,
            "unit": "median_ms",
            "finetune": asdict(self.settings.finetune),
            "prune_fraction": self.settings.prune_fraction,
            "rounds": rounds,
            "tickets": [t for t in tickets if t["kind"] != "dense"],
            "dense": dense,
            "speed": speed_verdict(dense, tickets),
            "seconds": json.loads((self.out / "seconds.json").read_text())["seconds"],
        }

    def close(self) -> None:
        if self.runner is not None:  # made when the run starts measuring
            self.runner.close()


def speed_verdict(dense: dict | None, tickets: list[dict]) -> str | None:
    """What the measurements say about unstructured sparsity and speed: the range of the
    unstructured tickets' INT8 latency against the dense model's, as each card records it
    (`TicketRun._note_speed`). Untrusted measurements are named."""
    rows = [t for t in tickets if t["kind"] != "dense" and t.get("speed")]
    if dense is None or not rows:
        return None
    ratios = [t["speed"]["vs_dense"] for t in rows]
    lo, hi = min(ratios), max(ratios)
    how = sorted({t["speed"]["measure"] for t in rows})
    doubtful = [t["name"] for t in [dense, *rows] if t.get("latency_status") != "ok"]
    trust = f"; measured untrusted: {', '.join(doubtful)}" if doubtful else ""
    return (
        f"unstructured tickets ran at {lo:.2f}-{hi:.2f}x the dense model's INT8 latency "
        f"({' or '.join(how)}, same profile, same run): {speed_words(lo, hi)}{trust}"
    )


def speed_words(lo: float, hi: float) -> str:
    """What latencies of `lo`-`hi` times the dense model's mean for unstructured sparsity."""
    if hi < 0.9:
        return "sparsity made the model faster here"
    if lo > 1.1:
        return "the sparse model ran slower here"
    return (
        "the runtime's dense kernels do the same work on zeros: unstructured sparsity made "
        "the model no faster here"
    )


def shrink_classifier(model: Any, masks: Any, head_size: int) -> Any:
    """A structured ticket's classifier as the dense smaller model it is: the encoder
    without its pruned units (`structured.shrink`), the same pooler and classifier."""
    import torch

    from bfnas.models.prune.structured import shrink
    from bfnas.models.train.task_classifier import SubnetClassifier

    small = SubnetClassifier(
        shrink(model, masks, head_size), model.classifier.out_features, model.dropout.p
    )
    with torch.no_grad():
        small.pooler.dense.load_state_dict(model.pooler.dense.state_dict())
        small.classifier.load_state_dict(model.classifier.state_dict())
    return small.eval()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all: a rerun never reads half a record."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
