"""Sound verdicts: the real gate (`harness.evaluation.gate`) on synthetic run directories drawn from populations
whose truth is known, for every kind of criterion.

Each repeat draws a fresh run: 200 test examples per task (24 on one, 100 on the judged ones), answers right or
wrong (or grounded or hallucinated) with known rates, paired candidates coupled on the same examples, log-normal
latencies, reviewers' 1-5 ratings in the ratings database, a judge that echoes its instructions and one silent on
a third of the bad answers (scripted OpenAI-compatible servers: faults a real judge cannot produce on demand), a
candidate whose failed requests are exactly its hallucinated and slowest answers, and a lenient judge (it calls half
the hallucinated answers supported) corrected by a reviewer's labels of 60 answers (prediction-powered). In the
`false` population every criterion is false by a small margin, in the `boundary` one its truth sits exactly on the
threshold (where a sound gate passes most often): both pass rates are false-pass rates, which must stay at most
1 - confidence for every kind (the goal; exit 1 when missed). In the `true` population every criterion holds by a
clear margin: its pass rate (power) is reported.

    .venv/bin/python benchmarks/gate_soundness.py            # 200 runs a population (400 at the boundary), ~20 min
    .venv/bin/python benchmarks/gate_soundness.py --repeats 20
    .venv/bin/python benchmarks/gate_soundness.py --kind "worst slice at_least" --kind "max gap between slices"

Slices: on `sliced-worst` every slice must clear the bar (`worst: true`): the truth sits on its worst slice, the
others far above (the intersection-union test's least favourable case); on `sliced-gap` the gap between the best and
worst of three slices is the criterion's (exact intervals, Bonferroni), and on `sliced-f1` the same gap in macro F1
(two balanced labels, a wrong answer the other one: a slice's macro F1 is its rate of right answers), which has no
interval of its own: the simultaneous bootstrap. `--kind` runs only the kinds named (and the tasks they need).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from record import ROOT, write

sys.path.insert(0, str(ROOT))

from harness.evaluation import gate
from harness.labels import Label, LabelStore, label_queue
from harness.pipeline import Pipeline
from harness.plan import make_plan
from harness.ratings import Output, RatingStore, Score, answer_sha256
from harness.records import Completion
from harness.run_record import RunRecord
from harness.store import RunDir
from tests.fake_openai_server import FakeServer

N = 200
CONFIDENCE = 0.95
MAX_ERROR_RATE = 0.05
PASSAGE = "The parcel was sent from Paris on Monday."
RIGHT, WRONG = "yes", "no"
GROUNDED, HALLUCINATED = "Paris", "Berlin"
LATENCY_SIGMA = 0.5
LATENCY_MEDIAN_MS = 200.0


@dataclass(frozen=True)
class Population:
    """The true rates of one population; every criterion of the manifest is false (or true) by its margin."""

    ft: float          # ft's accuracy on cls
    base: float        # base's accuracy on cls
    big: float         # big's accuracy on cls
    hallucinated: float  # ft's hallucination rate on qa
    flaky_hallucinated: float  # flaky's hallucination rate on qa (its failures hide these first)
    rating_probs: tuple[float, ...]  # reviewers' 1-5 ratings of ft
    p95_factor: float  # the latency threshold over ft's true p95
    lead_factor: float  # the lead asked of ft's p95 over base's (twice as slow) as a share of the true lead
    small: float  # ft's accuracy on the 24-example task
    slice_worst: tuple[float, float, float]  # ft's accuracy on each slice of sliced-worst
    slice_gap: tuple[float, float, float]  # and of sliced-gap


FALSE = Population(ft=0.78, base=0.70, big=0.85, hallucinated=0.12, flaky_hallucinated=0.12,
                   rating_probs=(0.02, 0.05, 0.18, 0.48, 0.27), p95_factor=1 / 1.05,
                   lead_factor=1.05, small=0.78, slice_worst=(0.77, 0.95, 0.95), slice_gap=(0.67, 0.90, 0.80))
# Every criterion's truth exactly at its threshold: where a sound gate's false-pass rate is highest.
BOUNDARY = Population(ft=0.80, base=0.70, big=0.85, hallucinated=0.10, flaky_hallucinated=0.10,
                      rating_probs=(0.03, 0.04, 0.17, 0.42, 0.34), p95_factor=1.0,
                      lead_factor=1.0, small=0.80, slice_worst=(0.80, 0.95, 0.95), slice_gap=(0.70, 0.90, 0.80))
TRUE = Population(ft=0.90, base=0.70, big=0.90, hallucinated=0.03, flaky_hallucinated=0.02,
                  rating_probs=(0.0, 0.02, 0.08, 0.30, 0.60), p95_factor=1.3,
                  lead_factor=0.3, small=0.97, slice_worst=(0.95, 0.95, 0.95), slice_gap=(0.85, 0.85, 0.85))
FLAKY_FAILED = 0.015     # share of flaky's requests that fail: its hallucinated answers first, then its slowest
JUDGED_HALLUCINATED = 0.30  # ft's true rate on qa-judged, where the judge only echoes its instructions
# On qa-selective a judge answers right but gives no verdict on every third hallucinated answer (4% of answers at a
# rate of 0.12, under max_unparsed): left out, they would lower the rate exactly where it matters.
SELECTIVE_EVERY = 3
JUDGED_N = 100  # examples of the two judged tasks (each answer judged costs a request to the scripted judge)
BASE_SLOWER = 2.0  # base's latencies are ft's times this
SMALL_N = 24  # the demo's smallest tasks: where a bootstrap of a rate covers least
RATED_EXAMPLES, REVIEWERS = 60, ("ada", "bob")
# On qa-lenient the judge calls every other hallucinated answer supported (its raw rate reads about half the truth);
# a reviewer labels this many answers of the seeded order, and the corrected rate decides.
LABELLED = 60
SLICE_N = 150  # examples per slice of the sliced tasks (three slices each)
F1_LABELS = ("left", "right")  # sliced-f1's two labels, alternating
TRUE_P95_MS = LATENCY_MEDIAN_MS * float(np.exp(1.6448536 * LATENCY_SIGMA))


def criteria(pop: Population) -> dict[str, dict]:
    """Each kind's criterion; its margin to the population's truth is what the docstring says."""
    return {
        "at_least": {"task": "cls", "metric": "exact_match", "candidate": "ft", "at_least": 0.80},
        "at_least, 24 examples": {"task": "small", "metric": "exact_match", "candidate": "ft", "at_least": 0.80},
        "at_most": {"task": "qa", "metric": "hallucination_rate", "candidate": "ft", "at_most": 0.10},
        "better_than by": {"task": "cls", "metric": "exact_match", "candidate": "ft", "better_than": "base",
                           "by": 0.10},
        "not_worse_than margin": {"task": "cls", "metric": "exact_match", "candidate": "ft",
                                  "not_worse_than": "big", "margin": 0.05},
        "latency p95 at_most": {"task": "cls", "metric": "e2e_ms_p95", "candidate": "ft",
                                "at_most": round(TRUE_P95_MS * pop.p95_factor, 3)},
        "latency p95 better_than by": {"task": "cls", "metric": "e2e_ms_p95", "candidate": "ft", "better_than": "base",
                                       "by": round(TRUE_P95_MS * (BASE_SLOWER - 1) * pop.lead_factor, 3)},
        "human rating at_least": {"task": "cls", "metric": "human_rating", "candidate": "ft", "at_least": 4.0},
        "judged metric, echoing judge": {"task": "qa-judged", "metric": "hallucination_rate", "candidate": "ft",
                                         "at_most": 0.10},
        "judged metric, verdicts missing on bad answers": {"task": "qa-selective", "metric": "hallucination_rate",
                                                           "candidate": "ft", "at_most": 0.10},
        "corrected rate at_most, lenient judge + labels": {"task": "qa-lenient",
                                                            "metric": "hallucination_rate_corrected",
                                                            "candidate": "ft", "at_most": 0.10},
        "failed requests: hallucination at_most": {"task": "qa", "metric": "hallucination_rate",
                                                   "candidate": "flaky", "at_most": 0.10},
        "failed requests: latency p95 at_most": {"task": "qa", "metric": "e2e_ms_p95", "candidate": "flaky",
                                                 "at_most": round(TRUE_P95_MS * pop.p95_factor, 3)},
        "worst slice at_least": {"task": "sliced-worst", "metric": "exact_match", "candidate": "ft", "slice": "group",
                                 "worst": True, "at_least": 0.80},
        "max gap between slices": {"task": "sliced-gap", "metric": "exact_match", "candidate": "ft", "slice": "group",
                                   "max_gap": 0.20},
        "max gap between slices, macro_f1": {"task": "sliced-f1", "metric": "macro_f1", "candidate": "ft",
                                             "slice": "group", "max_gap": 0.20},
    }


def chosen(pop: Population, kinds: list[str] | None) -> dict[str, dict]:
    """The criteria of the kinds asked for (every kind without `--kind`)."""
    every = criteria(pop)
    return every if not kinds else {k: every[k] for k in kinds}


def _suite(folder: Path, judge_url: str, pop: Population, kinds: list[str] | None) -> Path:
    """Tasks, data and a suite whose candidates are served by `judge_url` (never asked: the answers are drawn)."""
    rows = {"cls": [{"id": f"e{i}", "q": f"item {i}", "r": RIGHT} for i in range(N)],
            "qa": [{"id": f"e{i}", "passage": PASSAGE, "q": f"Where was parcel {i} sent from?", "r": GROUNDED}
                   for i in range(N)]}
    rows["small"] = rows["cls"][:SMALL_N]
    for name in ("sliced-worst", "sliced-gap"):
        rows[name] = [{"id": f"e{i}", "q": f"item {i}", "r": RIGHT, "group": "abc"[i // SLICE_N]}
                      for i in range(3 * SLICE_N)]
    rows["sliced-f1"] = [{**row, "r": F1_LABELS[i % 2]} for i, row in enumerate(rows["sliced-gap"])]
    for name, data in rows.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    grounded = {"kind": "grounded_qa", "source": "passage", "prompt": {"template": "{passage}\n{q}"},
                "data": {"test": "test.jsonl", "id": "id", "inputs": {"passage": "passage", "q": "q"},
                         "reference": "r"},
                "metrics": ["hallucination_rate"]}
    tasks = {"cls": {"name": "cls", "kind": "generation", "prompt": {"template": "{q}"}, "metrics": ["exact_match"],
                     "data": {"test": "test.jsonl", "id": "id", "inputs": {"q": "q"}, "reference": "r"}},
             "qa": {"name": "qa", **grounded}}
    tasks["small"] = {**tasks["cls"], "name": "small"}
    for name in ("sliced-worst", "sliced-gap"):
        tasks[name] = {**tasks["cls"], "name": name, "slices": ["group"]}
    tasks["sliced-f1"] = {**tasks["sliced-gap"], "name": "sliced-f1", "kind": "classification",
                          "labels": list(F1_LABELS), "metrics": ["macro_f1"]}
    for name, spec in tasks.items():
        (folder / name / "task.yaml").write_text(json.dumps(spec))
    for name in ("qa-judged", "qa-selective", "qa-lenient"):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows["qa"][:JUDGED_N]))
        (folder / name / "task.yaml").write_text(json.dumps({"name": name, **grounded}))
    served = {"backend": "openai", "url": judge_url}
    asked = chosen(pop, kinds)
    needed = {c["task"] for c in asked.values()}
    refs = ["cls/task.yaml", "small/task.yaml", "qa/task.yaml",
            {"task": "qa-judged/task.yaml", "detector": {"name": "judge", "model": "echo", "url": judge_url}},
            {"task": "qa-selective/task.yaml", "detector": {"name": "judge", "model": "selective", "url": judge_url}},
            {"task": "qa-lenient/task.yaml", "detector": {"name": "judge", "model": "lenient", "url": judge_url}},
            "sliced-worst/task.yaml", "sliced-gap/task.yaml", "sliced-f1/task.yaml"]
    suite = {
        "name": "soundness", "seed": 0,
        "tasks": [r for r in refs if (r if isinstance(r, str) else r["task"]).split("/")[0] in needed],
        "candidates": [c for c in [{"name": "ft", "model": "ft", **served},
                                   {"name": "base", "model": "base", "tasks": ["cls"], **served},
                                   {"name": "big", "model": "big", "tasks": ["cls"], **served},
                                   {"name": "flaky", "model": "flaky", "tasks": ["qa"], **served}]
                       if set(c.get("tasks", needed)) & needed],
        "bootstrap": {"resamples": 1000, "confidence": CONFIDENCE},
        "manifest": {"confidence": CONFIDENCE, "max_error_rate": MAX_ERROR_RATE,
                     "criteria": list(asked.values())},
    }
    path = folder / "suite.yaml"
    path.write_text(json.dumps(suite))
    return path


def _coupled(rng: np.random.Generator, latent: np.ndarray, p: float) -> np.ndarray:
    """Right (True) with probability p on each example, sharing half its draws with the other candidates, as
    candidates that find the same examples hard do."""
    own = np.where(rng.random(len(latent)) < 0.5, latent, rng.random(len(latent)))
    return own < p


def _latencies(rng: np.random.Generator) -> np.ndarray:
    return LATENCY_MEDIAN_MS * np.exp(LATENCY_SIGMA * rng.standard_normal(N)) / 1000


def _completions(cand: str, task: str, texts: list[str], e2e_s: np.ndarray,
                 failed: np.ndarray | None = None) -> list[Completion]:
    out = []
    for i, (text, e2e) in enumerate(zip(texts, e2e_s, strict=True)):
        if failed is not None and failed[i]:
            out.append(Completion(f"e{i}", cand, task, "", error="HTTP 503: injected"))
        else:
            out.append(Completion(f"e{i}", cand, task, text, prompt_tokens=20, completion_tokens=2,
                                  ttft_s=float(e2e) / 2, itl_s=[float(e2e) / 2], e2e_s=float(e2e)))
    return out


def _draw_run(run: RunDir, record: RunRecord, pop: Population, rng: np.random.Generator, ratings: RatingStore) -> None:
    """One run directory: predictions drawn from the population, and reviewers' ratings of ft."""
    run.path.mkdir(parents=True)
    latent = rng.random(N)
    answers = {cand: [RIGHT if ok else WRONG for ok in _coupled(rng, latent, p)]
               for cand, p in (("ft", pop.ft), ("base", pop.base), ("big", pop.big))}
    per_task = {"cls": {cand: _completions(cand, "cls", texts, _latencies(rng) * (BASE_SLOWER if cand == "base" else 1))
                        for cand, texts in answers.items()}}
    small = [RIGHT if ok else WRONG for ok in rng.random(SMALL_N) < pop.small]
    per_task["small"] = {"ft": _completions("ft", "small", small, _latencies(rng)[:SMALL_N])}
    qa = [HALLUCINATED if bad else GROUNDED for bad in rng.random(N) < pop.hallucinated]
    # The echoing judge's reply never depends on the answer: one draw serves every run (and is judged once).
    echoed = np.random.default_rng(0).random(JUDGED_N) < JUDGED_HALLUCINATED
    judged = [HALLUCINATED if bad else GROUNDED for bad in echoed]
    flaky_bad = rng.random(N) < pop.flaky_hallucinated
    flaky_e2e = _latencies(rng)
    # The failures hide exactly what would count against flaky: its hallucinations, then its slowest requests.
    order = sorted(range(N), key=lambda i: (not flaky_bad[i], -flaky_e2e[i]))
    failed = np.zeros(N, bool)
    failed[order[:round(FLAKY_FAILED * N)]] = True
    per_task["qa"] = {"ft": _completions("ft", "qa", qa, _latencies(rng)),
                      "flaky": _completions("flaky", "qa", [HALLUCINATED if b else GROUNDED for b in flaky_bad],
                                            flaky_e2e, failed)}
    per_task["qa-judged"] = {"ft": _completions("ft", "qa-judged", judged, _latencies(rng)[:JUDGED_N])}
    selective = [HALLUCINATED if bad else GROUNDED for bad in rng.random(JUDGED_N) < pop.hallucinated]
    per_task["qa-selective"] = {"ft": _completions("ft", "qa-selective", selective, _latencies(rng)[:JUDGED_N])}
    lenient = [HALLUCINATED if bad else GROUNDED for bad in rng.random(JUDGED_N) < pop.hallucinated]
    per_task["qa-lenient"] = {"ft": _completions("ft", "qa-lenient", lenient, _latencies(rng)[:JUDGED_N])}
    for name, rates in (("sliced-worst", pop.slice_worst), ("sliced-gap", pop.slice_gap)):
        right = np.concatenate([rng.random(SLICE_N) < p for p in rates])
        per_task[name] = {"ft": _completions("ft", name, [RIGHT if ok else WRONG for ok in right],
                                             np.full(3 * SLICE_N, LATENCY_MEDIAN_MS / 1000))}
    # Balanced labels, a wrong answer the other label: each slice's macro F1 is its rate of right answers.
    right = np.concatenate([rng.random(SLICE_N) < p for p in pop.slice_gap])
    per_task["sliced-f1"] = {"ft": _completions("ft", "sliced-f1", [F1_LABELS[(i % 2) ^ (not ok)]
                                                                    for i, ok in enumerate(right)],
                                                np.full(3 * SLICE_N, LATENCY_MEDIAN_MS / 1000))}
    for task, by_cand in per_task.items():
        for cand, comps in by_cand.items():
            path = run.predictions_file(cand, task)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(c.to_json() + "\n" for c in comps))
    run.write_run(record.model_copy(update={"run_id": run.run_id, "status": "incomplete"}))
    _label(run.run_id, per_task["qa-lenient"]["ft"], ratings)
    for i in rng.choice(N, RATED_EXAMPLES, replace=False):
        for reviewer in REVIEWERS:
            a, b, c = (int(x) for x in rng.choice(np.arange(1, 6), 3, p=pop.rating_probs))
            ratings.save_score(Score(run.run_id, "cls", f"e{i}", "ft", reviewer, a, b, c,
                                     answer_sha256=answer_sha256(answers["ft"][i])))


def _label(run_id: str, answers: list[Completion], ratings: RatingStore) -> None:
    """A reviewer labels the first LABELLED answers of the seeded order on qa-lenient, truthfully, through the
    Review page's own calls."""
    store = LabelStore(ratings)
    by_id = {c.example_id: c for c in answers}
    queue = label_queue(0, "hallucination_rate", "qa-lenient", by_id, ["ft"])
    digests = {Output("qa-lenient", c.example_id, "ft"): answer_sha256(c.text) for c in answers}
    for _ in range(LABELLED):
        out = store.next_answer(run_id, "hallucination_rate", "ada", queue, digests)
        assert out is not None
        text = by_id[out.example_id].text
        store.save(Label(run_id, "hallucination_rate", out.task, out.example_id, "ft", "ada",
                         float(text == HALLUCINATED), answer_sha256(text)))


def _passes(results: Path, record: RunRecord, pop: Population, repeats: int, seed: int,
            say: Callable[[str], None], asked: list[str] | None) -> dict[str, list[bool]]:
    ratings = RatingStore.beside(results)
    kinds = list(chosen(pop, asked))
    passes: dict[str, list[bool]] = {k: [] for k in kinds}
    kept: Path | None = None
    for r in range(repeats):
        run = RunDir(results / f"{seed}-{r}")
        _draw_run(run, record, pop, np.random.default_rng([seed, r]), ratings)
        if kept is not None and (kept / "detections").is_dir():
            # The judges' findings of the previous run: reused where an example got the same answer again (the
            # harness keys them by answer and detector), so the scripted judges are asked about the rest only.
            shutil.copytree(kept / "detections", run.path / "detections")
            shutil.rmtree(kept)
        verdicts, _ = gate(run.path)
        for kind, v in zip(kinds, verdicts, strict=True):
            passes[kind].append(v.status == "pass")
        kept = run.path
        if (r + 1) % 20 == 0:
            say(f"  {r + 1}/{repeats}: " + ", ".join(f"{k} {sum(p)}" for k, p in passes.items()))
    return passes


def _population_record(folder: Path, judge_url: str, pop: Population,
                       kinds: list[str] | None) -> tuple[Path, RunRecord]:
    """The suite and the run record every repeat of the population shares (as `harness run` writes it)."""
    suite = _suite(folder, judge_url, pop, kinds)
    results = folder / "results"
    run_plan = make_plan(suite)
    runner = Pipeline(run_plan, results)
    return results, runner._record(RunDir(results / "template"), "incomplete", time.strftime("%FT%T"), {})


def judge_reply(body: dict) -> str:
    """The scripted judges. `echo` repeats its instructions, as the embedded 270M model does (the system prompt
    names both verdict forms). `selective` knows the truth but gives no verdict on every third hallucinated
    answer, the ones a cut-off explanation would lose. `lenient` calls every other hallucinated answer supported."""
    messages = body.get("messages") or [{"content": body.get("prompt", "")}]
    if body.get("model") == "echo":
        return str(messages[0]["content"])
    user = str(messages[-1]["content"])
    if f"Answer: {HALLUCINATED}" not in user:
        return "VERDICT: SUPPORTED"
    parcel = int(re.findall(r"parcel (\d+)", user)[0])
    if body.get("model") == "lenient":
        return "VERDICT: SUPPORTED" if parcel % 2 == 0 else f"VERDICT: HALLUCINATED\nSPAN: {HALLUCINATED}"
    if parcel % SELECTIVE_EVERY == 0:
        return "The answer names a city"
    return f"VERDICT: HALLUCINATED\nSPAN: {HALLUCINATED}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="runs drawn per population")
    parser.add_argument("--kind", action="append", choices=list(criteria(TRUE)),
                        help="run only this kind of criterion (repeatable; default: every kind)")
    args = parser.parse_args()
    started = time.perf_counter()
    rates: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeServer(reply=judge_reply) as judge:
        # Twice the runs at the boundary, where the false-pass rate is near its bound and noise matters most.
        for name, pop, seed, repeats in (("false", FALSE, 1, args.repeats), ("boundary", BOUNDARY, 3, 2 * args.repeats),
                                         ("true", TRUE, 2, args.repeats)):
            print(f"{name} population: {repeats} runs")
            results, record = _population_record(Path(tmp) / name, judge.url, pop, args.kind)
            passes = _passes(results, record, pop, repeats, seed, print, args.kind)
            rates[name] = {kind: float(np.mean(p)) for kind, p in passes.items()}
    bound = 1 - CONFIDENCE
    figures = {kind: {"false_pass_rate": rates["false"][kind], "boundary_pass_rate": rates["boundary"][kind],
                      "power": rates["true"][kind]} for kind in rates["false"]}
    for kind, f in figures.items():
        print(f"{kind:48s} false-pass {f['false_pass_rate']:.3f}, at the threshold {f['boundary_pass_rate']:.3f} "
              f"(each at most {bound:.2f})   power {f['power']:.3f}")
    met = all(max(f["false_pass_rate"], f["boundary_pass_rate"]) <= bound for f in figures.values())
    write("gate_soundness", goal=f"false-pass rate at most {bound:.2f} for every kind of criterion", met=met,
          figures=figures, settings={
              "repeats": args.repeats, "kinds": args.kind or "all", "examples": N, "slice_examples": SLICE_N,
              "confidence": CONFIDENCE, "max_error_rate": MAX_ERROR_RATE,
              "populations": {"false": FALSE.__dict__, "boundary": BOUNDARY.__dict__, "true": TRUE.__dict__},
              "criteria_false": criteria(FALSE), "criteria_boundary": criteria(BOUNDARY),
              "criteria_true": criteria(TRUE), "flaky_failed_share": FLAKY_FAILED,
              "judged_true_rate": JUDGED_HALLUCINATED, "judged_examples": JUDGED_N,
              "rated_examples": RATED_EXAMPLES, "reviewers": REVIEWERS, "labelled_answers": LABELLED,
              "seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
