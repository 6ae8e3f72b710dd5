import pytest

from harness.backends.hf_local import HFLocalBackend
from harness.errors import HarnessError
from tests.talking_model import keyword_requests


def _requests(n, max_new=6, stop=()):
    return [request for request, _ in keyword_requests(n, max_new, stop)]


@pytest.fixture(scope="module")
def backend(talking_model):
    return HFLocalBackend(str(talking_model), batch_size=2)


def test_generates_one_completion_per_request_with_timing(backend):
    out = list(backend.generate(_requests(5), "tiny", "t"))
    assert sorted(c.example_id for c in out) == [f"r{i}" for i in range(5)]
    for c in out:
        assert c.ok and c.candidate == "tiny" and c.task == "t"
        assert 0 <= c.completion_tokens <= 6
        assert c.prompt_tokens > 5
        assert 0 < c.ttft_s <= c.e2e_s
        assert len(c.itl_s) in (c.completion_tokens, max(c.completion_tokens - 1, 0))
        assert all(gap > 0 for gap in c.itl_s)


def test_greedy_is_deterministic_and_answers_what_the_model_learned(backend):
    requests = keyword_requests(6)
    first = {c.example_id: c.text for c in backend.generate([r for r, _ in requests], "tiny", "t")}
    again = {c.example_id: c.text for c in backend.generate([r for r, _ in reversed(requests)], "tiny", "t")}
    assert first == again == {r.example_id: learned for r, learned in requests}
    assert len(set(first.values())) == 4  # three labels and one invalid answer


def test_chat_template_and_plain_prompt_differ(talking_model, backend):
    plain = HFLocalBackend(str(talking_model), batch_size=2, chat=False)
    ((request, learned),) = keyword_requests(1)
    chat_tokens = len(backend.tokenizer(backend._prompt_text(request), add_special_tokens=False)["input_ids"])
    plain_tokens = len(plain.tokenizer(request.prompt)["input_ids"])
    assert backend.chat and not plain.chat
    assert backend._prompt_text(request).startswith("<|system|>") and plain._prompt_text(request) == request.prompt
    chat_out = next(iter(backend.generate([request], "a", "t")))
    plain_out = next(iter(plain.generate([request], "a", "t")))
    assert (chat_out.prompt_tokens, plain_out.prompt_tokens) == (chat_tokens, plain_tokens)
    assert chat_out.text == plain_out.text == learned


def test_prompt_too_long_is_recorded_not_raised(backend):
    out = list(backend.generate(_requests(2, max_new=5000), "tiny", "t"))
    assert all(not c.ok and "exceeds the model's 2048 positions" in c.error for c in out)


def test_lora_adapter_changes_the_output(talking_model, tmp_path, backend):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(talking_model)
    # Random (not zero) B matrices so the adapter visibly changes the model.
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    tuned = HFLocalBackend(str(talking_model), adapter=str(tmp_path / "adapter"), batch_size=2)
    reqs = _requests(4)
    base_out = {c.example_id: c.text for c in backend.generate(reqs, "base", "t")}
    tuned_out = {c.example_id: c.text for c in tuned.generate(reqs, "ft", "t")}
    assert base_out != tuned_out


def test_bad_adapter_and_model_are_clear_errors(talking_model, tmp_path):
    with pytest.raises(HarnessError, match=r"no adapter_config\.json"):
        HFLocalBackend(str(talking_model), adapter=str(tmp_path))
    with pytest.raises(HarnessError, match="cannot load model"):
        HFLocalBackend(str(tmp_path))


@pytest.mark.parametrize(("native_bf16", "expected"), [(False, "float32"), (True, "bfloat16")])
def test_auto_dtype_follows_what_the_machine_computes_natively(talking_model, monkeypatch, native_bf16, expected):
    """Not the dtype the weights were saved in: an AVX2-only CPU emulates bfloat16 about five times slower."""
    import torch

    from harness.finetune import training_dtype
    from harness.models import native_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native_bf16)
    assert native_dtype() == expected
    loaded = HFLocalBackend(str(talking_model), dtype="auto")
    assert loaded.dtype == expected and next(loaded.model.parameters()).dtype == getattr(torch, expected)
    assert training_dtype("auto") == getattr(torch, expected)  # one rule for generation and training
    assert HFLocalBackend(str(talking_model), dtype="float32").model.dtype == torch.float32  # an explicit choice stays
