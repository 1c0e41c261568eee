"""Render the numbers of benchmarks/run_all.py as RESULTS.md (with PNGs) and the README's results table.

Only the paper's reference values (dh_tune.paper) are not measured by the run; they are labelled "paper".
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dh_tune.paper import TABLE1 as PAPER_TABLE1  # noqa: E402
from dh_tune.paper import TABLE2 as PAPER_TABLE2  # noqa: E402

README_BEGIN = "<!-- results:begin (written by benchmarks/run_all.py) -->"
README_END = "<!-- results:end -->"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}%"


def headline(results: dict) -> str:
    """Machine, date, mode and duration of the run in one line."""
    meta = results["meta"]
    m = meta["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (f"Measured on {m['cpu']} ({m['cores']} cores{gpu}), torch {m['torch']}, {meta['date']}; "
            f"`{'--quick' if meta['mode'] == 'quick' else 'full'}` run of the {meta['pipeline']} pipeline, "
            f"{meta['seconds'] / 60:.0f} min in all.")


def table2_section(doc: dict) -> list[str]:
    rows = []
    for scale, r in doc["rows"].items():
        paper = PAPER_TABLE2[scale]
        cells = [f"DH-YOLOv5{scale}"]
        for k in ("one", "two"):
            ours, ref = r[k], paper[k]
            cells += [f"-{ours['params_saved'] / 1e6:.2f}M ({ours['params_saved_pct']:.1f}%)",
                      f"-{ref[0] / 1e6:.2f}M ({ref[1]:.1f}%)",
                      f"-{ours['gmacs_saved']:.2f}G ({ours['gmacs_saved_pct']:.1f}%)",
                      f"-{ref[2]:.2f}G ({ref[3]:.1f}%)"]
        cells.append(f"{r['gates']['params_pct']:.1f}% / {r['gates']['gmacs_pct']:.1f}%")
        rows.append(cells)
    return ["## 1. Model cost (paper Table 2)", "",
            f"Parameters and GMACs saved when only one or two heads run, nc={doc['nc']}, {doc['imgsz']} px.", "",
            *_table(["model", "one head: params", "paper", "one head: GMACs", "paper", "two heads: params", "paper",
                     "two heads: GMACs", "paper", "gates (params / GMACs)"], rows)]


def table1_section(doc: dict) -> list[str]:
    rows = []
    for name, d in doc.items():
        for split, s in d["splits"].items():
            small, medium, large = s["heads"]
            rows.append([name, split, f"{d['imgsz']}", str(s["images"]), str(large), str(medium), str(small),
                         str(s["empty"])])
    for split, s in PAPER_TABLE1.items():
        rows.append(["TT100K (paper)", split, "-", str(s["all"]), str(s["large"]), str(s["medium"]),
                     str(s["small"]), "-"])
    return ["## 2. Dataset (paper Table 1)", "",
            "Images with objects for each head (phi of Eq. 7 at the given input size, eps 4).", "",
            *_table(["dataset", "split", "px", "all", "large (head 3)", "medium (head 2)", "small (head 1)",
                     "no object"], rows)]


def accuracy_section(acc: dict, search: dict, static: dict, figures: Path) -> list[str]:
    rows = [["DH-Net, all heads", f"{acc['dhnet']['ap50']:.3f}", f"{acc['dhnet']['ap50_95']:.3f}",
             f"{acc['imgsz']} px, {acc['epochs']} epochs"],
            ["YOLOv5 trained the same way (lambda = 0), all heads", f"{acc['static']['ap50']:.3f}",
             f"{acc['static']['ap50_95']:.3f}", f"{acc['imgsz']} px, {static['epochs']} epochs"]]
    for p in acc["profiles"]:
        state = f"{p['latency_ms']:.1f} ms expected" if p["feasible"] else "budget not met: fastest profile"
        rows.append([f"profile for {p['budget_ms']:g} ms", f"{p['ap50']:.3f}", f"{p['ap50_95']:.3f}",
                     f"{p['imgsz']} px, thresholds ({p['t1']:.2f}, {p['t2']:.2f}), {state}"])
    g = acc["gates"]
    return ["## 3. Accuracy", "",
            f"Synthetic val set ({acc['images']} images); the base DH-Net trained for {acc['epochs']} epochs "
            f"({acc['train_seconds'] / 60:.1f} min including validation).", "",
            *_table(["model", "AP50", "AP50:95", "setting"], rows),
            f"Gate accuracy (Eq. 16) at threshold 0.5: gate 1 {_pct(g['accuracy'][0])}, gate 2 {_pct(g['accuracy'][1])};"
            f" recall (Eq. 17): {_pct(g['recall'][0])}, {_pct(g['recall'][1])} (paper, TT100K: above 92% accuracy).", "",
            f"![Figure 5: gate accuracy and recall]({figures.name}/figure5_gates.png)", ""]


def tradeoff_section(search: dict, figures: Path) -> list[str]:
    lines = ["## 4. Speed/accuracy trade-off", "",
             f"{len(search['front'])} Pareto-optimal (AP, latency) points over {search['trials']} trained model(s) "
             f"and every input size and threshold pair; the search took {search['seconds'] / 60:.1f} min.", ""]
    if search.get("front_png"):
        lines += [f"![Pareto front]({figures.name}/pareto_front.png)", ""]
    lines += [f"![Figure 7: AP and latency as a threshold moves]({figures.name}/figure7_thresholds.png)", ""]
    return lines


def dynamic_section(doc: dict, figures: Path) -> list[str]:
    rows = []
    labels = {"static": "static YOLOv5 (no gates)", "all": "DH-Net, all heads", "profile": "DH-Net, profile",
              "oracle": "oracle gate (true labels)"}
    for name, r in doc["rows"].items():
        rows.append([labels[name], f"{r['ms']:.2f}", f"{r['speedup']:.2f}x", f"{r['ap50']:.3f}",
                     f"{r['ap50_95']:.3f}", "/".join(f"{s:.2f}" for s in r["exit_shares"])])
    _bar_chart(doc, labels, figures / "dynamic_vs_static.png")
    return ["## 5. Dynamic vs static", "",
            f"The {doc['budget_ms']:g} ms-class profile (thresholds {tuple(doc['thresholds'])}, {doc['imgsz']} px) on "
            f"{doc['images']} val images, {doc['threads']} threads, each image run by all four in turn.", "",
            *_table(["model", "ms / image", "speed-up vs static", "AP50", "AP50:95", "exits h1/h2/h3"], rows),
            f"Against static YOLOv5 the profile saves {_saved(doc, 'profile')} per image and an oracle gate "
            f"{_saved(doc, 'oracle')}: the learned gates capture {_pct(doc['saving_captured'])} of the oracle's saving "
            "(above 100% when the profile also gives up accuracy the oracle keeps).", "",
            f"![dynamic vs static]({figures.name}/dynamic_vs_static.png)", ""]


def _saved(doc: dict, name: str) -> str:
    static, ms = doc["rows"]["static"]["ms"], doc["rows"][name]["ms"]
    return f"{static - ms:.2f} ms ({100 * (static - ms) / static:.0f}%)"


def cost_section(cost: dict, throughput: dict) -> list[str]:
    c = cost["cache"]
    rows = [[f"({r['t1']:.2f}, {r['t2']:.2f})", f"{r['cache_ms']:.2f}", f"{r['rerun_ms']:.0f}", f"{r['ratio']:.0f}x",
             f"{r['predicted_ms']:.2f}", f"{r['measured_ms']:.2f}", f"{r['error_pct']:+.1f}%"] for r in c["rows"]]
    syn = cost["synthetic_1000"]["rows"]
    worst = max(abs(r["error_pct"]) for r in c["rows"])
    tp = [[str(r["workers"]), f"{r['images_per_s']:.1f}", f"{r['epoch_time_s']:.1f}", f"{r['ratio']:.2f}x"]
          for r in throughput["rows"]]
    return ["## 6. Search cost", "",
            f"One threshold profile scored from the exit cache vs running the model again for it ({c['images']} val "
            f"images at {c['imgsz']} px: forward, NMS, AP), and the latency the device table predicts vs the "
            f"measured mean of the dynamic model (largest error {worst:.1f}%). The machine's speed drifts, so each of "
            f"the {c.get('passes', 5)} passes times the device table right before each measurement; the error is the "
            "median over passes of each pass's error.", "",
            *_table(["profile", "cache ms", "re-run ms", "ratio", "predicted ms", "measured ms", "error"], rows),
            f"On a 1,000-image table (about {cost['synthetic_1000']['detections'] // 1000}k cached detections) one "
            f"profile takes {min(r['cache_ms'] for r in syn):.2f}-{max(r['cache_ms'] for r in syn):.2f} ms, "
            f"{min(r['ratio'] for r in syn):.0f}x or more faster than COCO AP on the same final boxes.", "",
            f"Optuna's threshold front reaches {_pct(cost['hv_ratio_min'])} of the exact grid's hypervolume "
            "(lowest over the trained models).", "",
            "Training throughput, one epoch per setting (Ray Train CPU workers, threads split evenly):", "",
            *_table(["workers", "images/s", "epoch s (with validation on rank 0)", "vs 1 worker"], tp)]


def _bar_chart(doc: dict, labels: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(doc["rows"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ms = [doc["rows"][n]["ms"] for n in names]
    bars = ax.barh([labels[n] for n in names], ms, color=["0.5", "tab:blue", "tab:green", "tab:orange"])
    for b, n in zip(bars, names):
        r = doc["rows"][n]
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {r['ms']:.1f} ms, AP50 {r['ap50']:.2f}",
                va="center", fontsize=8)
    ax.set_xlabel("mean latency per image (ms)")
    ax.set_xlim(0, max(ms) * 1.45)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, path: Path, figures: Path) -> Path:
    """RESULTS.md beside its figures folder (PNGs copied or drawn there)."""
    figures.mkdir(parents=True, exist_ok=True)
    search = results["search"]
    if search.get("front_png") and Path(search["front_png"]).is_file():
        shutil.copyfile(search["front_png"], figures / "pareto_front.png")
    lines = ["# dh-tune results", "", headline(results), "",
             "Written by `python benchmarks/run_all.py`; every number comes from that run except the columns and "
             "rows labelled *paper*.", "",
             *table2_section(results["table2"]), *table1_section(results["table1"]),
             *accuracy_section(results["accuracy"], search, results["static"], figures),
             *tradeoff_section(search, figures), *dynamic_section(results["dynamic"], figures),
             *cost_section(results["search_cost"], results["throughput"])]
    path.write_text("\n".join(lines))
    return path


def summary_rows(results: dict) -> list[list[str]]:
    """The README's short table: each goal next to what this run measured."""
    acc, dyn, cost = results["accuracy"], results["dynamic"], results["search_cost"]
    thr = results["throughput"]["rows"]
    prof = next((p for p in acc["profiles"] if p["budget_ms"] == dyn["budget_ms"]), acc["profiles"][0])
    worst = max(abs(r["error_pct"]) for r in cost["cache"]["rows"])
    syn = cost["synthetic_1000"]["rows"]
    return [
        ["AP50, all heads (quickstart base)", f"{acc['dhnet']['ap50']:.3f} after {acc['epochs']} epochs "
         f"({acc['train_seconds'] / 60:.1f} min)", ">= 0.5 in <= 10 min"],
        ["gate accuracy at 0.5", f"{_pct(acc['gates']['accuracy'][0])} / {_pct(acc['gates']['accuracy'][1])}",
         ">= 85% each"],
        ["main job (train + 2 trials + search)", f"{results['search']['seconds'] / 60:.1f} min", "<= 15 min"],
        [f"profile for {prof['budget_ms']:g} ms", f"AP50 {prof['ap50']:.3f}, {prof['latency_ms']:.1f} ms expected",
         "AP50 >= 0.5"],
        ["speed-up over static YOLOv5, same images", f"profile {dyn['rows']['profile']['speedup']:.2f}x, "
         f"oracle gate {dyn['rows']['oracle']['speedup']:.2f}x, all heads {dyn['rows']['all']['speedup']:.2f}x", "-"],
        ["profile from cache vs re-run", f"{min(r['ratio'] for r in cost['cache']['rows']):.0f}x or more",
         ">= 1000x"],
        ["one profile, 1,000 images", f"{max(r['cache_ms'] for r in syn):.2f} ms", "< 5 ms"],
        ["predicted vs measured latency", f"{worst:.1f}% worst", "< 10%"],
        ["Optuna vs exact grid hypervolume", _pct(cost["hv_ratio_min"]), ">= 99%"],
        ["training images/s, 1 vs 2 workers", " vs ".join(f"{r['images_per_s']:.0f}" for r in thr)
         + f" ({thr[-1]['ratio']:.2f}x)", "-"],
    ]


def update_readme(results: dict, readme: Path, results_path: Path) -> None:
    """Replace the block between the README's results markers (or append it) with the latest table."""
    try:
        rel = results_path.resolve().relative_to(readme.resolve().parent)
    except ValueError:
        rel = results_path
    block = "\n".join([README_BEGIN, headline(results), "",
                       *_table(["what", "measured", "goal"], summary_rows(results)),
                       f"Full tables and figures: [{rel}]({rel}).", README_END])
    text = readme.read_text() if readme.is_file() else ""
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
