"""A model's shape (layers, heads, widths) for sizing it: from its own config.json where the folder, the prepared
embedded model or the Hugging Face cache has one, else from the shipped table of public configs (`shapes.json`),
so that a suite can be planned before a single weight is downloaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from harness import models
from harness.errors import HarnessError
from harness.schema import Settings

TABLE_FILE = Path(__file__).with_name("shapes.json")
# The linear layers of a decoder layer with a gated MLP (Llama, Qwen, Mistral, Gemma): what LoRA targets.
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelShape(Settings):
    """The figures of a config.json that memory depends on."""

    hidden_size: int = Field(gt=0)
    layers: int = Field(gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_positions: int = Field(gt=0)
    tie_word_embeddings: bool
    dtype: str = "bfloat16"  # as saved: what vLLM's `dtype: auto` serves

    def linear(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, q, kv, m = self.hidden_size, self.attention_heads * self.head_dim, self.kv_heads * self.head_dim, \
            self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}

    @property
    def parameters(self) -> int:
        """Weight matrices only: embeddings, each layer's linear layers, an untied output head (norms and biases
        are under 0.1% of any model here)."""
        per_layer = sum(i * o for i, o in self.linear().values())
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * self.hidden_size + self.layers * per_layer


class TableEntry(ModelShape):
    ids: list[str] = Field(min_length=1, description="hub ids and embedded names with this shape")
    source: str = Field(description="the config.json the figures were copied from")
    published_parameters: float = Field(gt=0, description="the model card's or hub page's parameter count")


@dataclass(frozen=True)
class FoundShape:
    shape: ModelShape
    source: str  # where it came from, as the plan prints it


@cache
def table() -> dict[str, TableEntry]:
    """The shipped table, by lower-cased id."""
    try:
        entries = [TableEntry.model_validate(e) for e in json.loads(TABLE_FILE.read_text())["models"]]
    except (ValidationError, KeyError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{TABLE_FILE}: not a table of model shapes ({exc})") from None
    return {model_id.lower(): entry for entry in entries for model_id in entry.ids}


def from_config(config: dict[str, Any], where: str) -> ModelShape:
    """The shape a transformers config.json describes (a multimodal one's text model)."""
    if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
        config = {"model_type": config.get("model_type", ""), **config["text_config"]}
    if any(key in config for key in ("num_local_experts", "n_routed_experts", "num_experts")):
        raise HarnessError(f"{where}: a mixture-of-experts model; the planner sizes dense decoders only")
    # transformers' own default where the file leaves it out: Gemma ties its embeddings, the others do not
    tied = config.get("tie_word_embeddings", str(config.get("model_type", "")).startswith("gemma"))
    try:
        heads = int(config["num_attention_heads"])
        return ModelShape(
            hidden_size=config["hidden_size"], layers=config["num_hidden_layers"], attention_heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            intermediate_size=config["intermediate_size"], vocab_size=config["vocab_size"],
            max_positions=config["max_position_embeddings"],
            tie_word_embeddings=tied,
            dtype=config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    except KeyError as exc:
        raise HarnessError(f"{where}: no {exc.args[0]}; not a decoder config the planner can size") from None
    except (ValidationError, TypeError, ValueError) as exc:
        raise HarnessError(f"{where}: unreadable figures ({exc})") from None


def shape_of(model: str) -> FoundShape | None:
    """The model's shape: its own config.json if it is here, else the table's, else None."""
    folder = models.local_dir(model)
    config = folder / "config.json" if folder is not None else models.hf_cached(model, "config.json")
    if config is not None:
        try:
            data = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HarnessError(f"{config}: unreadable config ({exc})") from None
        return FoundShape(from_config(data, str(config)), str(config))
    entry = table().get(model.lower())
    if entry is None:
        return None
    return FoundShape(ModelShape.model_validate(entry.model_dump(include=set(ModelShape.model_fields))),
                      "shipped table")
