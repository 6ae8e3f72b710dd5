"""The judging stage: each judge metric of a task reads every candidate's answers (pairwise ones beside the
`against` candidate's, in both orders), with the replies kept in the run directory. A judgement is reused while
the answers and the judge (model, rubric and its version, scale, how replies are read) are unchanged, so gating
again asks nothing. A failed request is no judgement: it counts as unparsed in this scoring and is not kept, so
the next gate asks again. A reply is read knowing what it was shown (the system prompt, the answers), so that an
echo of either is no verdict."""

from __future__ import annotations

import json
from collections.abc import Callable

from harness.backends.judge_model import OpenJudge
from harness.config import JudgeMetricSpec, Suite, TaskSpec
from harness.metrics import TaskMetrics
from harness.metrics.rubric_judge import (
    PROMPT_VERSION,
    READING_VERSION,
    JudgeScore,
    form,
    pairwise_score,
    point_score,
    system_prompt,
)
from harness.records import Completion, Example, Judgement, Request
from harness.store import RunDir


def judge_key(metric: JudgeScore) -> str:
    spec = metric.spec
    return json.dumps({"prompt": PROMPT_VERSION, "reading": READING_VERSION, "judge": spec.judge, "url": spec.url,
                       "candidate": spec.candidate, "rubric": metric.rubric,
                       "rubric_version": spec.rubric_version, "scale": spec.scale, "against": spec.against},
                      sort_keys=True)


class Judges:
    """Opens each judge once per stage (its own model as the judge detector opens it, or a suite candidate's
    deployment) and closes them all."""

    def __init__(self, suite: Suite, say: Callable[[str], None]) -> None:
        self.suite, self.say = suite, say
        self._open: dict[str, OpenJudge] = {}

    def get(self, spec: JudgeMetricSpec) -> OpenJudge:
        model = spec.judge_model
        key = model.model_dump_json() if model else f"candidate {spec.judge}"
        if key not in self._open:
            self._open[key] = (model.open(self.say) if model
                               else OpenJudge.start(self.suite.candidate(spec.judge).deployment(), self.say))
        return self._open[key]

    def close(self) -> None:
        for judge in self._open.values():
            judge.close()


def _user(example: Example, answers: list[str]) -> str:
    """The user turn: the inputs, the reference, the answers under headings (`metrics.rubric_judge.HEADINGS` knows them:
    a reply that repeats one is an echo)."""
    lines = [f"{k}: {v}" for k, v in example.inputs.items()]
    if example.references:
        lines.append(f"reference answer: {example.references[0]}")
    if len(answers) == 1:
        shown = f"Answer to judge:\n{answers[0]}"
    else:
        shown = f"Answer A:\n{answers[0]}\n\nAnswer B:\n{answers[1]}"
    return "Input:\n" + "\n".join(lines) + "\n\n" + shown


def task_judgements(run: RunDir, task: TaskSpec, metrics: TaskMetrics, examples: list[Example],
                    completions: dict[str, list[Completion]], judges: Judges, say: Callable[[str], None]
                    ) -> dict[str, dict[str, list[Judgement]]]:
    """candidate -> judge metric (of the task's `metrics`) -> judgements aligned with the examples; asks only what the
    files do not hold."""
    out: dict[str, dict[str, list[Judgement]]] = {cand: {} for cand in completions}
    scores = [m for m in metrics.own.values() if isinstance(m, JudgeScore)]
    keys = {m.name: judge_key(m) for m in scores}
    texts_of = {cand: [c.text if c.ok else "" for c in comps] for cand, comps in completions.items()}
    for cand in completions:
        kept = run.read_judgements(cand, task.name)
        rows: list[dict] = [row for (metric, _), row in kept.items() if metric not in keys]
        texts = texts_of[cand]
        for metric in scores:
            spec, key = metric.spec, keys[metric.name]
            other = texts_of[spec.against] if spec.against else None
            shown = [[texts[i]] if other is None else [texts[i], other[i]] for i in range(len(examples))]
            judged: list[Judgement | None] = []
            for ex, answers in zip(examples, shown, strict=True):
                row = kept.get((spec.name, ex.id))
                fresh = row is not None and row.get("key") == key and row.get("answers") == answers
                judged.append(Judgement.from_dict(row["judgement"]) if row and fresh else None)
            todo = [i for i, j in enumerate(judged) if j is None]
            if spec.against == cand:
                for i in todo:
                    judged[i] = Judgement(None, judged=False)
            elif todo:
                say(f"judging {len(todo)} answers of {cand} on {task.name} ({spec.name}, judge {spec.judge})")
                for i, j in zip(todo, _ask(judges.get(spec), metric, task, examples, texts, other, todo), strict=True):
                    judged[i] = j
            done = [j for j in judged if j is not None]
            out[cand][spec.name] = done
            failed = sum(j.failed for j in done)
            if failed:
                say(f"{failed} answers of {cand} on {task.name} were not judged ({spec.name}: the request failed); "
                    "counted as unparsed, asked again next time")
            for ex, answers, j in zip(examples, shown, done, strict=True):
                if not j.failed:
                    rows.append({"metric": spec.name, "example_id": ex.id, "key": key, "answers": answers,
                                 "judgement": j.to_dict()})
        run.write_judgements(cand, task.name, rows)
    return out


def _ask(judge: OpenJudge, metric: JudgeScore, task: TaskSpec, examples: list[Example], texts: list[str],
         other: list[str] | None, todo: list[int]) -> list[Judgement]:
    spec = metric.spec
    system = system_prompt(spec, metric.rubric)
    requests = []
    for i in todo:
        shown = [[texts[i]]] if other is None else [[texts[i], other[i]], [other[i], texts[i]]]
        for order, answers in enumerate(shown):
            user = _user(examples[i], answers)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            requests.append(Request(f"{i}:{order}", messages, f"{system}\n\n{user}\n\n", spec.max_new_tokens))
    replies = {c.example_id: c for c in judge.generate(requests, task.name)}
    out = []
    for i in todo:
        got = [replies[f"{i}:{order}"] for order in range(1 if other is None else 2)]
        if not all(c.ok for c in got):
            out.append(Judgement(None, failed=True))
        elif other is None:
            score = point_score(form(spec), got[0].text, system=system, shown=[texts[i]])
            out.append(Judgement(score, (got[0].text,)))
        else:
            score = pairwise_score(got[0].text, got[1].text, system=system, shown=[texts[i], other[i]])
            out.append(Judgement(score, (got[0].text, got[1].text)))
    return out
