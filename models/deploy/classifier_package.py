"""A fine-tuned subnet as a folder a user ships: what `bfnas task train --out` writes.

- `model.safetensors`, `config.json`: a Hugging Face `BertForSequenceClassification`
  checkpoint (`bert.embeddings.*`, `bert.encoder.layer.N.*`, `bert.pooler.dense.*`,
  `classifier.*`), with `id2label`/`label2id`, the Hugging Face fields that are true of every
  layer, and the per-layer architecture under the `bfnas` key. Stock `transformers` builds
  every layer from `hidden_size`, `num_attention_heads` and `intermediate_size`, so it loads
  the folder only when every layer has the same heads and FFN width and its Q/K/V width
  equals `hidden_size` (heads x head size = hidden); `hf_loadable` says which.
- the tokenizer files the subnet was fine-tuned with, and `labels.json` (label names in
  class-id order);
- `model.onnx` (FP32) and `model.int8.onnx` (quantized by the profile's recipe): encoder,
  pooler and classifier; inputs as every encoder artifact has them (`encoder_io`), output
  `logits` [batch, labels]; batch and sequence axes dynamic;
- `model.json` (the card, machine-readable) and `README.md` (the same card for people),
  written by `write_card` from one dict, so the two cannot disagree.

Files are staged in a folder beside the output and then moved in, each with one
`os.replace`: the output never holds half a file, and the card arrives last. This module
writes and evaluates; measuring latency is the bench layer's, and the command joins them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bfnas.models.deploy.encoder_io import INPUT_NAMES, LOGITS_NAME
from bfnas.models.deploy.graph_writer import write_onnx
from bfnas.models.deploy.quantize import fuse_transformer, quantize
from bfnas.models.deploy.recipes import Recipe
from bfnas.models.deploy.text_classifier import (
    BFNAS_KEY,
    CONFIG_FILE,
    FP32_FILE,
    INT8_FILE,
    LABELS_FILE,
)
from bfnas.models.digest import file_sha256
from bfnas.models.nn.bert import Vocab
from bfnas.models.outputs import disk_full_is_failure
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.glue_task import Encoded, collate, length_order
from bfnas.models.train.task_classifier import SubnetClassifier

WEIGHTS_FILE = "model.safetensors"
CARD_JSON = "model.json"
CARD_MD = "README.md"
# Either tokenizer file, and the Hugging Face tokenizer settings copied when they are there.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
TOKENIZER_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json")
PACKAGE_FILES = (
    WEIGHTS_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    FP32_FILE,
    INT8_FILE,
    *TOKENIZER_FILES,
    *TOKENIZER_EXTRAS,
    CARD_JSON,
    CARD_MD,
)
CARD_FORMAT = "bfnas-text-classifier/1"


# -- Hugging Face's names and config --------------------------------------------------------
def hf_state_dict(model: SubnetClassifier) -> dict[str, Tensor]:
    """The classifier's tensors under `BertForSequenceClassification`'s names."""
    out = {}
    for name, tensor in model.state_dict().items():
        hf = f"bert.{name}" if name.startswith("pooler.") else name
        out[hf] = tensor.detach().contiguous().cpu().float()
    return out


def hf_loadable(cfg: SubnetConfig) -> tuple[bool, str]:
    """Whether stock `transformers` can build this architecture from config.json, and why
    not: it gives every layer `num_attention_heads` heads of `hidden_size / heads` channels
    (so Q/K/V are `hidden_size` wide) and one `intermediate_size`."""
    if len(set(cfg.heads)) > 1:
        return False, f"the layers have different head counts ({sorted(set(cfg.heads))})"
    if len(set(cfg.ffn)) > 1:
        return False, f"the layers have different FFN widths ({sorted(set(cfg.ffn))})"
    if any(q != cfg.hidden for q in cfg.qkv):
        return False, (
            f"Q/K/V are {sorted(set(cfg.qkv))} wide, not hidden_size {cfg.hidden} "
            "(transformers derives the head size from hidden_size / heads)"
        )
    return True, "every layer has the same shape and heads x head size = hidden_size"


def hf_config(
    cfg: SubnetConfig,
    vocab: Vocab,
    labels: tuple[str, ...],
    max_len: int,
    text_columns: tuple[str, ...],
    dropout: float,
) -> dict[str, Any]:
    """config.json: Hugging Face's BERT fields where they are true of every layer, the label
    maps, and under `bfnas` the per-layer architecture and what tokenizing takes."""
    loadable, why = hf_loadable(cfg)
    config: dict[str, Any] = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "vocab_size": vocab.vocab_size,
        "max_position_embeddings": vocab.max_positions,
        "type_vocab_size": vocab.type_vocab,
        "layer_norm_eps": vocab.layer_norm_eps,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "classifier_dropout": None,
        "problem_type": "single_label_classification",
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    # A field that is not true of every layer is left out rather than written wrong.
    if len(set(cfg.heads)) == 1 and all(q == cfg.hidden for q in cfg.qkv):
        config["num_attention_heads"] = cfg.heads[0]
    if len(set(cfg.ffn)) == 1:
        config["intermediate_size"] = cfg.ffn[0]
    config[BFNAS_KEY] = {
        "arch": cfg.to_dict(),
        "arch_key": cfg.key(),
        "max_len": max_len,
        "text_columns": list(text_columns),
        "hf_transformers_loadable": loadable,
        "hf_transformers_note": why,
    }
    return config


def head_params(hidden: int, labels: int) -> int:
    return hidden * hidden + hidden + labels * hidden + labels


# -- the files --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackageSpec:
    """What a package is written from: the fine-tuned classifier and what it reads."""

    model: SubnetClassifier
    labels: tuple[str, ...]
    text_columns: tuple[str, ...]
    max_len: int
    tokenizer: Path  # the tokenizer.json or vocab.txt it was fine-tuned with
    recipe: Recipe  # how model.int8.onnx is quantized (the profile's)
    dropout: float = 0.1
    # Static recipes' calibration inputs: tokenized task examples, one feed each.
    calibration: tuple[dict[str, np.ndarray], ...] = ()


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_model_files(folder: Path, spec: PackageSpec) -> dict[str, Any]:
    """Write everything but the card into `folder` (a fresh staging folder): weights,
    config, labels, tokenizer, model.onnx and model.int8.onnx. Returns what was made: the
    files' hashes and sizes, and the op counts of the INT8 graph."""
    from safetensors.torch import save_file

    model = spec.model.eval()
    cfg, vocab = model.bert.cfg, model.bert.vocab
    save_file(hf_state_dict(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    _readable(folder / WEIGHTS_FILE)
    config = hf_config(cfg, vocab, spec.labels, spec.max_len, spec.text_columns, spec.dropout)
    (folder / CONFIG_FILE).write_text(_dump(config), encoding="utf-8")
    (folder / LABELS_FILE).write_text(_dump(list(spec.labels)), encoding="utf-8")
    tokenizer = _copy_tokenizer(spec.tokenizer, folder, spec.max_len)

    state = {k: v.detach().numpy() for k, v in model.bert.state_dict().items()}
    head = {
        "pooler.dense.weight": model.pooler.dense.weight.detach().numpy(),
        "pooler.dense.bias": model.pooler.dense.bias.detach().numpy(),
        "classifier.weight": model.classifier.weight.detach().numpy(),
        "classifier.bias": model.classifier.bias.detach().numpy(),
    }
    write_onnx(state, cfg, folder / FP32_FILE, False, vocab.layer_norm_eps, head=head)
    graph = _write_int8(folder, spec)
    files = {
        name: {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
        for name in (WEIGHTS_FILE, CONFIG_FILE, LABELS_FILE, *tokenizer, FP32_FILE, INT8_FILE)
    }
    return {"files": files, "graph": graph, "tokenizer": tokenizer}


def _readable(path: Path) -> None:
    """The mode every other file gets (safetensors creates its file owner-only): a folder
    to ship is readable by whoever runs it."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _write_int8(folder: Path, spec: PackageSpec) -> dict[str, dict[str, int]]:
    """model.int8.onnx from model.onnx by the recipe, with ONNX Runtime's tools (fused first
    where the recipe fuses), as the recipe quantizes every artifact a profile measures."""
    recipe, source, graph = spec.recipe, folder / FP32_FILE, {}
    scratch = folder / ".fused.onnx"
    if recipe.fuse:
        graph["fusion"] = fuse_transformer(source, scratch)
        source = scratch
    calibration = list(spec.calibration) if recipe.method == "static" else None
    graph["quantization"] = quantize(source, folder / INT8_FILE, recipe, calibration)
    scratch.unlink(missing_ok=True)
    return graph


def _copy_tokenizer(source: Path, folder: Path, max_len: int) -> list[str]:
    """The tokenizer file and the Hugging Face settings beside it (a tokenizer_config.json
    is written when there is none, so `AutoTokenizer` loads the folder too)."""
    names = [source.name]
    shutil.copyfile(source, folder / source.name)
    for extra in TOKENIZER_EXTRAS:
        if (source.parent / extra).is_file():
            shutil.copyfile(source.parent / extra, folder / extra)
            names.append(extra)
    if "tokenizer_config.json" not in names:
        settings = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": max_len,
        }
        (folder / "tokenizer_config.json").write_text(_dump(settings), encoding="utf-8")
        names.append("tokenizer_config.json")
    return names


def calibration_feeds(data: Encoded, samples: int) -> tuple[dict[str, np.ndarray], ...]:
    """The first `samples` examples as single-row feeds: what a static recipe calibrates on
    (real task text, not generated tokens)."""
    feeds = []
    for row in range(min(samples, len(data.ids))):
        ids = np.asarray([data.ids[row]], dtype=np.int64)
        types = np.asarray([data.types[row]], dtype=np.int64)
        feeds.append(dict(zip(INPUT_NAMES, (ids, np.ones_like(ids), types), strict=True)))
    return tuple(feeds)


# -- evaluating the files ---------------------------------------------------------------------
def onnx_logits(path: Path, data: Encoded, pad: int, batch: int = 1) -> np.ndarray:
    """[examples, labels] logits of an ONNX classifier on tokenized examples, in file order.
    Batch 1 by default: each example alone and unpadded, as `TextClassifier.predict` runs
    it, so the accuracy reported is the accuracy an application gets."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = np.empty((len(data.ids), session.get_outputs()[0].shape[-1]), dtype=np.float32)
    order = length_order(data)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        b = collate(data, rows, pad)
        feed = {k: b[k].numpy() for k in INPUT_NAMES if k in names}
        out[rows] = session.run([LOGITS_NAME], feed)[0]
    return out


def accuracy(logits: np.ndarray | Tensor, labels: Tensor) -> float:
    """The share of examples whose argmax is the label (counted exactly, not in float32)."""
    pred = torch.as_tensor(np.asarray(logits)).argmax(-1)
    return int((pred == labels).sum()) / len(labels)


# -- the card ---------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f} ms"


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} MB"


def card_markdown(card: dict[str, Any]) -> str:
    """README.md of a model folder, every number taken from `card` (model.json)."""
    a, lat, arch = card["accuracy"], card["latency"], card["arch"]
    prof, task = lat["profile"], card["task"]
    hf = card["hf_transformers"]
    rows = []
    for precision, file in (("INT8", INT8_FILE), ("FP32", FP32_FILE)):
        m = lat[precision.lower()]
        ratio = f"{m['ratio']:.4f}" if m.get("ratio") is not None else "n/a"
        rows.append(
            f"| `{file}` | {precision} | {_ms(m.get('median_ms'))} | {_ms(m.get('p90_ms'))} | "
            f"{ratio} | {m.get('runs', 'n/a')} | {_mb(m.get('file_mb'))} | "
            f"{_mb(m.get('memory_mb'))} | {m['status']} | {m.get('reason') or ''} |"
        )
    versions = ", ".join(f"{k} {v}" for k, v in sorted(lat.get("versions", {}).items()))
    gap = a["int8_minus_fp32_points"]
    lines = [
        f"# {card['name']}",
        "",
        f"A text classifier for the task in `{task['folder']}` ({len(card['labels'])} labels: "
        f"{', '.join(card['labels'])}), fine-tuned by bfnas from a supernet's inherited "
        "weights and measured on the hardware profile below.",
        "",
        "## Architecture",
        "",
        f"- {arch['layers']} layers, hidden {arch['hidden']}; heads {arch['heads']}, "
        f"Q/K/V widths {arch['qkv']}, FFN widths {arch['ffn']} (key `{card['arch_key']}`)",
        f"- parameters: {card['params']['total']:,} in all ({card['params']['encoder']:,} "
        f"encoder, {card['params']['embeddings']:,} embeddings, {card['params']['head']:,} "
        "pooler and classifier)",
        f"- inputs: {', '.join(INPUT_NAMES)} (int64, [batch, sequence]); output `logits` "
        f"[batch, {len(card['labels'])}]; up to {card['max_len']} tokens per text",
        "",
        "## Dev accuracy",
        "",
        f"On {task['dev_examples']} dev examples (majority class {_pct(a['majority'])}):",
        "",
        "| model | accuracy |",
        "|---|---|",
        f"| FP32, PyTorch | {_pct(a['fp32_torch'])} |",
        f"| FP32, ONNX Runtime on `{FP32_FILE}` | {_pct(a['fp32_onnx'])} |",
        f"| INT8, ONNX Runtime on `{INT8_FILE}` | {_pct(a['int8_onnx'])} |",
        "",
        f"INT8 minus FP32: {gap:+.2f} points "
        f"({'within' if abs(gap) <= 1 else 'more than'} 1 point); INT8 and FP32 agree on "
        f"{_pct(a['int8_fp32_agreement'])} of the dev examples. "
        + (
            "Fine-tuned int8-aware (fake-quantized as the INT8 recipe runs it)."
            if card["training"]["int8_aware"]
            else "Fine-tuned in FP32 (`--int8-aware` trains as the INT8 file runs)."
        ),
        "",
        "## Latency",
        "",
        f"Measured on profile `{prof['name']}` (hash `{prof['hash']}`), raw milliseconds per "
        f"call at batch {lat['workload']['batch']}, sequence {lat['workload']['seq_len']}, "
        f"{lat['threads']} intra-op thread(s), provider {lat['provider']}; INT8 recipe "
        f"`{lat['recipe']['name']}`."
        + (
            f" The ratio is to the profile's anchor model (`{lat['anchor']}`), timed in "
            "alternation with each file: it varies less from one process to the next than "
            "the raw median does."
            if lat.get("anchor")
            else " The profile times no anchor."
        ),
        "",
        "| file | precision | median | p90 | ratio to anchor | samples | file size | memory | "
        "trust | reason |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Memory is the measuring process's peak resident memory while the file was loaded and "
        "run once, above its own with the runtime imported (the runtime's arena included).",
        "",
        f"Host {lat.get('host', 'n/a')}, CPU {lat.get('cpu_model', 'n/a')}; {versions}.",
        "",
        *_ticket_lines(card.get("ticket")),
        "## Task",
        "",
        f"- folder `{task['folder']}`: {task['train_examples']} train and "
        f"{task['dev_examples']} dev examples, text column(s) {', '.join(task['text_columns'])}",
        f"- `{task['train_file']}` sha256 `{task['train_sha256']}`",
        f"- `{task['dev_file']}` sha256 `{task['dev_sha256']}`",
        f"- labels in class-id order: {', '.join(card['labels'])}",
        "",
        "## Using it",
        "",
        "```",
        f'bfnas task predict --model {card["name"]} --text "..."',
        "```",
        "",
        f"Hugging Face `transformers`: {'loads' if hf['loadable'] else 'cannot load'} this "
        f"folder as `BertForSequenceClassification` ({hf['note']}).",
        "",
    ]
    return "\n".join(lines)


def _ticket_lines(t: dict[str, Any] | None) -> list[str]:
    """A lottery ticket's section (`bfnas tickets find`): what was pruned and how, and what
    the measurements say about its speed against the dense model."""
    if not t:
        return []
    lines = [
        "## Lottery ticket",
        "",
        f"- {'structured' if t['structured'] else 'unstructured'} ({t['kind']}): {t['pruned']}",
        f"- sparsity requested {t['requested_sparsity']:.1%}, of the weights as trained "
        f"{t['weight_sparsity']:.1%}; mask sha256 `{t['mask_sha256']}`",
        f"- rewound to the weights `{t['rewound_to']}`"
        + (f", IMP round {t['round']}" if t.get("round") is not None else ""),
    ]
    if t.get("speed"):
        lines.append(f"- speed: {t['speed']['text']}")
    return [*lines, ""]


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """model.json and README.md, from the one dict."""
    (folder / CARD_JSON).write_text(_dump(card), encoding="utf-8")
    (folder / CARD_MD).write_text(card_markdown(card), encoding="utf-8")


# -- staging and publishing -------------------------------------------------------------------
def check_package_dir(out: str | Path, flag: str) -> Path:
    """`out` as a model folder to write: new, empty, or one an earlier run wrote (its
    model.json says so), never a folder of other files, whose README.md would be replaced.
    Creates nothing."""
    from bfnas.errors import InputError
    from bfnas.models.outputs import check_output_dir

    out = check_output_dir(out, flag, holds=PACKAGE_FILES)
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / CARD_JSON).read_text(encoding="utf-8"))["format"]
        except (OSError, ValueError, KeyError, TypeError):
            ours = None
        if ours != CARD_FORMAT:
            raise InputError(
                flag,
                None,
                f"{out}: holds files and is not a model folder bfnas wrote (no {CARD_JSON} of "
                "its format): give a new or empty folder",
            )
    return out


def staging_folder(out: Path) -> Path:
    """A fresh folder beside `out` (same filesystem, so files move in by rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.building-{secrets.token_hex(4)}"
    stage.mkdir()
    return stage


def publish(stage: Path, out: Path) -> list[str]:
    """Move the staged files into `out`, the card last; package files an earlier run left
    that this one did not make (another tokenizer file) are removed. Returns the names."""
    out = Path(out)
    with disk_full_is_failure(out):
        out.mkdir(parents=True, exist_ok=True)
        made = sorted(p.name for p in stage.iterdir() if p.is_file())
        last = [n for n in (CARD_JSON, CARD_MD) if n in made]
        for name in [*(n for n in made if n not in last), *last]:
            os.replace(stage / name, out / name)
        for stale in set(PACKAGE_FILES) - set(made):
            if (out / stale).is_file():
                (out / stale).unlink()
    shutil.rmtree(stage, ignore_errors=True)
    return made


def build_in_stage(out: Path, work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run `work(stage)` in a staging folder beside `out`, publish what it wrote, and return
    its result; on any failure the staging folder is removed and `out` is untouched."""
    stage = staging_folder(out)
    try:
        with disk_full_is_failure(out):
            result = work(stage)
        publish(stage, out)
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)
