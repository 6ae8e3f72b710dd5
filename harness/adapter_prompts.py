"""An adapter asked as it was trained: the prompt and chat-template setting its lineage.json records, wherever
the suite does not say otherwise, and for every candidate with an adapter a record of how it is prompted on each
task (run.json `prompting`). An adapter asked otherwise than it learned can score near chance, silently."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from harness.backends import BackendOptions
from harness.backends.hf_local import HFOptions
from harness.backends.openai_compat import ClientOptions
from harness.config import Candidate, PromptSpec, Suite, TaskSpec
from harness.errors import ConfigError
from harness.loading import validate
from harness.prompts import check_template
from harness.run_record import PromptingRecord, PromptSource
from harness.store import LINEAGE_FILE, read_lineage


class TrainedPrompt(BaseModel):
    """How an adapter was prompted in training, as the lineage.json `harness finetune` writes records it (the
    rest of the lineage is not read here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    task: str
    prompt: PromptSpec
    chat: bool  # whether training prompts went through the chat template (finetune.train_adapter's use_chat)


@dataclass(frozen=True)
class Prompting:
    """Where an adapter candidate's prompt on one task, and its chat-template setting, come from: its lineage (as
    it was trained) or the suite. An adapter asked otherwise than it learned can score near chance, so run.json
    records which, and why."""

    trained_prompt: PromptSpec | None  # the lineage's prompt, used on this task; None: the suite's
    chat: PromptSource
    why: str

    @property
    def prompt(self) -> PromptSource:
        return "suite" if self.trained_prompt is None else "lineage"

    def record(self) -> PromptingRecord:
        return PromptingRecord(prompt=self.prompt, chat=self.chat, why=self.why)


def as_trained(suite: Suite, suite_file: Path,
               tasks: list[TaskSpec]) -> tuple[Suite, dict[str, dict[str, Prompting]]]:
    """Each `adapter:` candidate prompted as its lineage says it was trained (prompt, chat template) wherever the
    suite does not say otherwise: the suite with those chat settings, and how every candidate with an adapter is
    prompted on each task it runs."""
    candidates: list[Candidate] = []
    prompting: dict[str, dict[str, Prompting]] = {}
    for i, cand in enumerate(suite.candidates):
        runs = [t for t in tasks if cand.runs(t.name)]
        trained = _trained_prompt(cand)
        if trained is None:
            candidates.append(cand)
            if cand.finetune is not None:
                why = f"trained in this run on task {cand.finetune.task} with the suite's prompt and chat setting"
                prompting[cand.name] = {t.name: Prompting(None, "suite", why) for t in runs}
            elif cand.adapter:
                why = f"the adapter has no {LINEAGE_FILE} (trained elsewhere): the suite's prompt and chat setting"
                prompting[cand.name] = {t.name: Prompting(None, "suite", why) for t in runs}
            continue
        cand, chat, chat_why = _chat_as_trained(cand, trained)
        candidates.append(cand)
        prompting[cand.name] = {}
        for task in runs:
            prompt, prompt_why = _prompt_as_trained(cand, task, trained, suite_file, i)
            prompting[cand.name][task.name] = Prompting(prompt, chat, f"{prompt_why}; {chat_why}")
    return suite.model_copy(update={"candidates": candidates}), prompting


def _trained_prompt(cand: Candidate) -> TrainedPrompt | None:
    """How the candidate's `adapter:` was prompted in training, from its lineage.json. None for an adapter trained
    elsewhere (no lineage), and for a `finetune:` candidate: trained in this run on the suite's own prompt."""
    if not cand.adapter:
        return None
    folder = Path(cand.adapter).expanduser()
    lineage = read_lineage(folder)
    return validate(TrainedPrompt, lineage, folder / LINEAGE_FILE) if lineage else None


def _chat_as_trained(cand: Candidate, trained: TrainedPrompt) -> tuple[Candidate, PromptSource, str]:
    """The candidate with the chat-template setting its adapter was trained with, unless the suite sets one."""
    options: BackendOptions
    if isinstance(cand.options, HFOptions):
        setting, options = "chat", cand.options.model_copy(update={"chat": trained.chat})
    elif isinstance(cand.options, ClientOptions):
        # The completions endpoint sends the plain prompt; the chat endpoint has the server apply the template.
        setting = "endpoint"
        options = cand.options.model_copy(update={"endpoint": "chat" if trained.chat else "completions"})
    else:
        return cand, "suite", f"backend {cand.backend} has no chat-template setting"
    state = "with" if trained.chat else "without"
    if setting in cand.options.model_fields_set:
        return cand, "suite", f"the suite's `{setting}` overrides the training's ({state} chat template)"
    return cand.model_copy(update={"options": options}), "lineage", f"{state} chat template, as trained"


def _prompt_as_trained(cand: Candidate, task: TaskSpec, trained: TrainedPrompt, suite_file: Path,
                       index: int) -> tuple[PromptSpec | None, str]:
    """(the lineage's prompt, or None for the suite's; why) for one task the adapter candidate runs."""
    if task.name in cand.prompts:
        return None, f"the suite's `prompts.{task.name}` overrides the prompt trained with"
    if trained.task != task.name:
        return None, f"trained on task {trained.task}, not {task.name}: the suite's prompt"
    try:
        check_template(task.model_copy(update={"prompt": trained.prompt}))
    except ConfigError as exc:
        raise ConfigError(suite_file, f"candidates.{index}.adapter",
                          f"the prompt it was trained with does not fit task {task.name} ({exc.message}); "
                          f"give one in `prompts.{task.name}`") from None
    return trained.prompt, "prompt as trained"
