"""An LLM judge as a metric: a versioned rubric per task, a 1–5 or pass/fail score per answer, or a pairwise
win rate against one candidate judged in both orders (position bias cancels: a win must hold both ways).

The judging itself is a stage (harness.rubric_judging: replies kept in the run directory, judged once); these
metrics read its judgements. `<name>_unparsed` is the share of answers without a verdict (a reply without its
one verdict line, an echo of the prompt or of the user turn, a failed request); they are left out of the score,
never guessed. A pairwise score declares its rival in `rivals`: the rival's failed requests are shown to the
judge as empty answers, so the gate counts them too.
`<name>_agreement` (from reviewers' ratings, for the manifest) is the share of rated answers where the judge is
within one point of the reviewers' mean (pass/fail: the same side of 3), the answers paired as the Agreement page
pairs them (`ratings.paired_with_ratings`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.backends.judge_model import verdict_line
from harness.config import JudgeMetricSpec, TaskSpec
from harness.errors import ConfigError
from harness.metrics.base import Labelling, MeanMetric, Metric, Need, ScoringInput
from harness.metrics.corrected import corrected
from harness.metrics.human import RatingMetric
from harness.ratings import HumanRatings, Output, paired_with_ratings

PROMPT_VERSION = "rubric-v1"
# How a verdict is read from a reply (judgements kept under another reading are asked again). 2: only from its own
# line, once, in the exact form, and never from a reply that repeats the instructions. 3: nor from one that
# repeats a line of the system prompt, a heading of the user turn, or a verdict line of an answer it was shown.
READING_VERSION = "3"
_FORMS = {
    "1-5": ("SCORE: <a whole number from 1 (fails the criteria) to 5 (meets them fully)>",
            re.compile(r"SCORE:\s*([1-5])", re.IGNORECASE)),
    "pass_fail": ("VERDICT: PASS or VERDICT: FAIL", re.compile(r"VERDICT:\s*(PASS|FAIL)", re.IGNORECASE)),
    "pairwise": ("WINNER: A, WINNER: B or WINNER: TIE", re.compile(r"WINNER:\s*(A|B|TIE)", re.IGNORECASE)),
}
_TASK = "You judge {what} against these criteria"
_ASK = "then end with one line in exactly this form"
# The headings the user turn is written with (judging._user), each on a line of its own or, for the reference,
# before it: a reply line that is one of them is an echo of the user turn.
HEADINGS = re.compile(r"input:|answer to judge:|answer [ab]:|reference answer:(\s.*)?", re.IGNORECASE)


def form(spec: JudgeMetricSpec) -> str:
    return "pairwise" if spec.against else spec.scale


def _what(kind: str) -> str:
    return "two answers to the same input" if kind == "pairwise" else "an answer"


def system_prompt(spec: JudgeMetricSpec, rubric: str) -> str:
    kind = form(spec)
    return (f"{_TASK.format(what=_what(kind))}:\n{rubric.strip()}\n\nThink in one or two sentences, {_ASK}: "
            f"{_FORMS[kind][0]}")


def parse(kind: str, raw: str, *, system: str, shown: Sequence[str]) -> str | None:
    """The reply's verdict (its one verdict line), or None when there is none, more than one, or the reply is an
    echo: of the instructions (the format line, the prompt's own sentences, any other line of the `system`
    prompt), or of the user turn (its headings, or a verdict line of one of the answers `shown`)."""
    instructions = (_TASK.format(what=_what(kind)), _ASK, _FORMS[kind][0])
    found = verdict_line(raw, _FORMS[kind][1], system=system, instructions=instructions, headings=HEADINGS,
                         shown=shown)
    return found.group(1).upper() if found else None


def point_score(kind: str, raw: str, *, system: str, shown: Sequence[str]) -> float | None:
    """The score of the answer `shown` from the judge's reply to `system` and that answer, or None."""
    verdict = parse(kind, raw, system=system, shown=shown)
    if verdict is None:
        return None
    return float(verdict) if kind == "1-5" else float(verdict == "PASS")


def pairwise_score(first: str, second: str, *, system: str, shown: Sequence[str]) -> float | None:
    """The candidate's outcome from two replies: candidate shown as A, then as B (`shown`: both answers). Agreeing
    orders decide; a tie or disagreeing orders (position bias) count half; a reply without a verdict makes it
    unparsed."""
    a, b = (parse("pairwise", raw, system=system, shown=shown) for raw in (first, second))
    if a is None or b is None:
        return None
    as_a = {"A": 1.0, "B": 0.0, "TIE": 0.5}[a]
    as_b = {"B": 1.0, "A": 0.0, "TIE": 0.5}[b]
    return as_a if as_a == as_b else 0.5


def rubric_text(spec: JudgeMetricSpec, task: TaskSpec) -> str:
    path = task.base_dir / spec.rubric
    if Path(spec.rubric).suffix in (".txt", ".md") and "\n" not in spec.rubric:
        if not path.is_file():
            raise ConfigError(task.file, "metrics.rubric", f"rubric file not found: {path}")
        return path.read_text()
    return spec.rubric


# The values each kind of judge score takes: a score of 1 to 5; a pass (1) or fail (0); a pairwise win (1), tie
# or split (0.5) or loss (0). A failed request counts at the scale's worst, a baseline's missing verdict at its
# best, and a manifest threshold outside it can never hold.
SCALE_RANGES = {"1-5": (1.0, 5.0), "pass_fail": (0.0, 1.0), "pairwise": (0.0, 1.0)}


@dataclass(frozen=True, kw_only=True)
class JudgeScore(MeanMetric):
    """A judge's score of each answer, read from the judging stage's judgements; `spec` and `rubric` (read once, at
    plan time) are what the stage asks the judge."""

    spec: JudgeMetricSpec
    rubric: str
    family: str = "judge"
    decimals: int = 2
    needs: frozenset[Need] = frozenset({"judge"})

    def values(self, data: ScoringInput) -> np.ndarray:
        found = (data.judgements or {}).get(self.name)
        if found is None:
            raise ValueError(f"{self.name}: no judgements were made for these answers")
        return np.array([np.nan if j.score is None else j.score for j in found], float)

    def labelling(self) -> Labelling | None:
        """The judge's own rubric, answered by a reviewer on the judge's scale (a pairwise judge labels no single
        answer)."""
        if self.spec.against:
            return None
        if self.spec.scale == "pass_fail":
            return Labelling(f"{self.rubric.strip()}\n\nDoes the answer pass?", (("Pass", 1.0), ("Fail", 0.0)),
                             worst=0.0)
        return Labelling(f"{self.rubric.strip()}\n\nScore the answer from 1 to 5.",
                         tuple((str(k), float(k)) for k in range(1, 6)), worst=1.0)


@dataclass(frozen=True, kw_only=True)
class JudgeUnparsed(MeanMetric):
    """The share of answers the judge `judge` gave no verdict on."""

    judge: str
    family: str = "judge"
    higher_is_better: bool = False
    needs: frozenset[Need] = frozenset({"judge"})

    def values(self, data: ScoringInput) -> np.ndarray:
        found = (data.judgements or {}).get(self.judge)
        if found is None:
            raise ValueError(f"{self.judge}: no judgements were made for these answers")
        return np.array([np.nan if not j.judged else float(j.score is None) for j in found], float)

    def worst_case(self, stats: np.ndarray, failed: np.ndarray) -> np.ndarray:
        # A candidate's failed request is no failure of the judge's: the score counts it at its worst.
        return stats


@dataclass(frozen=True, kw_only=True)
class JudgeAgreement(RatingMetric):
    """Share of rated answers where the judge agrees with the reviewers (resolved at gate time)."""

    scale: str
    family: str = "judge"

    def rated_values(self, human: HumanRatings, task: str, candidate: str,
                     judged: dict[str, float] | None = None) -> np.ndarray:
        outputs: dict[tuple[str, str, str], float] = {
            Output(task, example_id, candidate): v for example_id, v in (judged or {}).items()}
        machine, people = paired_with_ratings(human.scores, outputs)
        return np.array([agrees(j, h, self.scale) for j, h in zip(machine, people, strict=True)], float)


def agrees(judge: float, human_mean: float, scale: str) -> float:
    if scale == "pass_fail":
        return float((judge >= 0.5) == (human_mean >= 3))
    return float(abs(judge - human_mean) <= 1.0)


def judge_metrics(spec: JudgeMetricSpec, task: TaskSpec, where: str) -> list[Metric]:
    """The judge's score (its scale's range; a pairwise one naming its rival in `rivals`), its unparsed share and
    its agreement with reviewers (qualified by the same unparsed share); checks the rubric."""
    rubric = rubric_text(spec, task)
    if not rubric.strip():
        raise ConfigError(task.file, f"{where}.rubric", "the rubric is empty")
    unparsed = f"{spec.name}_unparsed"
    made: list[Metric] = [
        JudgeScore(name=spec.name, spec=spec, rubric=rubric, unparsed=unparsed, value_range=SCALE_RANGES[form(spec)],
                   rivals=(spec.against,) if spec.against else ()),
        JudgeUnparsed(name=unparsed, judge=spec.name),
    ]
    if not spec.against:
        made.append(JudgeAgreement(name=f"{spec.name}_agreement", reads=spec.name, scale=spec.scale,
                                   unparsed=unparsed))
        made.append(corrected(made[0]))
    return made
