"""The report's slice section: per task and slicing, the task's first metric by slice for every candidate (slices
where a fine-tune is worse than its base although better overall first), each candidate's worst slice and best-worst
gap, every flagged slice, and apart those worse within noise (what the run saved for the Slices page)."""

from __future__ import annotations

from collections.abc import Mapping

from harness.metrics import TaskMetrics
from harness.slice_scoring import SliceComparison, SliceReport


def _flag(c: SliceComparison) -> str:
    return (f"{c.task} {c.metric} on {c.slicing}={c.slice}: {c.candidate} {c.delta:+.3f} [{c.ci_low:+.3f}, "
            f"{c.ci_high:+.3f}] against its base {c.baseline} (n={c.n}), although better overall")


def slices_markdown(report: SliceReport | None, known: Mapping[str, TaskMetrics]) -> list[str]:
    if report is None or not report.slicings:
        return []
    lines = ["## Slices", "",
             f"Each slice resampled on its own ({report.confidence:.0%} intervals); a slice below its slicing's "
             "min_size is too small to rank.", ""]
    if report.flagged:
        lines += ["**Worse than its base on a slice, although better overall (Simpson's trap), beyond noise corrected "
                  "over the slicing's slices:**", ""]
        lines += [f"- {_flag(c)}" for c in report.flagged] + [""]
    if report.within_noise:
        lines += ["Worse than its base on a slice by the point estimate only (within noise across the slicing's "
                  "slices, not flagged):", ""]
        lines += [f"- {_flag(c)}" for c in report.within_noise] + [""]
    for sl in report.slicings:
        task, name = sl["task"], sl["slicing"]
        metrics = known[task]
        metric = metrics.listed[0]
        rows = [r for r in report.results if r.task == task and r.slicing == name and r.metric == metric]
        candidates = list(dict.fromkeys(r.candidate for r in rows))
        flagged = {c.slice for c in report.flagged if c.task == task and c.slicing == name}
        order = sorted(sl["sizes"], key=lambda s: (s not in flagged, list(sl["sizes"]).index(s)))
        lines += [f"### {task} by {name} ({metric}; field `{sl['field']}`, min_size {sl['min_size']})", "",
                  "| slice | n | " + " | ".join(candidates) + " |", "|---|---:|" + "---:|" * len(candidates)]
        fmt = metrics[metric].format
        for s in order:
            by = {r.candidate: r for r in rows if r.slice == s}
            small = sl["sizes"][s] < sl["min_size"]
            cells = [f"{fmt(by[c].value)} [{fmt(by[c].ci_low)}, {fmt(by[c].ci_high)}]" if c in by else "–"
                     for c in candidates]
            mark = " ⚑" if s in flagged else " (too small)" if small else ""
            lines.append(f"| {s}{mark} | {sl['sizes'][s]} | " + " | ".join(cells) + " |")
        gaps = [g for g in report.gaps if g.task == task and g.slicing == name and g.metric == metric]
        lines += ["", "| candidate | worst slice | best slice | gap |", "|---|---|---|---:|"]
        lines += [f"| {g.candidate} | {g.worst or '–'} {fmt(g.worst_value)} | {g.best or '–'} {fmt(g.best_value)} | "
                  f"{fmt(g.gap)} [{fmt(g.ci_low)}, {fmt(g.ci_high)}] |" for g in gaps]
        lines.append("")
    return lines
