"""Agreement: ratings per item and reviewer, inter-annotator agreement, win rates with intervals, and how
well the automatic metrics rank outputs the way reviewers do."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from dashboard.context import Context
from dashboard.sign_in import current
from dashboard.widgets import failure, metric_columns
from harness.agreement import (
    judge_agreement,
    metric_correlations,
    preference_agreement,
    score_agreement,
    win_rates,
)
from harness.assignments import Assignments, PlanProgress
from harness.errors import HarnessError
from harness.metrics.rubric_judge import JudgeAgreement
from harness.ratings import Preference, RatingStore, Score, answer_sha256
from harness.report import level
from harness.review_plan import ReviewItem


def _admin(store: RatingStore) -> bool:
    """Where reviewers have accounts, everyone's ratings are for admins: a reviewer sees their own queue only, so
    that others' ratings cannot anchor theirs."""
    who = current(store).reviewer
    if who is None or not who.admin:
        st.warning("Everyone's ratings are shown to admins only: sign in as an admin (`harness reviewers add NAME "
                   "--role admin`).")
        return False
    return True


def review_plan_agreement(progress: PlanProgress, scores: list[Score], prefs: list[Preference]) -> None:
    """The run's review plan: items complete, Krippendorff's alpha over the plan's items (with and without the
    reviewers its gold items flagged), and each reviewer's gold record."""
    plan = progress.plan
    st.subheader("Review plan")
    st.caption(f"{plan.mode} mode, overlap {plan.overlap}: {progress.complete} of {progress.planned} items have "
               f"their {plan.overlap} reviewers. Gold items: {len(plan.gold)}; a reviewer right on fewer than "
               f"{plan.gold_min_right:.0%} of them is flagged"
               + (" and left out of the gate." if plan.leave_out_flagged else " (kept in the gate)."))
    keys = {i.item.key for i in progress.items}
    planned_scores = [s for s in scores if ReviewItem(s.task, s.example_id, (s.candidate,)).key in keys]
    planned_prefs = [p for p in prefs if ReviewItem(p.task, p.example_id, (p.candidate_a, p.candidate_b)).key
                     in keys]
    flagged = progress.flagged()
    rows = []
    for who, kept_s, kept_p in (("everyone", planned_scores, planned_prefs),
                                ("without flagged reviewers", [s for s in planned_scores if s.reviewer not in flagged],
                                 [p for p in planned_prefs if p.reviewer not in flagged])):
        found = [*score_agreement(kept_s, alpha=True), *filter(None, [preference_agreement(kept_p, alpha=True)])]
        rows += [{"reviewers counted": who, **asdict(a)} for a in found]
        if not flagged:
            break
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    else:
        st.caption("Krippendorff's alpha needs two reviewers on at least two of the plan's items.")
    plan_tables(progress)


def plan_tables(progress: PlanProgress) -> None:
    """Each reviewer's count and gold record, and each item's ratings (admins only: the Review page would tell a
    reviewer which item they hold and which are gold)."""
    gold = {g.reviewer: g for g in progress.gold}
    st.caption("Each reviewer's progress and gold record, and each item's ratings")
    st.dataframe(pd.DataFrame([{"reviewer": name, "items rated": progress.by_reviewer.get(name, 0),
                                "gold rated": gold[name].rated if name in gold else 0,
                                "gold right": gold[name].right if name in gold else 0,
                                "flagged": bool(name in gold and gold[name].flagged)}
                               for name in sorted(set(progress.by_reviewer) | set(gold))],
                              columns=["reviewer", "items rated", "gold rated", "gold right", "flagged"]),
                 hide_index=True)
    st.dataframe(pd.DataFrame([{"item": n + 1, "task": p.item.task, "example": p.item.example_id,
                                "gold": p.item.is_gold, "ratings": p.rated, "held now": p.held,
                                "complete": p.item.is_gold or p.rated >= progress.plan.overlap}
                               for n, p in enumerate(progress.items)]), hide_index=True)


def render(ctx: Context) -> None:
    st.title("Agreement")
    view = ctx.picked()
    if view is None:
        return
    try:
        store = RatingStore.beside(ctx.results)
        if store.reviewers() and not _admin(store):
            return
        rated = store.of_run(view.run_id)
    except HarnessError as exc:
        failure("The ratings cannot be read:", exc)
        return
    # As the gate counts them: ratings of the answers the run holds now.
    current = rated.of_answers(view.answers)
    scores, prefs = current.scores, current.preferences
    stale = len(rated.scores) + len(rated.preferences) - len(scores) - len(prefs)
    if stale:
        st.caption(f"{stale} ratings left out: of answers rewritten since, or saved before ratings recorded "
                   "their answer.")
    progress = Assignments(store).progress(view.run_id, {k: answer_sha256(v) for k, v in view.answers.items()})
    if progress is not None:
        review_plan_agreement(progress, scores, prefs)
    if not scores and not prefs:
        st.info("No ratings for this run yet: reviewers rate outputs on the Review page.")
        return
    st.subheader("Ratings")
    if scores:
        st.dataframe(pd.DataFrame([asdict(s) for s in scores]).drop(columns="run_id"), hide_index=True)
    if prefs:
        st.dataframe(pd.DataFrame([asdict(p) for p in prefs]).drop(columns="run_id"), hide_index=True)

    st.subheader("Inter-annotator agreement")
    found = score_agreement(scores)
    pref = preference_agreement(prefs)
    rows = [asdict(a) for a in [*found, *([pref] if pref else [])]]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    else:
        st.caption("Agreement needs at least two reviewers rating the same items.")

    if prefs:
        confidence = view.record.bootstrap.confidence
        st.subheader(f"Win rates in blind comparisons (ties count half; {level(confidence)} bootstrap intervals)")
        st.dataframe(pd.DataFrame([asdict(w) for w in win_rates(prefs, confidence)]), hide_index=True)

    if scores and not view.scores.empty:
        st.subheader("Automatic metrics against the human ratings (Spearman's rho)")
        s = view.scores
        metrics = metric_columns(s)
        automatic = {m: {(r.task, r.example_id, r.candidate): float(r[m]) for _, r in s.iterrows()
                         if pd.notna(r[m])} for m in metrics}
        corr = metric_correlations(scores, automatic)
        if corr:
            st.dataframe(pd.DataFrame([asdict(c) for c in corr]), hide_index=True)
        else:
            st.caption("Too few rated outputs with metric values to correlate (needs three or more).")
        # Each task's judges, on that task's answers: two tasks may define judges of one name differently.
        judges = [(task, m) for task, known in view.task_metrics.items() for m in known.own.values()
                  if isinstance(m, JudgeAgreement) and m.reads in automatic]
        if judges:
            st.subheader("LLM judges against the reviewers")
            st.caption("A judge is trusted as far as it agrees with people: Spearman's rho with the mean rating, "
                       "Cohen's kappa (quadratic-weighted on 1–5), and the share within one point (the manifest's "
                       "`<judge>_agreement`, on the same pairs of answer and ratings as the gate).")
            found_judges = [(task, judge_agreement(m.reads, m.scale, scores,
                                                   {k: v for k, v in automatic[m.reads].items() if k[0] == task}))
                            for task, m in judges if m.reads is not None]
            rows = [{"task": task, **asdict(j)} for task, j in found_judges if j is not None]
            if rows:
                st.dataframe(pd.DataFrame(rows), hide_index=True)
            else:
                st.caption("Too few answers both judged and rated (needs three or more).")
