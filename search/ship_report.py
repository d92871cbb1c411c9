"""The report's section "The model to ship" (`bfnas report --accuracy-db`): the latest
accuracy search's winner, its hand-scaled baseline and the params winner side by side, each
proven on both axes (latency measured on the device, dev accuracy fine-tuned over seeds),
the margins between them, and a plot of every proven subnet's accuracy against its latency.

It reads what `AccuracySearch.run` keeps as a run of kind "accuracy-search" in the accuracy
store (`{"result": ...}` in the run's summary) and says in words what each number is: the
latency's unit, the fine-tune protocol and the seeds behind every accuracy.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bfnas.bench.store.accuracy_store import AccuracyStore
from bfnas.errors import InputError
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.plots import pyplot, save_figure

KIND = "accuracy-search"
# The library's name for the store's setting: the CLI prints it as --accuracy-db.
SETTING = "accuracy_db"


@dataclass(frozen=True)
class AccuracySearchRun:
    """The latest accuracy search with a result in the store at `path` (`run` and `result`
    None when there is none), how many accuracy-search runs the store holds, and how many
    newer ones ended without a result (interrupted)."""

    path: Path
    run: dict | None
    result: dict | None
    runs: int
    unfinished_after: int = 0


def load_accuracy_search(path: str | Path) -> AccuracySearchRun:
    """The latest finished accuracy search in the accuracy store at `path`, read without
    writing to it. A store that is missing, damaged, of another kind or schema is refused in
    one line naming the setting (`--accuracy-db`), before the report writes anything."""
    path = Path(path)
    try:
        with AccuracyStore(path, read_only=True) as store:
            runs = store.runs(KIND)
    except InputError as exc:
        raise InputError.bad_setting(SETTING, exc.line()) from None
    for skipped, run in enumerate(reversed(runs)):
        try:
            summary = json.loads(run["summary"] or "{}")
        except json.JSONDecodeError:
            raise InputError.bad_setting(
                SETTING,
                f"{path}: run {run['id']}: its summary is not JSON (damaged); restore the "
                "store from a copy",
            ) from None
        result = summary.get("result") if isinstance(summary, dict) else None
        if isinstance(result, dict):
            return AccuracySearchRun(path, run, result, len(runs), skipped)
    return AccuracySearchRun(path, None, None, len(runs), len(runs))


# -- words ------------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def _seeds(seeds: list[int] | None) -> str:
    return ", ".join(map(str, seeds or [])) or "none"


def accuracy_text(model: dict) -> str:
    """ "84.20 ± 0.35 % (seeds 0, 1, 2)": a model's dev accuracy over its seeds, in %."""
    mean, std = model.get("accuracy_mean"), model.get("accuracy_std")
    if mean is None:
        return "not fine-tuned (over the budget on the device, or every fine-tune failed)"
    spread = f" ± {_pct(std)}" if std is not None else " (one seed: no spread)"
    return f"{_pct(mean)}{spread} % (seeds {_seeds(model.get('seeds'))})"


def family_text(role: str | None) -> str:
    """What a hand-scaled family is, for a reader who has not read search/baselines.py."""
    about = {
        "fewer layers": "MiniLM's width, fewer layers",
        "narrower": "MiniLM's depth, every layer uniformly narrower",
    }
    return f"{role} ({about[role]})" if role in about else str(role)


def margin_text(name: str, m: dict | None) -> str:
    if m is None:
        return f"over the {name}: no margin (one of the two has no accuracy)"
    apart = (
        "their ±std ranges are apart"
        if m["separated"]
        else "their ±std ranges overlap: the difference may be the seeds' noise"
    )
    return (
        f"over the {name}: {m['points']:+.2f} ± {m['spread_points']:.2f} points of dev "
        f"accuracy (± the standard error of the difference of the two means); {apart}"
    )


# How the result's key of the model to ship reads in a sentence.
SHIP_TEXT = {
    "winner": "search's winner",
    "baseline": "hand-scaled baseline",
    "params_winner": "params winner",
}


# -- the section ------------------------------------------------------------------------
def ship_section(found: AccuracySearchRun) -> str:
    """The section's HTML without its plot: one sentence when the store holds no finished
    accuracy search."""
    head = "<h2>The model to ship</h2>"
    where = html.escape(str(found.path))
    if found.result is None or found.run is None:
        if found.runs:
            return (
                f"{head}<p>{where} holds {found.runs} accuracy search(es), none finished: "
                "no model to ship from it yet.</p>"
            )
        return f"{head}<p>{where} holds no accuracy search yet: no model to ship from it.</p>"
    r, run = found.result, found.run
    unit = r.get("unit_text") or r.get("unit") or "ms (unit not recorded)"
    protocol = str(r.get("protocol"))
    later = (
        f" ({found.unfinished_after} later run(s) were interrupted and left no result)"
        if found.unfinished_after
        else ""
    )
    intro = (
        f"<p>From accuracy search run {run['id']} in {where}, started "
        f"{html.escape(str(run['started']))}{later}. The most accurate subnet under a latency "
        f"budget of {r['budget_ms']:.3f} ms ({html.escape(unit)}): each subnet's latency "
        f"measured on the device, its dev accuracy fine-tuned under protocol "
        f"<b>{html.escape(protocol)}</b> "
        f"({html.escape(str(r.get('protocol_text') or 'settings not recorded'))}) once per seed "
        f"({_seeds(r.get('seeds'))}); accuracies in %, mean ± std over the seeds.</p>"
    )
    family = (r.get("baseline") or {}).get("role")
    models = [
        ("winner", r.get("winner")),
        (f"baseline (hand-scaled: {family or 'none fits'})", r.get("baseline")),
        ("params winner (the biggest subnet under the budget)", r.get("params_winner")),
    ]
    rows = [
        ("architecture", lambda m: html.escape(str(m.get("arch_text")))),
        ("encoder parameters (the params objective: embeddings left out)", _encoder_params),
        (f"measured latency ({unit})", _latency),
        ("share of the budget", _budget_share),
        (f"dev accuracy, % (protocol {protocol}), mean ± std", lambda m: accuracy_text(m)),
        (
            "dev accuracy per seed, %",
            lambda m: ", ".join(_pct(a) for a in m.get("accuracy_per_seed") or []) or "-",
        ),
    ]
    table = (
        "<table><tr><th></th>"
        + "".join(f"<th>{html.escape(label)}</th>" for label, _ in models)
        + "</tr>"
        + "".join(
            f"<tr><th>{html.escape(name)}</th>"
            + "".join(f"<td>{cell(m) if m else 'none within the budget'}</td>" for _, m in models)
            + "</tr>"
            for name, cell in rows
        )
        + "</table>"
    )
    margins = r.get("margins") or {}
    winner = r.get("winner")
    if winner is None:
        verdict = (
            "<p>No verified candidate within the budget has a dev accuracy: nothing to "
            "ship from this search.</p>"
        )
    else:
        verdict = (
            f"<p>The winner {html.escape(str(winner.get('arch_text')))}: "
            f"{html.escape(margin_text('hand-scaled baseline', margins.get('baseline')))}; "
            f"{html.escape(margin_text('params winner', margins.get('params')))}.</p>"
        )
        ship = r.get("ship")
        if ship and ship != "winner":
            verdict += (
                f"<p>To ship: the {html.escape(SHIP_TEXT.get(ship, ship))}, which measured "
                "more accurate than the search's winner within the same budget.</p>"
            )
    families = r.get("hand_scaled") or {}
    hand = (
        "<p>The hand-scaled families (MiniLM scaled down by hand; the largest member of each "
        "that fits the budget on the device, the more accurate being the baseline): "
        + "; ".join(
            f"{html.escape(family_text(name))} {html.escape(str(m.get('arch_text')))}, "
            f"{_latency(m)}, {html.escape(accuracy_text(m))}"
            for name, m in families.items()
        )
        + ".</p>"
        if families
        else ""
    )
    return head + intro + table + verdict + hand + _model_paragraph(r.get("model"))


def _latency(m: dict) -> str:
    ms = m.get("latency_ms")
    raw = m.get("median_ms")
    if ms is None:
        return "not measured (the measurement failed)"
    return f"{ms:.3f} ms" + (f" (raw median {raw:.3f} ms)" if raw is not None and raw != ms else "")


def _encoder_params(m: dict) -> str:
    # Counted from the architecture as the params objective counts (embeddings left out: their
    # count follows the hidden size alone), so this row ranks as the params winner was chosen.
    if not isinstance(m.get("arch"), dict):
        return "-"
    return f"{SubnetConfig.from_dict(m['arch']).params(embeddings=False) / 1e6:.2f} M"


def _budget_share(m: dict) -> str:
    used = m.get("budget_used")
    if used is None:
        return "-"
    return f"{used:.0%} ({'within' if m.get('within_budget') else 'OVER'} budget)"


def _model_paragraph(model: dict | None) -> str:
    """The shipped model folder's card: its own dev accuracy in FP32 and INT8 (one fine-tune
    of the winner, not the seeds' mean above)."""
    if not model:
        return ""
    fp32, int8 = model.get("accuracy_fp32"), model.get("accuracy_int8")
    drop = (
        f" (INT8 {100 * (int8 - fp32):+.2f} points)"
        if fp32 is not None and int8 is not None
        else ""
    )
    protocol = model.get("protocol_text") or model.get("protocol")
    how = f", fine-tuned under {html.escape(str(protocol))}" if protocol else ""
    return (
        f"<p>Shipped as <code>{html.escape(str(model.get('path')))}</code>{how}. Its card gives "
        f"the dev accuracy of that one model, in %: FP32 {_pct(fp32)}, INT8 {_pct(int8)}"
        f"{drop}.</p>"
    )


# -- the plot ---------------------------------------------------------------------------
def ship_plot(found: AccuracySearchRun, folder: Path) -> Path | None:
    """Dev accuracy (mean ± std over the seeds) against measured latency of every proven
    subnet, the budget as a vertical line, the winner and the baseline marked. None when no
    subnet has both numbers."""
    r, run = found.result, found.run
    if r is None or run is None:
        return None
    groups: list[tuple[str, list[dict], dict[str, Any]]] = [
        ("verified candidates", r.get("candidates") or [], {"fmt": "o", "color": "tab:gray"}),
        (
            "params winner",
            [r["params_winner"]] if r.get("params_winner") else [],
            {"fmt": "s", "color": "tab:purple"},
        ),
    ]
    # One marker and colour per family: the baseline is one of them, ringed below.
    family_styles = [("^", "tab:orange"), ("v", "tab:brown"), ("D", "tab:olive")]
    for i, (family, m) in enumerate((r.get("hand_scaled") or {}).items()):
        marker, color = family_styles[i % len(family_styles)]
        groups.append((f"hand-scaled: {family}", [m], {"fmt": marker, "color": color}))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6.4))
    drawn = 0
    for label, models, style in groups:
        shown = [m for m in models if _plottable(m)]
        if not shown:
            continue
        drawn += len(shown)
        ax.errorbar(
            [m["latency_ms"] for m in shown],
            [100 * m["accuracy_mean"] for m in shown],
            yerr=[100 * (m.get("accuracy_std") or 0.0) for m in shown],
            capsize=3,
            ms=6,
            ls="none",
            alpha=0.8,
            label=label,
            **style,
        )
    if not drawn:
        plt.close(fig)
        return None
    for role, m, style in (
        ("winner", r.get("winner"), {"marker": "*", "s": 260, "color": "tab:green"}),
        (
            "baseline",
            r.get("baseline"),
            {"marker": "o", "s": 200, "facecolors": "none", "edgecolors": "tab:red", "lw": 1.8},
        ),
    ):
        if m is None or not _plottable(m):
            continue
        x, y = m["latency_ms"], 100 * m["accuracy_mean"]
        ax.scatter([x], [y], zorder=4, label=f"{role}: {m.get('arch_text')}", **style)
        ax.annotate(
            role,
            (x, y),
            xytext=(8, 8 if role == "winner" else -14),
            textcoords="offset points",
            fontsize=8,
        )
    unit = r.get("unit_text") or r.get("unit") or "ms, unit not recorded"
    ax.axvline(
        r["budget_ms"], color="black", ls="--", lw=1, label=f"budget {r['budget_ms']:.3f} ms"
    )
    seeds = r.get("seeds") or []
    ax.set(
        xlabel=f"measured latency on the device ({unit})",
        ylabel=f'dev accuracy (%), protocol "{r.get("protocol")}"\nmean ± std over '
        f"{len(seeds)} seed(s)",
        title=f"accuracy search run {run['id']}: the model to ship",
    )
    # Beside the axes, not over the points (which may fill any corner).
    # Below the axes: the winner's architecture can be long, and beside them it squeezed the plot.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return save_figure(fig, folder, f"ship-{run['id']}.png")


def _plottable(m: dict) -> bool:
    return m.get("latency_ms") is not None and m.get("accuracy_mean") is not None
