"""harness: evaluate fine-tuned language models against their bases and big baselines, with evidence."""

from harness.errors import ConfigError, HarnessError

__version__ = "0.1.0"
__all__ = ["ConfigError", "HarnessError", "__version__"]
