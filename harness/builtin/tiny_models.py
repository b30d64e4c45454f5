"""Tiny offline causal LMs in Hugging Face format, built locally and cached on disk.

The test suite and the default `harness run` (no --model given) need real models that load through
`AutoModelForCausalLM` / `AutoTokenizer` and lm-eval's hf backend, yet there is no model hub to
download from. So we train a small byte-level BPE tokenizer on local text and save a randomly
initialised Llama next to it. The weights are random, so scores are meaningless; what matters is that
every code path (tokenisation, chat templates, log-likelihoods, generation) runs on a genuine model.

Builds are keyed by a fingerprint of every input, so a changed recipe never reuses a stale entry, and
they are written to a temporary sibling folder and renamed into place, so a crash or a concurrent
builder never leaves a half-written folder that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.files import cache_root

logger = logging.getLogger(__name__)

# Bump whenever the recipe changes in a way the other fingerprint inputs do not capture.
BUILDER_VERSION = "1"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (BOS, EOS, PAD)  # trained first, so their ids are 0, 1, 2
SUITE_ROWS_PER_GENERATOR = 64
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json")

# Role markers stay plain text (not special tokens): the BPE learns them from EMBEDDED_TEXTS, and a
# model under test sees them exactly as a user-supplied chat template would produce them.
# Newlines are emitted from string expressions, never as literal text after a block tag: transformers
# renders templates with trim_blocks=True, which would silently drop a newline following `{% ... %}`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant, got ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Ordinary prose, digits and punctuation, so the tokenizer is not specialised to the suite alone.
EMBEDDED_TEXTS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!",
    "Question: What is 2 + 2?\nAnswer: 4\n\nQuestion: What is 12 * 3?\nAnswer: 36",
    "In 1969, two astronauts walked on the Moon; millions watched on television (about 600 million).",
    "Read the passage below and answer the question that follows. Choose A, B, C or D.",
    "A: yes\nB: no\nC: maybe\nD: none of the above",
    "Is the following sentence positive or negative? \"I loved this film, it was wonderful.\" Positive.",
    "Translate to French: \"Good morning, how are you?\" -> \"Bonjour, comment allez-vous ?\"",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 256 1000 2024 3.14 -7 1,000,000 50%",
    "Punctuation: , . ; : ! ? ' \" ( ) [ ] { } < > / \\ | - _ + = * & ^ % $ # @ ~ `",
    "Summarise the text in one sentence. Then list three keywords, separated by commas.",
    "<|system|>\nYou are a helpful assistant.\n<|user|>\nhi\n<|assistant|>\nHello! How can I help?</s>\n",
    "<|user|>\nWhat is the capital of France?\n<|assistant|>\nParis.</s>\n",
)


def _flatten(value: Any) -> Iterator[str]:
    """Every string/number inside a suite row, so the tokenizer sees prompts, options and targets."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten(item)


def _suite_texts() -> list[str]:
    """Text of a few rows of every built-in generator; empty if the suite is not available."""
    try:
        from harness.benchmarks.suite import GENERATORS, generate_rows
    except ImportError:
        logger.info("built-in suite not importable; training the tokenizer on embedded text only")
        return []
    out: list[str] = []
    for name in sorted(GENERATORS):
        for row in generate_rows(name, seed=0, split="train", n=SUITE_ROWS_PER_GENERATOR):
            out.extend(_flatten(row))
    return out


def _template_texts() -> list[str]:
    """Raw text of every template file, so template wording tokenises into few tokens."""
    root = Path(__file__).resolve().parents[2] / "templates"
    if not root.is_dir():
        return []
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
    return [p.read_text(encoding="utf-8") for p in files]


def default_texts() -> list[str]:
    """The local text the default tokenizer is trained on, in a deterministic order."""
    # Embedded text is repeated so its prose and chat role markers earn merges next to the suite text.
    return [*EMBEDDED_TEXTS * 8, *_template_texts(), *_suite_texts()]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE that round-trips any text exactly and prepends <s> like Llama's.

    Byte-level (no prefix space, no normaliser) means every string, including leading spaces and
    newlines, decodes back to itself, which exact-match scoring relies on.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        clean_up_tokenization_spaces=False,  # cleanup would rewrite " ." to "." and break round-trips
    )


def _fingerprint(texts: list[str], chat: bool, **params: Any) -> str:
    """Short sha256 over every build input, library versions included (they change the output)."""
    text_hash = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        text_hash.update(len(data).to_bytes(8, "little") + data)  # length prefix: no ambiguity
    payload = {
        "builder": BUILDER_VERSION, "texts": text_hash.hexdigest(), "chat": chat,
        "chat_template": CHAT_TEMPLATE if chat else None, "params": params,
        "versions": [transformers.__version__, tokenizers.__version__, torch.__version__],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _is_complete(path: Path) -> bool:
    """Whether `path` holds every file a loader needs (a hand-damaged entry is rebuilt, not used)."""
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def write_random_model(out: Path, texts: list[str], chat: bool, seed: int, hidden_size: int, num_layers: int,
                 num_heads: int, vocab_size: int, max_position_embeddings: int) -> None:
    """Save tokenizer and random weights into `out` (a private temporary folder)."""
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.model_max_length = max_position_embeddings
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in (("bos", BOS), ("eos", EOS), ("pad", PAD))}
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # may be below vocab_size when the training text is small
        hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
    )
    with torch.random.fork_rng(devices=[]):  # seed locally without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"]
    )
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)


def build_tiny_model(
    name: str = "tiny-llama", *, chat: bool = False, texts: Iterable[str] | None = None, seed: int = 0,
    hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, vocab_size: int = 1024,
    max_position_embeddings: int = 2048, force: bool = False,
) -> Path:
    """Build (or return the cached) HF-format folder of a tiny random Llama.

    Returns cache_root()/models/<name>-<fingerprint>; see `build_cached`.
    """
    text_list = default_texts() if texts is None else list(texts)
    params = dict(seed=seed, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                  vocab_size=vocab_size, max_position_embeddings=max_position_embeddings)
    final = cache_root() / "models" / f"{name}-{_fingerprint(text_list, chat, **params)}"
    return build_cached(final, lambda tmp: write_random_model(tmp, text_list, chat, **params), force=force)


def build_cached(final: Path, write: Callable[[Path], None], *, force: bool = False) -> Path:
    """Return `final` when it holds a complete model folder, else fill it by `write(tmp)`.

    Only complete folders ever appear at `final`: `write` fills a private temporary sibling that is
    renamed into place with os.replace(), so a crash or a concurrent builder never leaves a
    half-written folder that looks complete.
    """
    if _is_complete(final) and not force:
        logger.debug("using cached model %s", final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write(tmp)
        if final.exists() and (force or not _is_complete(final)):
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):  # another forced builder moved it already
                os.replace(final, old)  # move aside first: a directory cannot replace a non-empty one
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_complete(final):
                raise
            logger.debug("another builder finished %s first; keeping its copy", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    logger.info("built %s", final)
    return final


def builtin_models() -> dict[str, Path]:
    """Random-weight models for tests and engine benchmarks: same tokenizer and weights, one with a
    chat template. (The default models of `harness run` are pretrained: see `builtin.pretrained`.)"""
    texts = default_texts()
    return {
        "tiny-llama": build_tiny_model("tiny-llama", texts=texts),
        "tiny-llama-chat": build_tiny_model("tiny-llama-chat", chat=True, texts=texts),
    }
