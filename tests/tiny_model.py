"""A random Llama-style model with a byte-level BPE tokenizer trained here, for tests: no download (the talking
model of talking_model.py is trained from it; test_bench measures latency on it)."""

from __future__ import annotations

from pathlib import Path

# The tiny test model's chat template: each turn as <|role|>content<|eos|>.
TINY_CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
                      "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_tiny_model(out: Path, seed: int = 0, vocab_size: int = 512, hidden: int = 128, layers: int = 2,
                     heads: int = 4, corpus: list[str] | None = None) -> Path:
    """A random Llama-style model with a byte-level BPE tokenizer trained here, for tests: no download."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = corpus or [
        "the quick brown fox jumps over the lazy dog", "my card has not arrived yet",
        "how do I reset my pin", "the passage does not say", "translate this sentence to French",
        "summary: you agree to the terms", "Which magazine was started first?",
    ] * 20
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out
