"""Who is signed in, where reviewers have accounts: by the identity provider, where `.streamlit/secrets.toml`
configures Streamlit's OIDC sign-in (`[auth]`; the account named by the user's e-mail), else by the token of
a personal sign-in link (`harness reviewers add NAME`). Either way the account decides name and role; a typed
name never does."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from harness.ratings import RatingStore, Reviewer


def oidc_configured() -> bool:
    """Whether the app's secrets configure Streamlit's OIDC sign-in (`st.login`)."""
    try:
        return "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all
        return False


@dataclass(frozen=True)
class SignIn:
    reviewer: Reviewer | None
    problem: str = ""  # why nobody is signed in, for the page to say (the page's own words)
    detail: str = ""  # data behind the problem (an e-mail address), shown as plain text

    def explain(self) -> None:
        st.warning(self.problem)
        if self.detail:
            st.text(self.detail)


def current(store: RatingStore) -> SignIn:
    """The account of whoever opened the page, or why there is none."""
    if oidc_configured():
        if not st.user.is_logged_in:
            return SignIn(None, "Sign in with your organisation's account to rate.")
        email = str(st.user.get("email") or "")
        if st.user.get("email_verified") is False:  # a provider that lets users set an unverified address
            return SignIn(None, "Your identity provider has not verified the e-mail address you signed in with "
                                "(below): no rating without a verified address.", email)
        found = store.account(email)
        if found is None:
            return SignIn(None, "No reviewer account for the e-mail address you signed in with (below): an admin "
                                "adds it with `harness reviewers add EMAIL`.", email)
        return SignIn(found)
    found = store.signed_in(st.query_params.get("token"))
    if found is None:
        return SignIn(None, "Sign in with your personal link to rate: an admin prints it with `harness reviewers "
                            "add NAME`.")
    return SignIn(found)
