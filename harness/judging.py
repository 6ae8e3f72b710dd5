"""The judging stage: each judge metric of a task reads every candidate's answers (pairwise ones beside the
`against` candidate's, in both orders), with the replies kept in the run directory. A judgement is reused while
the answers and the judge (model, rubric and its version, scale) are unchanged, so gating again asks nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

from harness.backends import Backend, BackendEnv, Deployment
from harness.backends.hf_local import HFOptions
from harness.backends.openai_compat import OpenAIOptions
from harness.config import JudgeMetricSpec, Suite, TaskSpec
from harness.metrics.judge import PROMPT_VERSION, form, pairwise_score, point_score, rubric_text, system_prompt
from harness.records import Completion, Example, Judgement, Request
from harness.store import RunDir


def judge_key(spec: JudgeMetricSpec, task: TaskSpec) -> str:
    return json.dumps({"prompt": PROMPT_VERSION, "judge": spec.judge, "url": spec.url, "candidate": spec.candidate,
                       "rubric": rubric_text(spec, task), "rubric_version": spec.rubric_version, "scale": spec.scale,
                       "against": spec.against}, sort_keys=True)


class Judges:
    """Opens each judge's backend once per stage and closes them all."""

    def __init__(self, suite: Suite, say: Callable[[str], None]) -> None:
        self.suite, self.say = suite, say
        self._open: dict[str, tuple[Backend, BackendEnv]] = {}

    def get(self, spec: JudgeMetricSpec) -> Backend:
        key = f"{spec.judge}|{spec.url}|{spec.candidate}"
        if key not in self._open:
            if spec.candidate:
                target = self.suite.candidate(spec.judge).deployment()
                options = target.options
            else:
                options = OpenAIOptions(url=spec.url, api_key_env=spec.api_key_env) if spec.url else HFOptions()
                target = Deployment("judge", spec.judge, None, options)
            env = BackendEnv([target], self.say)
            self._open[key] = (options.open(target, env), env)
        return self._open[key][0]

    def close(self) -> None:
        for backend, env in self._open.values():
            backend.close()
            env.close()


def _user(example: Example, answers: list[str]) -> str:
    lines = [f"{k}: {v}" for k, v in example.inputs.items()]
    if example.references:
        lines.append(f"reference answer: {example.references[0]}")
    if len(answers) == 1:
        shown = f"Answer to judge:\n{answers[0]}"
    else:
        shown = f"Answer A:\n{answers[0]}\n\nAnswer B:\n{answers[1]}"
    return "Input:\n" + "\n".join(lines) + "\n\n" + shown


def task_judgements(run: RunDir, task: TaskSpec, examples: list[Example], completions: dict[str, list[Completion]],
                    judges: Judges, say: Callable[[str], None]) -> dict[str, dict[str, list[Judgement]]]:
    """candidate -> judge metric -> judgements aligned with the examples; asks only what the files do not hold."""
    out: dict[str, dict[str, list[Judgement]]] = {cand: {} for cand in completions}
    specs = [m for m in task.defined_metrics if isinstance(m, JudgeMetricSpec)]
    keys = {spec.name: judge_key(spec, task) for spec in specs}
    texts_of = {cand: [c.text if c.ok else "" for c in comps] for cand, comps in completions.items()}
    for cand in completions:
        kept = run.read_judgements(cand, task.name)
        rows: list[dict] = [row for (metric, _), row in kept.items() if metric not in keys]
        texts = texts_of[cand]
        for spec in specs:
            key = keys[spec.name]
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
                for i, j in zip(todo, _ask(judges.get(spec), spec, task, examples, texts, other, todo), strict=True):
                    judged[i] = j
            done = [j for j in judged if j is not None]
            out[cand][spec.name] = done
            for ex, answers, j in zip(examples, shown, done, strict=True):
                rows.append({"metric": spec.name, "example_id": ex.id, "key": key, "answers": answers,
                             "judgement": j.to_dict()})
        run.write_judgements(cand, task.name, rows)
    return out


def _ask(backend: Backend, spec: JudgeMetricSpec, task: TaskSpec, examples: list[Example], texts: list[str],
         other: list[str] | None, todo: list[int]) -> list[Judgement]:
    system = system_prompt(spec, rubric_text(spec, task))
    requests = []
    for i in todo:
        shown = [[texts[i]]] if other is None else [[texts[i], other[i]], [other[i], texts[i]]]
        for order, answers in enumerate(shown):
            user = _user(examples[i], answers)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            requests.append(Request(f"{i}:{order}", messages, f"{system}\n\n{user}\n\n", spec.max_new_tokens))
    replies = {c.example_id: (c.text if c.ok else f"ERROR: {c.error}")
               for c in backend.generate(requests, "judge", task.name)}
    out = []
    for i in todo:
        if other is None:
            raw = replies[f"{i}:0"]
            out.append(Judgement(point_score(form(spec), raw), (raw,)))
        else:
            first, second = replies[f"{i}:0"], replies[f"{i}:1"]
            out.append(Judgement(pairwise_score(first, second), (first, second)))
    return out
