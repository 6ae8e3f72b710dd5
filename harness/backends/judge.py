"""What every LLM judge shares (the `judge` hallucination detector and the judge metrics): the model it runs on,
checked, opened and closed one way, and how its verdict is read from a reply.

A verdict counts only when the reply gives it as it was asked for: on one line of its own, in the exact form
(spaces, a closing full stop and markdown bold aside), once, and without repeating the instructions. A small model
often echoes its prompt, and the prompt names every verdict form: read loosely, an echo is a verdict. No such
line, two of them, or an echo is no verdict (unparsed), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from pydantic import Field

from harness.backends.base import Backend, BackendEnv, Deployment
from harness.backends.hf_local import HFOptions
from harness.backends.openai_compat import OpenAIOptions, unreachable
from harness.models import model_problem
from harness.records import Completion, Request
from harness.schema import Settings


class JudgeModel(Settings):
    """The judging model: an embedded name or local folder run in process, or the served model's name with `url`."""

    model: str = Field(description="the judging model (embedded name or local directory, or the served model's "
                       "name with `url`)")
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server")
    api_key_env: str | None = Field(None, description="environment variable holding the server's API key")

    def deployment(self) -> Deployment:
        # The judge runs on a backend like any candidate, with its default settings: in process, or served.
        options = OpenAIOptions(url=self.url, api_key_env=self.api_key_env) if self.url else HFOptions()
        return Deployment("judge", self.model, None, options)

    def problem(self) -> str | None:
        """Why the judge cannot run here (a server that does not answer, weights not on this machine), or None."""
        return unreachable(self.url) if self.url else model_problem(self.model)

    def open(self, say: Callable[[str], None]) -> OpenJudge:
        return OpenJudge.start(self.deployment(), say)


class OpenJudge:
    """A judge's backend with the surroundings it was opened in; `close` releases both."""

    def __init__(self, backend: Backend, env: BackendEnv) -> None:
        self.backend, self.env = backend, env

    @classmethod
    def start(cls, target: Deployment, say: Callable[[str], None]) -> OpenJudge:
        """A judge on any deployment: its own model, or a suite candidate's."""
        env = BackendEnv([target], say)
        try:
            return cls(target.options.open(target, env), env)
        except BaseException:
            env.close()
            raise

    def generate(self, requests: list[Request], task: str) -> Iterator[Completion]:
        return self.backend.generate(requests, "judge", task)

    def close(self) -> None:
        self.backend.close()
        self.env.close()


def verdict_line(raw: str, line: re.Pattern[str], instructions: Iterable[str]) -> re.Match[str] | None:
    """The reply's one verdict: its only line that `line` matches whole, or None when there is none, more than
    one, or the reply repeats any of the `instructions` (text only the prompt has)."""
    said = _plain(raw)
    if any(_plain(text) in said for text in instructions):
        return None
    lines = (text.replace("*", "").strip().rstrip(".").rstrip() for text in raw.splitlines())
    found = [m for text in lines if (m := line.fullmatch(text))]
    return found[0] if len(found) == 1 else None


def _plain(text: str) -> str:
    """Lower case, without bold and with white space as single spaces, so that a re-wrapped echo is still found."""
    return " ".join(text.replace("*", "").split()).lower()
