"""Ways of generating, one module each; importing a module registers its options model by name. The
modules import torch and vLLM only when a backend is opened, so `import harness` needs neither."""

from harness.backends import hf_local, openai_compat, vllm_server
from harness.backends.base import BACKENDS, Backend, BackendEnv, BackendOptions, Deployment, register
from harness.plugins import load

__all__ = ["BACKENDS", "Backend", "BackendEnv", "BackendOptions", "Deployment", "hf_local", "openai_compat",
           "register", "vllm_server"]

load("harness.backends")  # installed packages' own, after the built-in ones
