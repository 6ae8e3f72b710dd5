"""Hallucination detectors, one module each; adding one is a module and a line in DETECTORS."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from harness.config import DetectorSpec
from harness.detectors.base import Claim, Detector, Finding

DETECTORS = {
    "grounding": "harness.detectors.grounding:GroundingDetector",
    "nli": "harness.detectors.nli:NLIDetector",
    "judge": "harness.detectors.judge:JudgeDetector",
}


def detector_class(name: str) -> type[Detector]:
    module, _, cls = DETECTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_detector(spec: DetectorSpec, say: Callable[[str], None] = print) -> Detector:
    return detector_class(spec.name).from_spec(spec, say)


def describe(spec: DetectorSpec) -> dict[str, object]:
    """Name, version and settings of the detector a spec asks for, without loading its model."""
    out: dict[str, object] = {"name": spec.name, "version": detector_class(spec.name).version}
    return out | spec.model_dump(exclude={"name", "api_key_env"}, exclude_none=True)


def check_detector(spec: DetectorSpec) -> str | None:
    """Why the detector cannot run here, found before any generation starts, or None."""
    from harness import models

    if spec.name == "grounding":
        return None
    if spec.url:
        from harness.backends.openai_compat import unreachable

        return unreachable(spec.url)
    assert spec.model is not None
    problem = models.check_model_ref(spec.model)
    if problem or spec.model in models.EMBEDDED or Path(spec.model).expanduser().is_dir():
        return problem
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(spec.model, "config.json"), str):
        return (f"detector model {spec.model!r} is neither a local directory nor in the Hugging Face cache "
                f"(download it first: hf download {spec.model})")
    return None


__all__ = ["DETECTORS", "Claim", "Detector", "Finding", "check_detector", "describe", "detector_class",
           "make_detector"]
