"""Dollars from tokens: the actual cost of a call from its `usage`, and a worst case before it.

The worst case must never be below what the call can cost, because the daily budget is
enforced on it before the call. It prices every prompt byte as one token (a Claude
token always covers at least one byte) at the dearer of the input and cache-write
rates, and the whole max_tokens at the output rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otel_ai.config import Price

PER_TOKEN = 1e-6  # prices are per million tokens
# For estimates only (the real count comes back in `usage`): newer Claude tokenizers
# give about 3 to 4 characters per token on English and JSON; 3 errs on the dear side.
CHARS_PER_TOKEN = 3.0
REQUEST_OVERHEAD_TOKENS = 64  # role markers and message framing around the prompt


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    @classmethod
    def from_response(cls, usage: Any) -> Usage:
        """From the SDK's Usage object (cache fields may be None)."""
        return cls(
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            cache_write_tokens=int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
            cache_read_tokens=int(getattr(usage, "cache_read_input_tokens", 0) or 0),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cache_write_tokens + other.cache_write_tokens,
                     self.cache_read_tokens + other.cache_read_tokens)

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_creation_input_tokens": self.cache_write_tokens,
                "cache_read_input_tokens": self.cache_read_tokens}


def actual_cost(price: Price, usage: Usage) -> float:
    # input_tokens excludes cached tokens in the Messages API, so the four parts add up.
    return PER_TOKEN * (usage.input_tokens * price.input + usage.output_tokens * price.output
                        + usage.cache_write_tokens * price.cache_write + usage.cache_read_tokens * price.cache_read)


def worst_case_cost(price: Price, prompt_bytes: int, max_tokens: int) -> float:
    input_rate = max(price.input, price.cache_write)
    return PER_TOKEN * ((prompt_bytes + REQUEST_OVERHEAD_TOKENS) * input_rate + max_tokens * price.output)


def typical_cost(price: Price, prompt_chars: int, system_chars: int, output_tokens: int) -> float:
    """The expected cost of a call whose system prompt is already in the prompt cache."""
    return PER_TOKEN * ((prompt_chars / CHARS_PER_TOKEN) * price.input
                        + (system_chars / CHARS_PER_TOKEN) * price.cache_read + output_tokens * price.output)
