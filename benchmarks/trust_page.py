"""The results page's section on what profiles promise: held-out AP against the AP the choice saw, intervals,
budgets on p90 against budgets on the mean, and the p90 prediction against measured per-frame latency."""
from __future__ import annotations


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _num(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else f"{v:{spec}}"


def optimism_rows(search: dict) -> list[list[str]]:
    """Per budget: AP on the calibration images that chose the profile, on the held-out images, the difference."""
    rows = []
    for b in search["budgets"]:
        t = b.get("trust")
        if not t:
            continue
        ci = t.get("interval")
        held = _num(t["test_ap"]) + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci and None not in ci else "")
        same = f"{t['indistinguishable']} of {t['compared_with']}" if t.get("compared_with") is not None else "-"
        rows.append([f"{b['budget_ms']:g} ms ({t['budget_stat']})", _num(t["selection_ap"]), held,
                     _num(t["optimism"], "+.3f"), same])
    return rows


def budget_rule_rows(doc: dict) -> list[list[str]]:
    """Per budget and rule (mean, p90): the pick, predicted and measured latency, frames over budget, AP."""
    rows = []
    for r in doc.get("rows", []):
        if r["pick"] is None:
            rows.append([f"{r['budget_ms']:g} ms", r["rule"], "nothing fits", "-", "-", "-", "-"])
            continue
        p = r["pick"]
        rows.append([f"{r['budget_ms']:g} ms", r["rule"], f"({p['t1']:.2f}, {p['t2']:.2f}) @ {p['imgsz']}",
                     f"{r['predicted_mean_ms']:.2f} / {r['measured_mean_ms']:.2f}",
                     f"{r['predicted_p90_ms']:.2f} / {r['measured_p90_ms']:.2f}", f"{100 * r['frames_over_budget']:.1f}%",
                     _num(r["test_ap"])])
    return rows


def p90_lines(by_runtime: dict) -> list[str]:
    """The p90 per image beside the measured one: latency_stats' mixture of the exits and the summed-p90 rule
    (each image's summed p90 part costs, 90th percentile over images); nothing for results without p90 numbers."""
    priced = any("table_read_ms" in x for v in by_runtime.values() for x in v)
    rows = [[r, f"({x['t1']:.2f}, {x['t2']:.2f})", f"{x['measured_p90_ms']:.2f}",
             f"{x['predicted_p90_ms']:.2f} ({x['error_p90_pct']:+.1f}%)",
             *([f"{x['error_p90_without_read_pct']:+.1f}%"] if priced else []),
             f"{x['predicted_p90_old_ms']:.2f} ({x['error_p90_old_pct']:+.1f}%)",
             f"{x['read_ms']:.2f}" + (f" / {x['table_read_ms']:.2f}" if priced else "")]
            for r, v in by_runtime.items() for x in v if "measured_p90_ms" in x]
    if not rows:
        return []
    return ["p90 latency per image, end to end as a user runs a profile (each frame read from disk, letterboxed, "
            "heads, decode and NMS): measured, predicted from the exits' cost distributions (`latency_stats`), and "
            "by the summed-p90 rule (each image's summed p90 part costs, 90th percentile over images). "
            + ("The device table prices reading a frame from its file (timed on the first image, every exit pays "
               "it); the prediction's error without that read is shown beside, and the read as measured on the "
               "user's path / as the table timed it. " if priced else
               "The device table does not price the disk read, shown beside. ")
            + "Values are medians over the passes; each error is the median "
            "of the passes' own errors (the machine drifts between passes), so it can differ from the ratio of the "
            "medians shown.", "",
            *_table(["runtime", "profile", "measured p90 ms", "predicted p90 (error)",
                     *(["without the read (error)"] if priced else []), "summed-p90 rule (error)",
                     "disk read ms" + (" (measured / table)" if priced else "")], rows)]


def p90_worst(results: dict) -> list[list[str]]:
    """README row: the worst p90 error over profiles and runtimes, exit mixture and summed-p90 rule (absent
    without p90 numbers)."""
    rows = [x for v in results["search_cost"]["cache"].get("latency_by_runtime", {}).values() for x in v
            if "error_p90_pct" in x]
    if not rows:
        return []
    new = max(abs(x["error_p90_pct"]) for x in rows)
    old = max(abs(x["error_p90_old_pct"]) for x in rows)
    return [["predicted vs measured p90 latency (exit mixture / summed quantiles)", f"{new:.1f}% / {old:.1f}% worst",
             "< 10%"]]


def section(results: dict, number: int) -> list[str]:
    """The section (empty for results without held-out profiles)."""
    opt = optimism_rows(results["search"])
    rules = budget_rule_rows(results.get("budget_stat") or {})
    if not opt and not rules:
        return []
    lines = [f"## {number}. What a profile promises", ""]
    if opt:
        first = next(b["trust"] for b in results["search"]["budgets"] if b.get("trust"))
        h = first.get("holdout") or {}
        lines += [f"Profiles are chosen on {h.get('calibration_images', '?')} calibration images and reported on "
                  f"{h.get('test_images', '?')} held-out test images ({h.get('source', '?')}, stratified by gate "
                  f"labels). The AP the choice saw minus the held-out AP is the optimism of reporting on the images "
                  f"that chose ({first['metric']}; held-out AP with its 95% basic bootstrap interval; how many other "
                  "front profiles within the budget have overlapping intervals on the calibration images):", "",
                  *_table(["budget (statistic)", "AP on calibration", "AP held out [95%]", "optimism",
                           "indistinguishable"], opt)]
    if rules:
        doc = results["budget_stat"]
        lines += [f"Budgets on the mean against budgets on the p90 (the default), the same candidates, "
                  f"each pick run as a user runs it over the {doc['test_images']} held-out images in {doc['runtime']} "
                  "(every frame read from disk): predicted / measured ms, and the share of frames over the budget.", "",
                  *_table(["budget", "rule", "pick", "mean ms", "p90 ms", "frames over budget", "AP held out"],
                          rules)]
    return lines + p90_lines(results["search_cost"]["cache"].get("latency_by_runtime", {}))


def summary_rows(results: dict) -> list[list[str]]:
    """README rows: mean optimism over budgets, frames over budget under each rule."""
    rows = []
    opt = [b["trust"]["optimism"] for b in results["search"]["budgets"]
           if b.get("trust") and b["trust"].get("optimism") is not None]
    if opt:
        rows.append(["AP on the choosing images minus held-out AP (optimism)",
                     ", ".join(f"{v:+.3f}" for v in opt), "reported, not hidden"])
    by_rule: dict[str, list[float]] = {}
    for r in (results.get("budget_stat") or {}).get("rows", []):
        if r["pick"] is not None:
            by_rule.setdefault(r["rule"], []).append(r["frames_over_budget"])
    if by_rule:
        rows.append(["frames over budget, budget on mean / on p90",
                     " / ".join(f"{100 * max(v):.0f}% worst" for v in by_rule.values()), "p90: <= ~10%"])
    return rows + p90_worst(results)
