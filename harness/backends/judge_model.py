"""What every LLM judge shares (the `judge` hallucination detector and the judge metrics): the model it runs on,
checked, opened and closed one way, and how its verdict is read from a reply.

A verdict counts only when the reply gives it as it was asked for: on one line of its own, in the exact form
(spaces, a closing full stop and markdown bold aside), once, and without repeating what the judge was shown. A
small model often echoes its prompt: the system prompt names every verdict form, and the user turn holds the
answer being judged, which the candidate wrote and which may itself hold a verdict line. Read loosely, an echo of
either is a verdict. No such line, two of them, or an echo is no verdict (unparsed), never guessed.
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


def verdict_line(raw: str, line: re.Pattern[str], *, system: str, instructions: Iterable[str] = (),
                 headings: re.Pattern[str] | None = None, shown: Iterable[str] = ()) -> re.Match[str] | None:
    """The reply's one verdict: its only line that `line` matches whole, or None when there is none, more than
    one, or the reply is an echo of what the judge was shown:

    * of the system prompt: it holds any of the `instructions` (text only the prompt has), or one of its lines is
      a line of the `system` prompt other than a verdict form (`or`, a placeholder, a rubric line);
    * of the user turn: one of its lines is a heading the user turn is written with (`headings`, matched whole
      against the line), or its verdict line is also a line of an answer `shown` to the judge (the candidate's
      text: a judge reading it out would give the candidate's verdict as its own)."""
    said = _plain(raw)
    if any(_plain(text) in said for text in instructions):
        return None
    lines = [_line(text) for text in raw.splitlines()]
    prompt_lines = {_plain(text) for text in map(_line, system.splitlines()) if text and not line.fullmatch(text)}
    if any(_plain(text) in prompt_lines for text in lines if text):
        return None
    if headings is not None and any(headings.fullmatch(text) for text in lines):
        return None
    found = [m for text in lines if (m := line.fullmatch(text))]
    if len(found) != 1:
        return None
    verdict = _verdict(found[0])
    if any(_verdict(m) == verdict for answer in shown for text in answer.splitlines()
           if (m := line.fullmatch(_line(text)))):
        return None
    return found[0]


def _line(text: str) -> str:
    """A line as a verdict is read from it: without bold, surrounding spaces and a closing full stop."""
    return text.replace("*", "").strip().rstrip(".").rstrip()


def _verdict(found: re.Match[str]) -> tuple[str, ...]:
    return tuple(group.upper() for group in found.groups() if group is not None)


def _plain(text: str) -> str:
    """Lower case, without bold and with white space as single spaces, so that a re-wrapped echo is still found."""
    return " ".join(text.replace("*", "").split()).lower()
