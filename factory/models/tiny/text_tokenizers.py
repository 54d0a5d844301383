"""The tiny FLUX's tokenizers, in the real formats, for the words of ``TINY_WORDS``.

CLIP: a byte-level BPE whose merges come from the ``tokenizers`` library's ``BpeTrainer`` (``</w>`` word
ends; CLIP's vocabulary layout: the 256 byte symbols, the same with ``</w>``, every merge result, then
``<|startoftext|>`` / ``<|endoftext|>``). The trainer's merges are committed (``tiny_tokenizers.json``)
and every process reads that file: the trainer breaks ties between equally frequent pairs by hash-map
order, which differs from process to process (three trainings in three processes gave three merge
lists), so training in each actor would give each its own token ids and its own pixels.
``python -m factory.models.tiny.text_tokenizers`` trains again and rewrites the file; do so when
``TINY_WORDS`` changes, and expect the tiny preset's pixels to change with it.

T5: a Unigram model with a listed vocabulary (T5's ``<pad>``, ``</s>``, ``<unk>``, every tiny word, single
characters, 100 ``<extra_id_*>``). The ``tokenizers`` ``UnigramTrainer`` keeps only 3-4 of the 54 words
whole (measured with each word given 1-20 times, vocabulary sizes 120-400): a caption would become
about twice as many pieces as words and the tiny preset's 16-token T5 limit would cut most captions in
half, where real T5 keeps such common words whole.
"""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path

from transformers import CLIPTokenizer, T5TokenizerFast

TINY_WORDS = ("a an the of and with in on at photo picture image person man woman astronaut cat dog car bike "
              "rocket cup coffee coin coins camera tripod hand finger ear eye paw tail wheel mirror arm leg head "
              "face door window sky grass table street red blue green white black small large two one")
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_MAX_LENGTH = 77
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
T5_MAX_LENGTH = 512
T5_EXTRA_IDS = 100
END_OF_WORD = "</w>"
CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation  # a caption's characters besides words
TRAINED = Path(__file__).with_name("tiny_tokenizers.json")


@functools.lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2 / CLIP ``bytes_to_unicode``), by byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return tuple(symbols[b] for b in range(256))


def train() -> dict:
    """The CLIP merges of ``TINY_WORDS`` by the ``tokenizers`` BPE trainer; the JSON of ``TRAINED``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = sorted(set(TINY_WORDS.split()))  # lower-case ASCII: each byte's symbol is the character itself
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(words, trainers.BpeTrainer(vocab_size=10_000, min_frequency=0, show_progress=False,
                                                       initial_alphabet=list(byte_symbols()),
                                                       end_of_word_suffix=END_OF_WORD))
    merges = [merge if isinstance(merge, list) else merge.split(" ")
              for merge in json.loads(bpe.to_str())["model"]["merges"]]

    return {"words": TINY_WORDS, "clip_merges": merges}


@functools.lru_cache(maxsize=1)
def trained() -> dict:
    data = json.loads(TRAINED.read_text())
    if data["words"] != TINY_WORDS:
        raise RuntimeError(f"{TRAINED} was trained on other words; run python -m factory.models.tiny.text_tokenizers")
    return data


def tiny_clip_vocab(merges: list[tuple[str, str]] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary layout around ``merges`` (default: the committed ones); and the merges."""
    merges = [(a, b) for a, b in (trained()["clip_merges"] if merges is None else merges)]
    tokens = list(byte_symbols()) + [s + END_OF_WORD for s in byte_symbols()] + [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for token in [*tokens, CLIP_BOS, CLIP_EOS]:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def tiny_clip_tokenizer(merges: list[tuple[str, str]] | None = None) -> CLIPTokenizer:
    vocab, merges = tiny_clip_vocab(merges)
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH)


@functools.lru_cache(maxsize=1)
def tiny_t5_vocab() -> tuple[tuple[str, float], ...]:
    """T5's special tokens, every tiny word (a piece each, as real T5 keeps common words), then characters."""
    specials = [(token, 0.0) for token in T5_SPECIALS]
    words = [(f"▁{w}", -2.0) for w in sorted(set(TINY_WORDS.split()))]
    characters = [("▁", -3.0)] + [(c, -5.0) for c in CHARACTERS]
    return tuple(specials + words + characters)


def tiny_t5_tokenizer() -> T5TokenizerFast:
    return T5TokenizerFast(vocab=list(tiny_t5_vocab()), extra_ids=T5_EXTRA_IDS, model_max_length=T5_MAX_LENGTH)


def write_trained(data: dict) -> None:
    """``TRAINED``, a merge per line (reviewable diffs when the words change)."""
    def rows(items: list) -> str:
        return ",\n".join(f"  {json.dumps(item, ensure_ascii=False)}" for item in items)

    TRAINED.write_text(f'{{\n "words": {json.dumps(data["words"])},\n "clip_merges": [\n{rows(data["clip_merges"])}\n ]\n}}\n')


if __name__ == "__main__":
    write_trained(train())
    print(f"wrote {TRAINED}")
