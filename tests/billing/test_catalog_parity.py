"""Our rating gives LiteLLM's cost, to 1e-12, for every token-priced chat model it ships.

The catalog is the one inside the installed litellm package (pinned in requirements.txt). It is
imported with `import_prices bundled --include-free`; every model is then rated through
price_book_for + rate (the ingest path) and compared with LiteLLM for several token mixes:
plain input/output, with cached input, with cache writes, with both, and for models with a
context tier: exactly at the threshold, one token above it, and above it with cache tokens.

LiteLLM's conventions, read from litellm/litellm_core_utils/llm_cost_calc/utils.py
(generic_cost_per_token, _get_token_base_cost) and cost_calculator.cost_per_token, agree with
DESIGN.md section 6:
- `prompt_tokens` includes `prompt_tokens_details.cached_tokens` and `.cache_creation_tokens`;
  the uncached text is prompt - cached - cache_creation (our input_tokens convention).
- A tier (`input_cost_per_token_above_<N>k_tokens`) applies when prompt_tokens > N and then
  reprices the whole request; a tier rate of another kind that is missing falls back to the
  base rate of that kind (rating.py does the same: a missing tier cache rate takes the base
  cache rate, and only if that is missing too, the tier's input rate).
- One deliberate difference: LiteLLM charges 0 for cached or cache-write tokens when the model
  has no rate for them; DESIGN.md fixes "a missing cache rate means the input rate". For those
  mixes the cache tokens are given to LiteLLM as plain prompt tokens, which is what our rule
  means, so the comparison still checks every other part of the cost.

Which LiteLLM function is the reference, per model (no model is left out):
- litellm.cost_per_token(model, custom_llm_provider, usage_object) for all but the below.
- litellm generic_cost_per_token, where the provider handler departs from token math:
  * every fireworks_ai model: its handler prices all prompt tokens at the input rate and
    ignores the catalog's cache rates;
  * azure_ai/model_router: the azure_ai handler adds a routing fee on top of the tokens;
  * `<provider>/<provider>/...` names (openrouter/openrouter/auto, ...): cost_per_token strips
    the repeated provider segment as a router alias and then looks up another name.
- LiteLLM's generic token math (_get_token_base_cost and _calculate_input_cost, the steps
  generic_cost_per_token runs) applied to the catalog entry itself, where LiteLLM's model
  lookup cannot return that entry:
  * names shadowed by another entry (get_model_info("gemini-flash-latest", "gemini") returns
    "gemini/gemini-flash-latest", whose rates differ; also deepseek-chat, computer-use-preview, ...);
  * openrouter/qwen/qwen3.5-plus-02-15: get_model_info keeps only the 128k/200k/272k/512k tier
    keys and drops its 256k tier;
  * bedrock_mantle/*: the lookup imports botocore, an AWS SDK this project does not install.
  A separate test checks that this path equals generic_cost_per_token wherever both apply.

The whole catalog runs in a few seconds, so the test is not marked slow.
"""

import datetime as dt
import json
import math
import os
import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from billing.management.commands.import_prices import bundled_catalog_path
from billing.models import Price, PricePlan
from billing.rating import rate
from billing.selectors import price_book_for
from tests import factories

pytestmark = pytest.mark.django_db

TOLERANCE = Decimal("1e-12")
# LiteLLM computes in binary floats: above a few thousand currency units a float cannot hold
# 1e-12 (its spacing at 15,000 is 1.8e-12). There the bound is a few units in the last place
# of LiteLLM's result; only a handful of wandb entries reach such costs in these mixes.
FLOAT_ULPS = 4
EFFECTIVE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TOKEN_MODES = {"chat", "completion", "responses"}
CACHE_READ, CACHE_WRITE = "cache_read_input_token_cost", "cache_creation_input_token_cost"
_TIER_INPUT = re.compile(r"^input_cost_per_token(_above_(\d+)(k?)_tokens)$")
_RATE_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost)"
    r"(_above_\d+k?_tokens)?$"
)
GENERIC_PROVIDERS = {"fireworks_ai"}
GENERIC_MODELS = {"azure_ai/model_router"}

# (input_tokens, output_tokens, cached_input_tokens, cache_write_tokens), odd numbers on purpose.
MIXES = [
    (1_234, 567, 0, 0),
    (98_765, 4_321, 34_567, 0),
    (98_765, 4_321, 0, 12_345),
    (98_765, 4_321, 34_567, 12_345),
    (1, 0, 0, 0),
]


def tier_mixes(threshold: int) -> list[tuple[int, int, int, int]]:
    return [
        (threshold, 700, 1_000, 1_000),  # at the threshold: base rates
        (threshold + 1, 700, 0, 0),  # one above: the whole request at tier rates
        (threshold + 1_000, 700, 50_000, 20_000),
    ]


@pytest.fixture(scope="module")
def litellm():
    # The package fetches the catalog from the internet at import unless told to use its own
    # copy; the machines are offline and the comparison must use the shipped file anyway.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm  # noqa: PLC0415 (slow import, only for this module)

    return litellm


@pytest.fixture(scope="module")
def catalog() -> dict:
    return json.loads(bundled_catalog_path().read_text())


def token_models(catalog: dict) -> dict[str, dict]:
    return {
        name: entry
        for name, entry in catalog.items()
        if name != "sample_spec"
        and isinstance(entry, dict)
        and entry.get("mode") in TOKEN_MODES
        and entry.get("input_cost_per_token") is not None
        and entry.get("output_cost_per_token") is not None
    }


def tier_of(entry: dict) -> tuple[int, str] | None:
    """The context tier's threshold in tokens and its key suffix (`_above_200k_tokens`)."""
    for key, value in entry.items():
        match = _TIER_INPUT.match(key)
        if match and value is not None:
            return int(match.group(2)) * (1000 if match.group(3) else 1), match.group(1)
    return None


def mixes_for(entry: dict) -> list[tuple[int, int, int, int]]:
    tier = tier_of(entry)
    return MIXES + (tier_mixes(tier[0]) if tier is not None else [])


def litellm_usage(litellm, entry: dict, mix: tuple[int, int, int, int]):
    """A LiteLLM Usage for our token counts, in LiteLLM's (OpenAI) convention.

    Cache tokens of a kind the model has no rate for (at the tier that applies) are reported as
    plain prompt tokens: DESIGN.md's "missing cache rate = input rate" (see module docstring).
    """
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage  # noqa: PLC0415

    input_tokens, output_tokens, cached, cache_write = mix
    tier = tier_of(entry)
    suffix = tier[1] if tier is not None and input_tokens > tier[0] else None

    def has_rate(key: str) -> bool:
        if suffix is not None and entry.get(key + suffix) is not None:
            return True
        return entry.get(key) is not None

    cached = cached if has_rate(CACHE_READ) else 0
    cache_write = cache_write if has_rate(CACHE_WRITE) else 0
    details = None
    if cached or cache_write:
        details = PromptTokensDetailsWrapper(
            text_tokens=input_tokens - cached - cache_write, cached_tokens=cached, cache_creation_tokens=cache_write
        )
    return Usage(
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        prompt_tokens_details=details,
    )


def entry_cost(entry: dict, usage) -> float:
    """LiteLLM's generic token math on a catalog entry, without its model lookup."""
    from litellm.litellm_core_utils.llm_cost_calc import utils  # noqa: PLC0415

    details = utils.PromptTokensDetailsResult(
        cache_hit_tokens=0,
        cache_creation_tokens=0,
        cache_creation_token_details=None,
        text_tokens=usage.prompt_tokens,
        audio_tokens=0,
        image_tokens=0,
        character_count=0,
        image_count=0,
        video_length_seconds=0.0,
    )
    if usage.prompt_tokens_details:
        details = utils._parse_prompt_tokens_details(usage)
    prompt_rate, completion_rate, write_rate, write_rate_1h, read_rate = utils._get_token_base_cost(
        model_info=entry, usage=usage
    )
    prompt = utils._calculate_input_cost(
        prompt_tokens_details=details,
        model_info=entry,
        prompt_base_cost=prompt_rate,
        cache_read_cost=read_rate,
        cache_creation_cost=write_rate,
        cache_creation_cost_above_1hr=write_rate_1h,
    )
    return prompt + float(usage.completion_tokens) * completion_rate


def reference(litellm, name: str, entry: dict) -> str:
    """Which LiteLLM calculation prices `name` (see the module docstring)."""
    provider = entry["litellm_provider"]
    try:
        info = litellm.get_model_info(model=name, custom_llm_provider=provider)
    except Exception:  # the lookup itself fails (bedrock_mantle needs botocore)
        return "entry"
    rate_keys = [key for key in entry if _RATE_KEY.match(key)]
    if info["key"] != name or any(info.get(key) != entry[key] for key in rate_keys):
        return "entry"
    if provider in GENERIC_PROVIDERS or name in GENERIC_MODELS or name.startswith(f"{provider}/{provider}/"):
        return "generic"
    return "provider"


def litellm_cost(litellm, how: str, name: str, entry: dict, usage) -> Decimal:
    from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token  # noqa: PLC0415

    provider = entry["litellm_provider"]
    if how == "provider":
        prompt, completion = litellm.cost_per_token(
            model=name, custom_llm_provider=provider, usage_object=usage, call_type="completion"
        )
        total = prompt + completion
    elif how == "generic":
        prompt, completion = generic_cost_per_token(model=name, usage=usage, custom_llm_provider=provider)
        total = prompt + completion
    else:
        total = entry_cost(entry, usage)
    return Decimal(total)  # the float's exact value


def close(ours: Decimal, theirs: Decimal) -> bool:
    bound = max(TOLERANCE, Decimal(math.ulp(float(theirs))) * FLOAT_ULPS)
    return abs(theirs - ours) <= bound


def test_every_catalog_chat_model_rates_like_litellm(litellm, catalog):
    models = token_models(catalog)
    for name, entry in models.items():  # both sides read the same catalog
        assert {k: v for k, v in litellm.model_cost[name].items() if _RATE_KEY.match(k)} == {
            k: v for k, v in entry.items() if _RATE_KEY.match(k)
        }, name

    out = StringIO()
    call_command(
        "import_prices",
        "bundled",
        "--plan",
        "parity",
        "--include-free",
        "--effective-from",
        EFFECTIVE.isoformat(),
        stdout=out,
    )
    imported = set(Price.objects.filter(plan__slug="parity").values_list("model_pattern", flat=True))
    assert imported == set(models), "every token-priced chat model is imported"

    tenant = factories.TenantFactory(price_plan=PricePlan.objects.get(slug="parity"))
    book = price_book_for(plan_id=tenant.price_plan_id, tenant_id=tenant.pk, models=imported)
    at = EFFECTIVE + dt.timedelta(seconds=1)

    by_reference: dict[str, list[str]] = {"provider": [], "generic": [], "entry": []}
    compared = folded = tiered = loose = 0
    failures = []
    for name, entry in sorted(models.items()):
        how = reference(litellm, name, entry)
        by_reference[how].append(name)
        terms = book.terms_for(name, at)
        assert terms is not None, name
        tiered += tier_of(entry) is not None
        for mix in mixes_for(entry):
            input_tokens, output_tokens, cached, cache_write = mix
            ours = rate(
                terms,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached,
                cache_write_tokens=cache_write,
            )
            usage = litellm_usage(litellm, entry, mix)
            details = usage.prompt_tokens_details
            reported = (details.cached_tokens or 0) + (details.cache_creation_tokens or 0) if details else 0
            folded += reported != cached + cache_write
            theirs = litellm_cost(litellm, how, name, entry, usage)
            compared += 1
            if not close(ours, theirs):
                failures.append(f"{name} [{how}] {mix}: ours {ours} litellm {theirs}")
            loose += abs(theirs - ours) > TOLERANCE

    assert not failures, f"{len(failures)} mismatches, first: " + "\n".join(failures[:20])
    counts = {how: len(names) for how, names in by_reference.items()}
    assert len(models) >= 1500, counts
    assert counts["provider"] >= 1800, counts
    assert counts["entry"] <= 30, by_reference["entry"]
    assert tiered >= 50
    assert compared >= len(models) * len(MIXES)
    assert folded > 0  # the missing-cache-rate convention was exercised
    assert loose <= 10, f"{loose} comparisons needed the float allowance"


def test_entry_math_is_litellms_generic_cost(litellm, catalog):
    """The lookup-free path used for a few models equals generic_cost_per_token elsewhere."""
    from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token  # noqa: PLC0415

    checked = 0
    for name, entry in sorted(token_models(catalog).items()):
        if reference(litellm, name, entry) == "entry":
            continue
        for mix in mixes_for(entry):
            usage = litellm_usage(litellm, entry, mix)
            prompt, completion = generic_cost_per_token(
                model=name, usage=usage, custom_llm_provider=entry["litellm_provider"]
            )
            assert close(Decimal(entry_cost(entry, usage)), Decimal(prompt + completion)), (name, mix)
            checked += 1
    assert checked > 5000
