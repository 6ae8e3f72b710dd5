"""Ways of generating. Each backend is one module, registered here by name and imported lazily,
so `import harness` works on a machine without torch, vLLM or a GPU."""

from harness.backends.base import Backend, Completion, Request, backend_factory, backend_names, register


@register("hf")
def _hf():
    from harness.backends.hf_local import HFLocalBackend

    return HFLocalBackend


@register("openai")
def _openai():
    from harness.backends.openai_compat import OpenAICompatBackend

    return OpenAICompatBackend


__all__ = ["Backend", "Completion", "Request", "backend_factory", "backend_names", "register"]
