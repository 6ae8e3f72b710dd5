"""The Review page's pieces, shared by its free queue and a review plan's: the 1–5 form and the blind
side-by-side form (each prefilled with the reviewer's earlier rating), the outputs shown as plain text, and
the reviewer's own order of items and sides."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from harness.ratings import DIMENSIONS, Preference, Score

T = TypeVar("T", bound=tuple[str, ...])
Item = TypeVar("Item")
LABELS = {"accuracy": "Factual accuracy", "coherence": "Coherence", "conciseness": "Conciseness"}
CHOICES = ["Output 1", "Output 2", "Tie"]


def flipped(reviewer: str, example_id: str, a: str, b: str) -> bool:
    """Whether b is shown on the left: a fixed coin per reviewer and item, so a rerun keeps sides."""
    digest = hashlib.sha256(f"{reviewer}\0{example_id}\0{a}\0{b}".encode()).digest()
    return digest[0] % 2 == 1


def in_order(reviewer: str, run_id: str, items: list[T]) -> list[T]:
    """The items in the reviewer's own order: shuffled by a hash of reviewer, run and item, so a rerun keeps
    it and two reviewers meet the items in different orders."""
    return sorted(items, key=lambda i: hashlib.sha256("\0".join((reviewer, run_id, *i)).encode()).digest())


def revisit(rated: list[Item], label: Callable[[Item], str], key: str) -> Item | None:
    """A rating of the reviewer's own to change, picked by what `label` says of it (the example, never the
    candidate: the pick stays blind); None for the next item of the queue."""
    if st.session_state.pop(f"{key}_done", False):
        st.session_state[key] = None  # back to the queue once a changed rating is saved
    return st.selectbox("Change one of your ratings", [None, *rated], key=key,
                        format_func=lambda i: "– next in the queue –" if i is None else
                        f"{rated.index(i) + 1}. {label(i)}")


def prefill(item: tuple[str, ...], values: dict[str, object]) -> None:
    """The form's widgets set to an item's earlier rating or label (or the defaults) when the item shown changes."""
    if st.session_state.get("rev_item") != item or any(k not in st.session_state for k in values):
        st.session_state.update(values)
        st.session_state["rev_item"] = item


def submitted(item: tuple[str, ...]) -> None:
    """A save button's callback: records the item on the page when it was clicked, for `for_this_item`."""
    st.session_state["rev_submitted"] = item


def for_this_item(item: tuple[str, ...], what: str = "rated") -> bool:
    """Whether a save is of the item on the page now. A save is of the item the reviewer saw when they clicked;
    by the rerun it handles, that item may have gone (held too long and taken by another reviewer, rated in
    another tab, a plan replaced, the answer rewritten), and its values must not land on the item shown instead."""
    if st.session_state.pop("rev_submitted", None) == item:
        return True
    st.warning(f"Nothing was saved: the item you {what} is no longer yours (left unsaved too long, or {what} in "
               "another tab, or its answer changed). Here is your next item.")
    return False


def show_output(text: str) -> None:
    st.markdown("**Output** (whose, you see once your rating is saved)")
    st.text(text)  # data: never rendered as Markdown


def show_pair(left: str, right: str) -> None:
    for col, text, side in zip(st.columns(2), (left, right), CHOICES, strict=False):
        with col:
            st.markdown(f"**{side}**")
            st.text(text)


def score_form(item: tuple[str, ...], before: Score | None) -> tuple[dict[str, int], str] | None:
    """The 1–5 form on factual accuracy, coherence and conciseness; (values, comment) once saved."""
    earlier: dict[str, object] = {f"rate_{d}": getattr(before, d) if before else 3 for d in DIMENSIONS}
    earlier["rate_comment"] = before.comment if before else ""
    prefill(("score", *item), earlier)
    with st.form("score_form"):
        values = {d: st.slider(LABELS[d], 1, 5, key=f"rate_{d}") for d in DIMENSIONS}
        comment = st.text_area("Comment", key="rate_comment")
        saved = st.form_submit_button("Save rating", on_click=submitted, args=(item,))
    return (values, comment) if saved and for_this_item(item) else None


def pair_form(item: tuple[str, ...], before: str | None, comment: str = "") -> tuple[str, str] | None:
    """Which of two outputs is better (`before`: the side or Tie chosen earlier); (choice, comment) once saved
    with a choice: saved with none, the form asks for one."""
    prefill(("blind", *item), {"blind_choice": before, "blind_comment": comment})
    with st.form("blind_form"):
        choice = st.radio("Which output is better?", CHOICES, horizontal=True, index=None, key="blind_choice")
        comment = st.text_area("Comment", key="blind_comment")
        saved = st.form_submit_button("Save preference", on_click=submitted, args=(item,))
    if not saved or not for_this_item(item):
        return None
    if choice is None:
        st.warning("Choose Output 1, Output 2 or Tie, then save.")
        return None
    return choice, comment


def earlier_choice(before: Preference | None, left: str, right: str) -> str | None:
    """The side (or Tie) a stored preference chose, as the reviewer sees the pair now."""
    if before is None:
        return None
    if before.preferred == "tie":
        return "Tie"
    winner = before.candidate_a if before.preferred == "A" else before.candidate_b
    return CHOICES[0] if winner == left else CHOICES[1]


def preferred(choice: str, left: str, right: str, a: str) -> str:
    """A choice of side as stored: A, B or tie in the order (a, b)."""
    winner = {CHOICES[0]: left, CHOICES[1]: right}.get(choice)
    return "tie" if winner is None else ("A" if winner == a else "B")
