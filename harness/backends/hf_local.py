"""In-process generation with transformers (and a peft LoRA adapter), batched, with per-request timing.

Timing comes from the generation loop itself: a stopping criterion is called once per decoding step,
so each step's wall-clock time is known; a request's first token, inter-token gaps and end follow from
the step at which its sequence finished.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import Field

from harness import models
from harness.backends.base import Backend, BackendEnv, BackendOptions, Deployment, register, truncate_at_stop
from harness.errors import HarnessError
from harness.models import check_adapter_dir
from harness.records import Completion, Request


@register
class HFOptions(BackendOptions):
    """In process with transformers (+ peft): the embedded models, local folders, hub ids in the cache."""

    backend: Literal["hf"] = "hf"
    batch_size: Annotated[int, Field(gt=0)] = 8
    chat: bool | None = Field(None, description="use the chat template; default: when the model has one")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    local_weights = True
    packages = ("torch", "transformers", "peft")
    # A batch pads on the left under an attention mask: it changes the speed, not what is asked.
    output_neutral = frozenset({"batch_size"})

    def resolved_dtype(self) -> str:
        return models.native_dtype() if self.dtype == "auto" else self.dtype

    def answer_settings(self) -> dict[str, Any]:
        return {**super().answer_settings(), "dtype": self.resolved_dtype()}

    def chat_template(self) -> bool | None:
        return self.chat

    def in_process(self) -> BackendOptions:
        return self

    def open(self, target: Deployment, env: BackendEnv) -> Backend:
        return HFLocalBackend(models.resolve(target.model, env.say), adapter=target.adapter, dtype=self.dtype,
                              batch_size=self.batch_size, chat=self.chat)


def _step_clock() -> Any:
    """A stopping criterion that records when each decoding step ends and never stops generation itself."""
    import torch
    from transformers import StoppingCriteria

    class StepClock(StoppingCriteria):
        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> Any:
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StepClock()


class HFLocalBackend:
    def __init__(self, model: str, adapter: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 chat: bool | None = None, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        # "auto" is what this machine computes natively, not the dtype the weights were saved in (bfloat16
        # for the embedded models, which an AVX2-only CPU would emulate).
        self.dtype = models.native_dtype() if dtype == "auto" else dtype
        torch_dtype = getattr(torch, self.dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise HarnessError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
        if adapter:
            from peft import PeftModel

            problem = check_adapter_dir(adapter)
            if problem:
                raise HarnessError(problem)
            try:
                self.model = PeftModel.from_pretrained(self.model, adapter)
            except (RuntimeError, ValueError, KeyError) as exc:  # e.g. an adapter trained on another base model
                raise HarnessError(f"cannot load adapter {adapter} on {model}: {str(exc).splitlines()[0]}") from None
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat and not has_template:
            raise HarnessError(f"model {model!r} has no chat template; set `chat: false`")
        self.chat = has_template if chat is None else chat
        self.batch_size = batch_size
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None) or 4096

    def _prompt_text(self, request: Request) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return request.prompt

    def generate(self, requests: list[Request], candidate: str, task: str) -> Iterator[Completion]:
        texts = [self._prompt_text(r) for r in requests]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=not self.chat)["input_ids"]]
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(requests)), key=lambda i: lengths[i])
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            too_long = [i for i in batch if lengths[i] + requests[i].max_new_tokens > self.max_positions]
            for i in too_long:
                yield Completion(requests[i].example_id, candidate, task, "", prompt_tokens=lengths[i],
                                 error=f"prompt of {lengths[i]} tokens + {requests[i].max_new_tokens} new "
                                       f"exceeds the model's {self.max_positions} positions")
            batch = [i for i in batch if i not in too_long]
            if batch:
                yield from self._generate_batch([requests[i] for i in batch], [texts[i] for i in batch],
                                                candidate, task)

    def _generate_batch(self, requests: list[Request], texts: list[str], candidate: str,
                        task: str) -> Iterator[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        clock = _step_clock()
        max_new = max(r.max_new_tokens for r in requests)
        sampling = requests[0].temperature > 0
        stop = sorted({s for r in requests for s in r.stop})
        # Stop strings end each sequence early (the batch ends when all have), saving decoding steps.
        stop_args = {"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **enc, max_new_tokens=max_new, do_sample=sampling,
                    temperature=requests[0].temperature if sampling else None, top_p=None, top_k=None,
                    stopping_criteria=StoppingCriteriaList([clock]), pad_token_id=self.tokenizer.pad_token_id,
                    **stop_args,
                )
        except (RuntimeError, ValueError) as exc:
            for r in requests:
                yield Completion(r.example_id, candidate, task, "", error=f"{type(exc).__name__}: {exc}")
            return
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        eos_ids = self.model.generation_config.eos_token_id
        # A finished sequence is padded while the rest of its batch decodes.
        eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) | {self.tokenizer.eos_token_id,
                                                                          self.tokenizer.pad_token_id}
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        for row, request in enumerate(requests):
            ids = new_tokens[row].tolist()[: request.max_new_tokens]
            n = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
            content = [t for t in ids[:n] if t not in eos]
            steps = clock.times[:n]
            text = truncate_at_stop(self.tokenizer.decode(content, skip_special_tokens=True), request.stop)
            yield Completion(
                example_id=request.example_id, candidate=candidate, task=task, text=text.strip(),
                prompt_tokens=int(prompt_lens[row]), completion_tokens=len(content),
                ttft_s=steps[0] - started if steps else None,
                itl_s=[b - a for a, b in pairwise(steps)],
                e2e_s=(steps[-1] if steps else time.perf_counter()) - started,
            )

    def close(self) -> None:
        del self.model
