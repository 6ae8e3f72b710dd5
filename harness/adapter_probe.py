"""Proof that an adapter is applied. Before a candidate with a LoRA adapter is scored, it answers a few of its
own prompts next to its base model on the same backend; identical answers on every probe stop the run,
since a served adapter can silently be a no-op and the base be scored in its place (users of other
harnesses met it: lm-evaluation-harness issue 2432). `accept_unchanged_adapter: true` on the candidate
accepts it for adapters meant to change little. The result goes into run.json."""

from __future__ import annotations

from dataclasses import replace

from harness.backends import Backend, Deployment
from harness.config import Candidate
from harness.errors import HarnessError
from harness.plan import RunPlan
from harness.records import Request
from harness.run_record import ProbeExample, ProbeResult

PROBES = 8
PROBE_TOKENS = 16  # enough for answers to part; the probe must stay cheap beside the run
SHOWN = 3


def probe_requests(run_plan: RunPlan, cand: Candidate, n: int = PROBES) -> list[Request]:
    """The first prompts of each task the candidate runs, in turn, as it will be asked them (its few-shot
    examples and prompt changes included), with short answers."""
    per_task = [run_plan.requests(t, cand) for t in run_plan.tasks if cand.runs(t.name)]
    picked: list[Request] = []
    for i in range(max((len(r) for r in per_task), default=0)):
        picked += [r[i] for r in per_task if i < len(r)]
    return [replace(r, example_id=f"probe-{k}-{r.example_id}", max_new_tokens=min(r.max_new_tokens, PROBE_TOKENS))
            for k, r in enumerate(picked[:n])]


def base_of(target: Deployment) -> Deployment:
    return replace(target, adapter=None)


def answers(backend: Backend, cand: Candidate, requests: list[Request]) -> dict[str, str]:
    return {c.example_id: c.text for c in backend.generate(requests, cand.name, "adapter-probe") if c.ok}


def judge(cand: Candidate, target: Deployment, base: dict[str, str], adapted: dict[str, str],
          requests: list[Request]) -> ProbeResult:
    """All probes answered alike (or none answered by both) stops the run, unless the candidate accepts it."""
    both = [r.example_id for r in requests if r.example_id in base and r.example_id in adapted]
    if not both:
        raise HarnessError(f"candidate {cand.name!r}: no probe prompt got an answer from both the adapter and "
                           f"its base {target.model}, so whether the adapter is applied cannot be checked")
    differing = sum(base[k] != adapted[k] for k in both)
    if differing == 0 and not cand.accept_unchanged_adapter:
        raise HarnessError(f"candidate {cand.name!r}: the adapter {target.adapter} answered all {len(both)} probe "
                           f"prompts exactly as its base {target.model}: it is probably not applied; if it is "
                           "meant to change little, set `accept_unchanged_adapter: true` on the candidate")
    return ProbeResult(adapter=str(target.adapter), probes=len(both), differing=differing,
                       accepted_unchanged=cand.accept_unchanged_adapter,
                       examples=[ProbeExample(example_id=k, base=base[k], adapted=adapted[k]) for k in both[:SHOWN]])
