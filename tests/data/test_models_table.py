"""The model table: exact published parameter counts, lookups, families."""

import pytest

from data.models import MODELS, get_spec, normalize_family


@pytest.mark.parametrize("spec", [m for m in MODELS.values() if m.expected_total], ids=lambda m: m.name)
def test_param_count_matches_published_total(spec):
    assert spec.params_total == spec.expected_total


def test_tied_embedding_counted_once():
    tied, untied = get_spec("llama-3.2-1b"), get_spec("llama-3.1-8b")
    assert tied.params_total - tied.params_nonembed == tied.vocab * tied.hidden
    assert untied.params_total - untied.params_nonembed == 2 * untied.vocab * untied.hidden


def test_lookup_errors_name_known_models():
    with pytest.raises(KeyError, match="llama-3.1-8b"):
        get_spec("llama-9b")
    assert get_spec("LLaMA-3.1-8B").name == "llama-3.1-8b"
    assert normalize_family("Qwen") == "qwen2.5"
    with pytest.raises(KeyError, match="allowed"):
        normalize_family("mistral")
