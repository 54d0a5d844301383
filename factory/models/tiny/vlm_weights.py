"""Hand-set weights that make the tiny Qwen2-VL answer like a very bad but usable VLM.

A random tiny model under constrained decoding answers schema-valid garbage (a caption ``",{"``,
phrases the tiny Grounding DINO cannot read, "not visible" to every check), so nothing is ever planned
or accepted on the production path. These weights turn the same classes (processor, chat template,
``TransformersBackend``: nothing hooked) into a photo-dependent bigram language model:

* Tokenizer: byte-level BPE whose merges build each answer chunk of ``ANSWERS`` (a lexicon word with
  the JSON punctuation that follows it, a short sentence) into ONE token, plus the prompt keyword
  ``KEYWORD``. Every chunk token is a *state* with its own residual dimension. The answers list each
  object's keys in sorted order, as ``TransformersBackend`` compiles each schema from its sorted JSON.
* Language model: one decoder layer. The MLP is zeroed (``down_proj = 0``), so the residual stream
  carries the current token's embedding (its state dimension), and ``lm_head`` maps a state to the
  chunks that follow it in ``ANSWERS`` (logit ``BASE``): a bigram. Where several chunks may follow,
  the request's JSON grammar picks the valid one (the first chunk of each schema after the prompt's
  last token; what follows an explanation or a boolean in each schema), or a *feature* decides:
  chunks of the ``+`` answer get ``+gain * feature``, those of the ``-`` answer ``-gain * feature``.
* Features: the layer's attention reads three residual dimensions that are zero for every text token
  except the keyword's ``negative``. Head 0 attends to the image tokens only (query on ``CONSTANT`` x
  key on ``IMAGE``, in the rotary pair that M-RoPE barely turns) and averages their ``entity`` and
  ``visible`` votes, written by the vision tower; head 1 has no query, so it averages ``negative``
  uniformly over the causal prefix. The sign of each mean decides, up to ``OFFSET`` (``negative`` is
  zero without the keyword; ``visible`` leans to yes).
* Vision tower: the patch embedding computes two colour statistics of each patch (fixed linear
  combinations of the normalised RGB, ``ENTITY_RGB`` / ``VISIBLE_RGB``) and their negatives; the
  blocks are zeroed to identity; the merger's LayerNorm turns each into a signed vote, averaged over
  the 2x2 merged patches into the ``entity`` / ``visible`` dimensions. So a photo whose patches
  mostly lean one way (red and blue over green, or not) is described as a person and a car or as a
  cat and a bird, and a triplet check passes unless most patches of its three images are clearly
  low in red (dark, green or blue images).

All weights are set in closed form (deterministic, no training); everything else keeps its seeded
random init. Every answer closes within ~20 new tokens. Measured (bf16, 128-192 px photos): of the
bundled photos, astronaut and camera -> person + car; chelsea, coffee, rocket, coins -> cat + bird.
Triplet checks pass 65-75 % on skimage photos with random edits, and 85 % (rocket's fail) on the
edits of the tiny models' own CPU run (``factory.models.tiny`` with tiny perception).
"""

from __future__ import annotations

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")

FLAW = "the marked part breaks the structure of a real object"
PLAUSIBLE = "every part has the expected count, shape and connections"
# feature -> {sign: answers}: each answer is one schema's full JSON text, cut into chunks, with the keys in
# sorted order (``TransformersBackend`` compiles each schema from its key-sorted JSON)
ANSWERS: dict[str, dict[int, tuple[tuple[str, ...], ...]]] = {
    "entity": {  # caption_vocabulary
        +1: (('{"caption": "', "a photo of", " a person", " and", " a car", '", "entities": [{"intermediate": ["',
              'arm"], "name": "', 'person", "peripheral": ["', 'hand", "', 'eye"]}, {"intermediate": ["',
              'door"], "name": "', 'car", "peripheral": ["', 'wheel", "', 'mirror"]}]}'),),
        -1: (('{"caption": "', "a photo of", " a cat", " and", " a bird", '", "entities": [{"intermediate": ["',
              'leg"], "name": "', 'cat", "peripheral": ["', 'paw", "', 'tail"]}, {"intermediate": ["',
              'neck"], "name": "', 'bird", "peripheral": ["', 'wing"]}]}'),),
    },
    "visible": {  # triplet checks, with and without in_region
        +1: (('{"explanation": "', FLAW, '", "in_region": ', "true", ', "label": "', "malformed part",
              '", "visible": ', "true", "}"),
             ('{"explanation": "', FLAW, '", "label": "', "malformed part", '", "visible": ', "true", "}")),
        -1: (('{"explanation": "', FLAW, '", "in_region": ', "false", ', "label": "', "no clear flaw",
              '", "visible": ', "false", "}"),
             ('{"explanation": "', FLAW, '", "label": "', "no clear flaw", '", "visible": ', "false", "}")),
    },
    "negative": {  # local, global and negative explanations
        +1: (('{"explanation": "', PLAUSIBLE, '"}'),),
        -1: (('{"explanation": "', FLAW, '"}'),),
    },
}
KEYWORD = " negating"  # only the negative-explanation prompt says it
FEATURES = ("entity", "visible", "negative")
ENTITY_RGB = (1.0, -1.0, 2.0)  # normalised R, G, B weights of the entity statistic (blue and red over green)
VISIBLE_RGB = (1.0, 0.0, 0.0)  # ... of the visible statistic (red)
BASE = 30.0  # logit of a chunk that may follow the current one (bf16 resolves 0.125 there)
GAIN = {"entity": 10.0, "visible": 10.0, "negative": 100.0}  # image features are mean votes in [-1, 1]
# subtracted from the + answer's logit: "visible" passes a mean vote above -0.25 (~3/4 of checks pass);
# "negative" needs the keyword
OFFSET = {"entity": 0.0, "visible": -5.0, "negative": 1.0}
KEYWORD_VALUE = 100.0  # the keyword's value; prompts are ~0.4-3k tokens, so its prefix mean is ~0.03-0.2
FALLBACK = {'"': 3.0, '"}': 2.0, "]": 1.0, "}": 1.0}  # never chosen by the answers: only if a chunk is not allowed
CONSTANT, IMAGE, FIRST_FEATURE = 0, 1, 2  # residual dimensions; the states follow the features
IMAGE_NORM = 10.0  # an image token's IMAGE dimension: its norm (hence its attention key) barely depends on its votes
IMAGE_FOCUS = 80.0  # head 0's query on CONSTANT x key on IMAGE: a score ~12 on image tokens, 0 on text
VISION_DIM = 32


def chunks() -> list[str]:
    """Every answer chunk once, in order of first use."""
    return list(dict.fromkeys(chunk for _, _, answer in _answers() for chunk in answer))


def _answers():
    """(feature, sign, answer) for every answer."""
    return [(feature, sign, answer) for feature, signs in ANSWERS.items() for sign, answers in signs.items()
            for answer in answers]


def tiny_tokenizer():
    """Byte-level BPE: the 256 byte symbols, and merge chains that build every chunk and the keyword."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for text in [KEYWORD, *chunks()]:  # the keyword's merges rank first, so the prompt's keyword is one token
        [(symbols, _)] = level.pre_tokenize_str(text)
        for end in range(2, len(symbols) + 1):
            if symbols[:end] not in vocab:
                vocab[symbols[:end]] = len(vocab)
                merges.append((symbols[:end - 1], symbols[end - 1]))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=list(SPECIAL_TOKENS[1:]), padding_side="left")
    return tokenizer


def hidden_size() -> int:
    """Constant, image, features, one dimension per state (the chunks, the prompt's last token, others)."""
    used = FIRST_FEATURE + len(FEATURES) + len(chunks()) + 2
    return -(-used // 16) * 16


def _token_id(tokenizer, text: str) -> int:
    """The id of ``text`` as ONE token (a chunk, the keyword, a byte or a special token)."""
    from tokenizers import pre_tokenizers

    if text in SPECIAL_TOKENS:
        return tokenizer.convert_tokens_to_ids(text)
    [(symbols, _)] = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)
    return tokenizer.convert_tokens_to_ids(symbols)


def _transitions() -> dict[str, dict[str, tuple[str, int] | None]]:
    """state chunk -> {next chunk: its (feature, sign), or None when both answers use it}."""
    uses: dict[str, set[tuple[str, int]]] = {}
    follow: dict[str, dict[str, tuple[str, int] | None]] = {}
    for feature, sign, answer in _answers():
        for chunk in answer:
            uses.setdefault(chunk, set()).add((feature, sign))
        for prev, nxt in zip(("\n", *answer), (*answer, "<|im_end|>")):
            follow.setdefault(prev, {})[nxt] = None
    for successors in follow.values():
        for nxt in successors:
            if len(uses.get(nxt, ())) == 1:
                successors[nxt] = next(iter(uses[nxt]))
    return follow


@torch.no_grad()
def shape_weights(model, tokenizer) -> None:
    """Overwrite the tiny Qwen2-VL's weights in place with the bigram + image-feature construction."""
    lm = model.model.language_model
    size = lm.config.hidden_size
    states = ["\n", *chunks()]
    state_dim = {s: FIRST_FEATURE + len(FEATURES) + i for i, s in enumerate(states)}
    other_dim = FIRST_FEATURE + len(FEATURES) + len(states)
    feature_dim = {f: FIRST_FEATURE + i for i, f in enumerate(FEATURES)}
    ids = {s: _token_id(tokenizer, s) for s in [*states, KEYWORD, "<|im_end|>", *FALLBACK]}

    embed = torch.zeros_like(lm.embed_tokens.weight)
    embed[:, CONSTANT] = 1.0
    embed[:, other_dim] = 1.0
    for state, dim in state_dim.items():
        embed[ids[state], other_dim] = 0.0
        embed[ids[state], dim] = 1.0
    embed[ids[KEYWORD], other_dim] = 0.0
    embed[ids[KEYWORD], feature_dim["negative"]] = 1.0
    lm.embed_tokens.weight.copy_(embed)

    for layer in lm.layers:  # every layer but the first adds nothing; the first only averages the features
        for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            linear.weight.zero_()
            linear.bias.zero_()
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        layer.input_layernorm.weight.fill_(size ** -0.5)  # a token keeps its direction at norm 1
        layer.input_layernorm.weight[feature_dim["negative"]] *= KEYWORD_VALUE  # the norm would undo it in embed
    first, head_dim = lm.layers[0].self_attn, size // lm.config.num_attention_heads
    slow = head_dim // 2 - 1  # the rotary pair with the lowest frequency: RoPE barely turns it
    first.q_proj.weight[slow, CONSTANT] = IMAGE_FOCUS  # head 0 attends to the image tokens only ...
    first.k_proj.weight[slow, IMAGE] = 1.0
    for i, feature in enumerate(("entity", "visible")):  # ... and averages their votes
        first.v_proj.weight[i, feature_dim[feature]] = IMAGE_NORM  # undoes the layer norm's division by ~IMAGE_NORM
        first.o_proj.weight[feature_dim[feature], i] = 1.0
    first.v_proj.weight[head_dim, feature_dim["negative"]] = 1.0  # head 1 (no query) averages the whole prefix
    first.o_proj.weight[feature_dim["negative"], head_dim] = 1.0
    lm.norm.weight.fill_((2.0 / size) ** 0.5)  # a state token's embedding (constant + state) has norm sqrt(2)

    head = torch.zeros_like(model.lm_head.weight)
    for text, value in FALLBACK.items():
        head[ids[text], CONSTANT] = value
    for prev, successors in _transitions().items():
        for nxt, condition in successors.items():
            head[ids[nxt], state_dim[prev]] = BASE
            if condition is not None:
                feature, sign = condition
                head[ids[nxt], feature_dim[feature]] = sign * GAIN[feature]
                if sign > 0:
                    head[ids[nxt], state_dim[prev]] -= OFFSET[feature]
    model.lm_head.weight.copy_(head)
    _shape_vision(model.model.visual, feature_dim)


def _shape_vision(visual, feature_dim: dict[str, int]) -> None:
    """Patch statistics -> signed votes -> the ``entity`` / ``visible`` dimensions of each image token."""
    proj = visual.patch_embed.proj.weight  # (embed, 3, temporal, patch, patch), on normalised pixels
    proj.zero_()
    count = proj[0, 0].numel()
    for channel, rgb in ((0, ENTITY_RGB), (2, VISIBLE_RGB)):
        for c, weight in enumerate(rgb):
            proj[channel, c] = weight / count
            proj[channel + 1, c] = -weight / count  # the negated copy keeps the LayerNorm's mean at zero
    for block in visual.blocks:  # identity: the residual branches add nothing
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.zero_()
    merger = visual.merger
    merger.ln_q.weight.zero_()
    merger.ln_q.bias.zero_()
    merger.ln_q.weight[[0, 2]] = 1.0  # each channel -> 4 * stat / sqrt(stat_0^2 + stat_2^2), in [-4, 4]
    groups = merger.mlp[0].in_features // VISION_DIM
    shift, scale = 40.0, 4.0 * groups  # GELU is the identity on [24, 56]; the votes' sum is in [-16, 16]
    inner, outer = merger.mlp[0], merger.mlp[2]
    inner.weight.zero_()
    inner.bias.zero_()
    outer.weight.zero_()
    outer.bias.zero_()
    for unit, (channel, feature) in enumerate(((0, "entity"), (2, "visible"))):
        for group in range(groups):
            inner.weight[unit, group * VISION_DIM + channel] = 1.0
        inner.bias[unit] = shift
        outer.weight[feature_dim[feature], unit] = 1.0 / scale
        outer.bias[feature_dim[feature]] = -shift / scale
    outer.bias[IMAGE] = IMAGE_NORM
