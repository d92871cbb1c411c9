"""`bfnas report`: one self-contained HTML page (PNG plots inlined) about a latency store.

Sections: what is measured (counts per profile and status, latency against MACs), how well a
predictor fitted on it predicts held-out rows (5-fold out-of-fold predictions), every
`bfnas profile --until` job's estimated accuracy against the device time it spent, and every
search run: the predicted Pareto front with the subnets verified on the device, and the
progress per generation. With an accuracy store, the page opens with the model to ship
(`search/ship_report.py`). Each PNG is also written next to the page. It reads like the
terminal: architectures in the compact notation, statuses in words, every axis and number
with its unit.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bfnas.bench.jobs.measurement import distrust_label
from bfnas.bench.store.latency_reports import store_summary
from bfnas.bench.store.latency_store import LATENCY_UNITS, LatencyStore
from bfnas.errors import InputError
from bfnas.models.outputs import write_atomic
from bfnas.models.space.subnet import SubnetConfig
from bfnas.search.latency_predictor import accuracy
from bfnas.search.objectives import OBJECTIVE_UNITS
from bfnas.search.plots import predicted_vs_measured, pyplot, save_figure
from bfnas.search.predictor_file import PredictorSettings
from bfnas.search.ship_report import load_accuracy_search, ship_plot, ship_section
from bfnas.search.training import LatencyRows, load_rows, out_of_fold

# Cross-validating on more rows than this says nothing new and costs minutes.
CV_ROWS = 2000
MIN_CV_ROWS = 50


def coverage_plot(store: LatencyStore, profile: dict, folder: Path) -> Path | None:
    rows = store.measurements(profile["hash"], statuses=("ok", "unstable", "imported", "failed"))
    if not rows:
        return None
    workload = json.loads(profile["json"]).get("workload") or {}
    seq, batch = int(workload.get("seq_len", 128)), int(workload.get("batch", 1))
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {
        "ok": "tab:blue",
        "imported": "tab:blue",
        "unstable": "tab:orange",
        "failed": "tab:red",
    }
    for status in ("ok", "imported", "unstable"):
        sel = [r for r in rows if r.status == status and r.median_ms]
        if sel:
            macs = [r.arch.total_macs(seq, batch) / 1e9 for r in sel]
            a.scatter(
                macs,
                [r.median_ms for r in sel],
                s=4,
                alpha=0.6,
                color=colors[status],
                label=f"{status} ({len(sel)})",
            )
    a.set(
        xlabel=f"GMACs (batch {batch}, seq {seq})", ylabel="raw median ms", title="latency vs size"
    )
    a.legend(fontsize=8)
    ms = [r.median_ms for r in rows if r.median_ms]
    b.hist(ms, bins=40, color="tab:blue", alpha=0.8)
    b.set(xlabel="raw median ms", ylabel="subnets", title=f"{len(ms)} latencies")
    fig.suptitle(f"{profile['name']} ({profile['hash']})")
    return save_figure(fig, folder, f"coverage-{profile['hash']}.png")


def accuracy_plot(rows: LatencyRows, folder: Path, seed: int = 0) -> tuple[Path, dict]:
    if len(rows.cfgs) > CV_ROWS:
        pick = np.random.default_rng(seed).permutation(len(rows.cfgs))[:CV_ROWS]
        cfgs, ms = rows.subset(pick)
        rows = replace(rows, cfgs=cfgs, ms=ms)
    predicted, _ = out_of_fold(rows, PredictorSettings(seed=seed), 5, seed)
    m = accuracy(rows.ms, predicted)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    unit = LATENCY_UNITS[rows.label]
    predicted_vs_measured(
        ax,
        rows.ms,
        predicted,
        f"measured ({unit})",
        f"predicted out of fold ({unit})",
        f"{rows.profile} / {rows.space}: {len(rows.ms)} rows, 5-fold",
    )
    return save_figure(fig, folder, f"accuracy-{rows.profile_hash}-{rows.space}.png"), {
        **m,
        "rows": len(rows.ms),
    }


def until_plot(run: dict, until: dict, folder: Path) -> Path:
    """A `--until` job's estimate per round against the device time its profile had spent."""
    plt = pyplot()
    curve = until["curve"]
    minutes = [p["device_s"] / 60 for p in curve]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(minutes, [p["within"] for p in curve], marker=".", label="out-of-fold share")
    ax.plot(
        minutes,
        [p["lower_bound"] for p in curve],
        marker=".",
        label=f"lower bound ({until['confidence']:.0%} confidence)",
    )
    ax.axhline(until["target"], color="black", ls="--", lw=1, label="target")
    ax.set(
        xlabel="device time (min)",
        ylabel=f"predictions within ±{until['tolerance']:.0%}",
        ylim=(0, 1.02),
        title=f"profile run {run['id']}: {run['profile']} ({until['stop'] or 'interrupted'})",
    )
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, folder, f"until-{run['id']}.png")


def search_plots(run: dict, result: dict, folder: Path) -> list[Path]:
    """A search run's front (predicted, with the verified subnets at their measured latency)
    and its progress per generation, the objective's axis named with its unit."""
    plt = pyplot()
    budget = result["budget"]
    objective, scale = objective_axis(result)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in result["rounds"]:
        front = r["front"]
        if front:
            ax.plot(
                [c["predicted_ms"] for c in front],
                [scale * c["objective"] for c in front],
                marker=".",
                lw=1,
                alpha=0.7,
                label=f"round {r['round']} front (predicted)",
            )
        ver = [v for v in r["verified"] if v["measured_ms"] is not None]
        for v in ver:
            ax.annotate(
                "",
                (v["measured_ms"], scale * v["objective"]),
                (v["predicted_ms"], scale * v["objective"]),
                arrowprops={"arrowstyle": "->", "color": "gray", "lw": 0.8},
            )
        if ver:
            ok = [v for v in ver if v["within_budget"]]
            over = [v for v in ver if not v["within_budget"]]
            if ok:
                ax.scatter(
                    [v["measured_ms"] for v in ok],
                    [scale * v["objective"] for v in ok],
                    color="tab:green",
                    zorder=3,
                    label=f"round {r['round']} measured, within budget",
                )
            if over:
                ax.scatter(
                    [v["measured_ms"] for v in over],
                    [scale * v["objective"] for v in over],
                    color="tab:red",
                    marker="x",
                    zorder=3,
                    label=f"round {r['round']} measured, over budget",
                )
    ax.axvline(budget["max_ms"], color="black", ls="--", lw=1, label="budget")
    if budget.get("min_ms"):
        ax.axvline(budget["min_ms"], color="black", ls=":", lw=1)
    ax.set(
        xlabel=f"latency ({LATENCY_UNITS.get(result.get('unit') or '', 'ms, unit not recorded')})",
        ylabel=objective,
        title=f"search run {run['id']}: {result['space']}",
    )
    ax.legend(fontsize=7)
    front_png = save_figure(fig, folder, f"search-{run['id']}-front.png")

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for r in result["rounds"]:
        hist = [h for h in r["history"] if h["best_objective"] is not None]
        ax.plot(
            [h["generation"] for h in hist],
            [scale * h["best_objective"] for h in hist],
            label=f"round {r['round']} best",
        )
        ax.plot(
            [h["generation"] for h in hist],
            [None if h["mean_objective"] is None else scale * h["mean_objective"] for h in hist],
            ls="--",
            label=f"round {r['round']} population mean",
        )
    ax.set(xlabel="generation", ylabel=objective, title="progress")
    ax.legend(fontsize=7)
    return [front_png, save_figure(fig, folder, f"search-{run['id']}-progress.png")]


def build_report(
    db: str | Path,
    out: str | Path,
    on_step: Callable[[str], None] = lambda s: None,
    accuracy_db: str | Path | None = None,
) -> Path:
    """Write `out/report.html` (and its PNGs) about the latency store `db`; with
    `accuracy_db`, the page opens with "The model to ship", from that accuracy store's latest
    accuracy search. Either store refused (missing, damaged, of another kind) is one line
    before anything is written."""
    db = Path(db)
    folder = Path(out)
    sections: list[str] = []
    with LatencyStore(db, read_only=True) as store:  # a missing store: "no such store"
        summary = store_summary(store)
        if not summary["profiles"]:
            raise InputError(str(db), "profiles", "the store holds no measurements yet")
        # Read before the folder is made: a refused accuracy store leaves nothing behind.
        ship = None if accuracy_db is None else load_accuracy_search(accuracy_db)
        folder.mkdir(parents=True, exist_ok=True)
        if ship is not None:
            on_step("the model to ship")
            png = ship_plot(ship, folder)
            sections.append(ship_section(ship) + (_img(png) if png else ""))
        table = "".join(
            f"<tr><td>{html.escape(p['profile'])}</td><td>{p['hash']}</td>"
            f"<td>{'yes' if p['imported'] else ''}</td><td>{p['measurements']}</td>"
            f"<td>{html.escape(status_words(p['by_status'], store, p['hash']))}</td></tr>"
            for p in summary["profiles"]
        )
        sections.append(
            "<h2>Measurements</h2><table><tr><th>profile</th><th>hash</th><th>imported</th>"
            f"<th>subnets</th><th>statuses</th></tr>{table}</table>"
        )
        for p in store.profiles():
            on_step(f"coverage of {p['name']}")
            png = coverage_plot(store, p, folder)
            if png:
                sections.append(_img(png))
        sections.append("<h2>Latency predictor accuracy (out-of-fold)</h2>")
        for p in store.profiles():
            spaces = sorted(
                {r.space for r in store.measurements(p["hash"], statuses=("ok", "imported"))}
            )
            for space in spaces:
                rows = load_rows(store, p["hash"], space)
                if len(rows.cfgs) < MIN_CV_ROWS:
                    sections.append(
                        f"<p>{html.escape(p['name'])} / {html.escape(space)}: {len(rows.cfgs)} "
                        f"trusted rows, fewer than {MIN_CV_ROWS}: too few to estimate "
                        "the predictor's accuracy.</p>"
                    )
                    continue
                on_step(f"cross-validating a predictor on {p['name']} / {space}")
                png, m = accuracy_plot(rows, folder)
                sections.append(
                    f"<p>{html.escape(p['name'])} / {html.escape(space)} ({m['rows']} rows, "
                    f"{LATENCY_UNITS[rows.label]}): "
                    f"{m['within_5pct']:.1%} within 5 %, {m['within_10pct']:.1%} within 10 %, "
                    f"MAPE {m['mape']:.2%}, Kendall tau {m['kendall_tau']:.3f}</p>" + _img(png)
                )
        runs = store.runs("search")
        profiling = store.runs("profile")
    untils = [
        (run, until)
        for run in profiling
        if (until := json.loads(run["summary"] or "{}").get("until")) and until.get("curve")
    ]
    if untils:
        sections.append("<h2>Measuring until trusted</h2>")
    for run, until in untils:
        on_step(f"profile run {run['id']}")
        last = until["curve"][-1]
        sections.append(
            f"<p>run {run['id']} ({html.escape(run['profile'])}, {run['started']}): "
            f"{html.escape(until['stop'] or 'interrupted')} after {last['rows']} trusted subnets "
            f"and {last['device_s'] / 60:.1f} device-minutes; within ±{until['tolerance']:.0%}: "
            f"{last['within']:.1%} of {last['audited']} random rows out of fold, at least "
            f"{last['lower_bound']:.1%} at {until['confidence']:.0%} confidence (target "
            f"{until['target']:.0%})</p>" + _img(until_plot(run, until, folder))
        )
    sections.append("<h2>Searches</h2>")
    shown = 0
    for run in runs:
        result = json.loads(run["summary"] or "{}").get("result")
        if not result:
            continue
        shown += 1
        on_step(f"search run {run['id']}")
        sections.append(
            _search_section(run, result)
            + "".join(_img(p) for p in search_plots(run, result, folder))
        )
    if not shown:
        sections.append("<p>No finished search in this store yet (<code>bfnas search</code>).</p>")
    page = folder / "report.html"
    write_atomic(page, _page(f"bfnas report: {db.name}", sections))
    return page


def status_words(by_status: dict[str, int], store: LatencyStore, profile_hash: str) -> str:
    """A profile's measurements by status in the words the terminal uses: "63 trusted,
    2 unstable (median CI too wide), 1 failed", with why the unstable ones are not
    trusted."""
    reasons: dict[str, int] = {}
    if by_status.get("unstable"):
        for r in store.measurements(profile_hash, statuses=("unstable",)):
            label = distrust_label(r)
            reasons[label] = reasons.get(label, 0) + 1
    words = {
        "ok": "trusted",
        "imported": "imported (measured elsewhere, taken as trusted)",
        "failed": "failed",
    }
    known = ("ok", "imported", "unstable", "failed")
    parts = []
    for status in (*known, *sorted(set(by_status) - set(known))):
        n = by_status.get(status)
        if not n:
            continue
        if status == "unstable":
            why = (
                next(iter(reasons))
                if len(reasons) == 1
                else ", ".join(f"{k} {label}" for label, k in reasons.items())
            )
            parts.append(f"{n} unstable ({why})" if why else f"{n} unstable")
        else:
            parts.append(f"{n} {words.get(status, status)}")
    return ", ".join(parts) or "none"


def objective_axis(result: dict) -> tuple[str, float]:
    """What a search's objective values are, as a label, and the factor they are shown with:
    an accuracy (a fraction) in %, naming how it was obtained. A run stored without its
    objective's unit says so, rather than a bare "objective"."""
    name = result.get("objective_name")
    unit = result.get("objective_unit") or (OBJECTIVE_UNITS.get(name) if name else None)
    if unit is None:
        return (f"{name} (unit not recorded)" if name else "objective (not recorded)"), 1.0
    label = unit if not name or name in unit else f"{name}: {unit}"
    if "accuracy" in unit or "accuracy" in (name or ""):
        return f"{label}, %", 100.0
    return label, 1.0


def _arch(arch: dict | None) -> str:
    """The compact notation the terminal prints (`L1 H320 A8 Q256 F128`)."""
    return "-" if arch is None else str(SubnetConfig.from_dict(arch))


def _search_section(run: dict, result: dict) -> str:
    b = result["budget"]
    best = result.get("best")
    objective, scale = objective_axis(result)
    if best is None:
        verdict = "no subnet predicted under the budget"
    else:
        state = {True: "within budget", False: "OVER BUDGET", None: "not verified"}[
            best["within_budget"]
        ]
        measured = "-" if best["measured_ms"] is None else f"{best['measured_ms']:.3f} ms"
        used = (
            ""
            if best["measured_ms"] is None
            else f", {best['measured_ms'] / b['max_ms']:.0%} of the budget"
        )
        verdict = (
            f"best {html.escape(_arch(best['arch']))}: objective {scale * best['objective']:.4g} "
            f"({html.escape(objective)}), "
            f"predicted {best['predicted_ms']:.3f} ms, measured {measured}{used} ({state})"
        )
    rows = "".join(
        f"<tr><td>{r['round']}</td><td>{html.escape(_arch(v['arch']))}</td>"
        f"<td>{scale * v['objective']:.4g}</td>"
        f"<td>{v['predicted_ms']:.3f}</td><td>{_num(v['measured_ms'], '.3f')}</td>"
        f"<td>{_num(v['error'], '+.1%')}</td><td>{_num(v.get('memory_mb'), '.1f')}</td>"
        f"<td>{_num(v.get('size_mb'), '.1f')}</td><td>{_YES[v['within_budget']]}</td></tr>"
        for r in result["rounds"]
        for v in r["verified"]
    )
    table = (
        (
            f"<table><tr><th>round</th><th>arch</th><th>{html.escape(objective)}</th>"
            "<th>predicted ms</th><th>measured ms</th>"
            "<th>error</th><th>memory MB</th><th>file MB</th>"
            f"<th>within budget</th></tr>{rows}</table>"
        )
        if rows
        else ""
    )
    floor = f" (floor {b['min_ms']:.3f} ms)" if b.get("min_ms") else ""
    limits = "".join(
        f", {k.removeprefix('max_').replace('_mb', '')} at most {v:g} MB"
        for k, v in (result.get("limits") or {}).items()
    )
    floor += limits
    unit = LATENCY_UNITS.get(result.get("unit") or "", "ms, unit not recorded")
    return (
        f"<h3>run {run['id']}: {html.escape(run['profile'])}, {html.escape(result['space'])}, "
        f"budget {b['max_ms']:.3f} ms{floor} ({html.escape(unit)}), "
        f"{run['started']}</h3><p>{verdict}; {result['evaluated']} candidates scored in "
        f"{result['seconds']:.1f} s</p>{table}"
    )


_YES = {True: "yes", False: "NO", None: "-"}


def _num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"></p>'


def _page(title: str, sections: list[str]) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}"
    )
    body = "\n".join(sections)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def report_facts(page: Path) -> dict[str, Any]:
    """What a page holds, for `--json`: its path, and the PNGs written beside it."""
    return {"report": str(page), "plots": sorted(str(p) for p in page.parent.glob("*.png"))}
