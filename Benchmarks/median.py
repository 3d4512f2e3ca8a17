#!/usr/bin/env python3
"""Median of several `spool bench` reports: the "Targets" table of each, row by row.

    python3 Benchmarks/median.py Benchmarks/results-A.md Benchmarks/results-B.md Benchmarks/results-C.md

Prints a Markdown table: each target with Spool's and the baseline's median over the runs, the
ratio of the medians, the verdict on the medians, and every run's own Spool figure. Standard
library only.
"""

import re
import statistics
import sys

NUMBER = re.compile(r"(-?[\d,]*\.?\d+)\s*(/s|ms|µs|MB|×)?")


def value(cell):
    match = NUMBER.search(cell.replace("**", ""))
    if not match or cell.strip() in ("—", ""):
        return None, ""
    return float(match.group(1).replace(",", "")), match.group(2) or ""


def targets(path):
    rows = {}
    with open(path, encoding="utf-8") as report:
        inside = False
        for line in report:
            if line.startswith("## Targets"):
                inside = True
                continue
            if inside and line.startswith("## "):
                break
            if not inside or not line.startswith("| ") or line.startswith("| Target") or line.startswith("|---"):
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) >= 5:
                rows[cells[0]] = (value(cells[1]), value(cells[3]))
    return rows


def fmt(number, unit):
    if number is None:
        return "—"
    if unit == "/s":
        return f"{number:,.0f} /s"
    if unit == "µs":
        return f"{number:.0f} µs"
    if unit in ("MB",):
        return f"{number:.1f} MB"
    if unit == "×":
        return f"{number:.2f}×"
    return f"{number:.3f} ms" if number < 10 else f"{number:.1f} ms"


def bound(text):
    """(kind, number, at_least) from a target's text: 'baseline' targets compare with the pool."""
    at_least = "≥" in text
    if "the pool" in text:
        match = re.search(r"(\d+(?:\.\d+)?)×", text)
        return "baseline", float(match.group(1)) if match else 1.0, at_least
    match = re.search(r"[≤≥]\s*([\d,]*\.?\d+)", text)
    return "absolute", float(match.group(1).replace(",", "")) if match else None, at_least


def main(paths):
    runs = [targets(path) for path in paths]
    names = [name for name in runs[0]]
    print(f"| Target | Spool (median of {len(runs)}) | Pool (median) | Spool ÷ pool | Verdict | Spool per run |")
    print("|---|---|---|---|---|---|")
    for name in names:
        spools = [run[name][0] for run in runs if name in run and run[name][0][0] is not None]
        pools = [run[name][1] for run in runs if name in run and run[name][1][0] is not None]
        spool = statistics.median(v for v, _ in spools) if spools else None
        pool = statistics.median(v for v, _ in pools) if pools else None
        unit = (spools or pools or [(0, "")])[0][1]
        ratio = f"{spool / pool:.2f}×" if spool is not None and pool else "—"
        kind, number, at_least = bound(name)
        limit = number * pool if kind == "baseline" and pool is not None and number is not None else number if kind == "absolute" else None
        if spool is None or limit is None:
            verdict = "not measured"
        else:
            verdict = "PASS" if (spool >= limit if at_least else spool <= limit) else "MISS"
        each = ", ".join(fmt(v, u) for v, u in spools)
        print(f"| {name} | {fmt(spool, unit)} | {fmt(pool, unit)} | {ratio} | **{verdict}** | {each} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: median.py REPORT.md [REPORT.md ...]")
    main(sys.argv[1:])
