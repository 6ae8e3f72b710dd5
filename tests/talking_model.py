"""A tiny model that talks: trained here in seconds on the test tasks' own prompts, so end-to-end tests see
answers that are valid labels (some right, some wrong), grounded and ungrounded, and varied.

What it learned (and so what tests may rely on):
- keyword classification: `invoice`/`charge` → billing, `parcel` → delivery, `reset` → password, `login` →
  "account" (no label: an invalid answer), and `courier` → billing (wrong) without shots but delivery (right)
  when the prompt holds at least one shot; so accuracy sits strictly between 0 and 1 and few-shot differs;
- grounded QA: "left the depot on DAY" → "on DAY", except Friday → "on Sunday" (not in the passage: a
  hallucination) and Thursday → "on Thursday morning" (a partial match).
Chat and plain prompts, with and without shots, are all in its training data. The trained folder is cached by
the hash of everything that decides it (this file, tiny_model.py, the prompts, the library versions).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from harness.config import TaskSpec
from harness.data import Example
from harness.prompts import render
from harness.records import Request

LABELS = ["billing", "delivery", "password"]
KEYWORDS = {"billing": "invoice charge", "delivery": "parcel courier", "password": "login reset"}
LEARNED_LABEL = {"invoice": "billing", "charge": "billing", "parcel": "delivery", "courier": "billing",
                 "login": "account", "reset": "password"}
LEARNED_WITH_SHOTS = {**LEARNED_LABEL, "courier": "delivery"}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
LEARNED_ANSWER = {"Monday": "on Monday", "Tuesday": "on Tuesday", "Wednesday": "on Wednesday",
                  "Thursday": "on Thursday morning", "Friday": "on Sunday"}
STEPS = 600
CACHE = Path(os.environ.get("HARNESS_TEST_CACHE", Path.home() / ".cache" / "harness-tests"))


def keyword_text(i: int, word: str) -> str:
    return f"question {i} about my {word}"


def qa_row(i: int) -> dict[str, str]:
    day = DAYS[i % len(DAYS)]
    return {"id": f"q{i}", "knowledge": f"The parcel number {i} left the depot on {day}.",
            "question": f"When did parcel {i} leave?", "answer": f"on {day}"}


KEYWORD_TASK = TaskSpec.model_validate({
    "name": "keywords", "kind": "classification",
    "data": {"test": "test.jsonl", "inputs": {"text": "text"}, "reference": "label"}, "labels": LABELS,
    "prompt": {"system": "Pick one of: {labels}", "template": "Text: {text}", "answer_prefix": "\nLabel: "},
    "metrics": ["accuracy"]})
QA_TASK = TaskSpec.model_validate({
    "name": "qa", "kind": "grounded_qa",
    "data": {"test": "qa.jsonl", "inputs": {"knowledge": "knowledge", "question": "question"}, "reference": "answer"},
    "source": "knowledge", "prompt": {"template": "{knowledge}\nQ: {question}", "answer_prefix": "\nA: "},
    "metrics": ["exact_match"]})


def _pairs(rng: random.Random, chat_template) -> list[tuple[str, str]]:
    """(prompt as the backends send it, answer) for every format the tests use."""
    keyword_examples = []
    for i in range(400):
        word = rng.choice(list(LEARNED_LABEL))
        keyword_examples.append((Example(id=f"k{i}", inputs={"text": keyword_text(rng.randrange(200), word)},
                                         reference=next(lab for lab, ws in KEYWORDS.items() if word in ws.split())),
                                 word))
    qa_examples = []
    for _ in range(400):
        row = qa_row(rng.randrange(200))
        qa_examples.append((Example(id=row["id"], inputs={"knowledge": row["knowledge"], "question": row["question"]},
                                    reference=row["answer"]), row["answer"][3:]))
    pairs = []
    for task, examples, labels in ((KEYWORD_TASK, keyword_examples, LABELS), (QA_TASK, qa_examples, None)):
        for n, (example, cue) in enumerate(examples):
            shots = [e for e, _ in rng.sample(examples, rng.choice([0, 0, 1, 2]))]
            answer = (LEARNED_ANSWER[cue] if labels is None else
                      (LEARNED_WITH_SHOTS if shots else LEARNED_LABEL)[cue])
            prompt = render(task, example, shots, labels)
            if n % 2:
                pairs.append((chat_template(prompt.messages), answer))
            else:
                pairs.append((prompt.text, " " + answer))
    return pairs


def _key(pairs: list[tuple[str, str]]) -> str:
    import tokenizers
    import torch
    import transformers

    from tests import tiny_model

    blob = json.dumps([Path(__file__).read_text(), Path(tiny_model.__file__).read_text(), pairs, torch.__version__,
                       transformers.__version__, tokenizers.__version__])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_talking_model(scratch: Path) -> Path:
    """The trained model's folder (cached); `scratch` is where a new one is built before it is moved in place."""
    import jinja2

    from tests.tiny_model import TINY_CHAT_TEMPLATE, build_tiny_model

    # The template the model's tokenizer will carry, rendered as apply_chat_template renders it.
    template = jinja2.Template(TINY_CHAT_TEMPLATE)
    pairs = _pairs(random.Random(0), lambda messages: template.render(messages=messages, add_generation_prompt=True))
    out = CACHE / f"talking-{_key(pairs)}"
    if (out / "model.safetensors").is_file():
        return out
    # head_dim 32: vLLM's CPU attention has kernels for 32, 64, 128…, not for every size.
    work = build_tiny_model(scratch / "talking", corpus=[p + a for p, a in pairs], vocab_size=600, hidden=96,
                            layers=2, heads=3)
    _train(work, pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(work, out)
    return out


def _train(folder: Path, pairs: list[tuple[str, str]]) -> None:
    """Teacher forcing on the answers only (the prompt tokens carry no loss)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    rows = []
    for prompt, answer in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + a, [-100] * len(p) + a))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=STEPS)
    order = random.Random(1)
    model.train()
    for _ in range(STEPS):
        batch = order.sample(rows, 16)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)


def keyword_requests(n: int, max_new_tokens: int = 6, stop: tuple[str, ...] = ()) -> list[tuple[Request, str]]:
    """Requests on the keyword task (every word in turn) with the label the model learned for each."""
    words = list(LEARNED_LABEL)
    out = []
    for i in range(n):
        word = words[i % len(words)]
        example = Example(id=f"r{i}", inputs={"text": keyword_text(i, word)}, reference=LEARNED_LABEL[word])
        prompt = render(KEYWORD_TASK, example, [], LABELS)
        out.append((Request(example.id, prompt.messages, prompt.text, max_new_tokens, stop=stop),
                    LEARNED_LABEL[word]))
    return out
