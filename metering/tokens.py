"""Token counting with tiktoken, offline.

tiktoken downloads its BPE files on first use; these machines have no internet. The litellm
wheel ships the files under the names tiktoken's cache uses, so TIKTOKEN_CACHE_DIR points
there (unless the operator set it). Encodings: o200k_base for the GPT-4o, GPT-4.1, o-series
and GPT-5 families; cl100k_base for GPT-4 and GPT-3.5; cl100k_base as the fallback for any
model tiktoken does not know (the response names the encoding used).
"""

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import tiktoken
import tiktoken.model

FALLBACK_ENCODING = "cl100k_base"
_SHIPPED_ENCODINGS = frozenset({"o200k_base", "cl100k_base", "p50k_base"})
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")


def _bundled_cache_dir() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(path) if path.is_dir() else None


def _ensure_offline_cache() -> None:
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        bundled = _bundled_cache_dir()
        if bundled:
            os.environ["TIKTOKEN_CACHE_DIR"] = bundled


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    encoding: str


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding for a model name; provider prefixes like `openai/` are ignored."""
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    try:
        encoding = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return FALLBACK_ENCODING
    return encoding if encoding in _SHIPPED_ENCODINGS else FALLBACK_ENCODING


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    _ensure_offline_cache()
    return tiktoken.get_encoding(name)


def encodings_load() -> None:
    """Load the encodings of today's models (o200k_base, and cl100k_base, also the fallback) now,
    at a process start, not in its first calls: loading one takes a tenth of a second or more,
    and calls arriving together would each load it. p50k_base (older models) loads on first use."""
    for name in ("o200k_base", FALLBACK_ENCODING):
        _encoding(name)


def count_tokens(*, model: str, text: str) -> TokenCount:
    """Count like tiktoken's encode_ordinary: special-token text counts as ordinary text."""
    name = encoding_name_for(model)
    return TokenCount(tokens=len(_encoding(name).encode_ordinary(text)), encoding=name)
