"""Hand-set weights that give the tiny Grounding DINO, SAM and SAM 2 a usable geometry on disk.

``python -m factory.models.tiny`` writes the tiny perception models for the production path
(``kind: pretrained``, the real presets' thresholds, no hooks). Random weights never yield the
boxes and masks the artifact tools need, so the written copies are shaped here, deterministically
and without training; the classes, processors and agents that read them are the real ones.

Grounding DINO (the tiny config, two-stage, with ``decoder_bbox_embed_share=False`` so each
decoder layer has its own box head; transformers 5's weight init fails on ``two_stage=False``
models, in ``__init__`` and ``from_pretrained`` alike: it reads a bias the reference-point
embedding does not have)

* Text: every word of the tiny vocabulary has a role (``word_role``: entity, peripheral part,
  intermediate part, or none) and a role word a value in [-1, 1] (``word_values``). Word
  embeddings are zero-mean codes, one axis pair per role, the value on a spare pair; position /
  token-type embeddings are zero and every residual branch on the text path (BERT attention and
  FFN, fusion, text enhancer) is zeroed, so the encoded feature of a token is ``text_code(role)``
  (its role's pair plus a shared "common" pair) plus its value times ``word_code``.
* Queries: every decoder branch (self-, text and image cross-attention, FFN) is zeroed, so query
  ``q``'s final hidden state is its target embedding ``query_code``: its role's pair (the common
  pair reversed), ± a little of the word pair (``QUERY_SIDES``) and a pair of its own. The
  contrastive logit ``hidden · text`` is ``MATCH_LOGIT`` ± ``WORD_SPREAD`` where the roles agree
  and about -12 or lower everywhere else: queries 0-1 score on entity tokens, 2-3 on peripheral
  tokens, 4-5 on intermediate tokens, 6-9 on nothing; of two queries of a role, one labels its box
  with the role's word of highest value, the other with the lowest (two different entities fuse).
* Boxes: the last encoder layer's output norm makes every image feature one constant vector but
  for one spare axis the proposal scores ignore, so the two-stage selection keeps only valid
  proposals (finite reference points, also in bf16). The first decoder layer's box head drives
  every reference point to 0 (logit -11.5 after the eps clamp); the second adds each query's
  ``logit(box) + 11.5`` (its own axis pair selects its row), so ``pred_boxes`` are
  ``QUERY_BOXES``: the layout of ``factory.models.tiny.layout`` made fixed — two entity boxes in
  opposite corners overlapping by about a third of a side (fuse), a small peripheral part (add,
  remove) and a larger intermediate part (distort) inside each entity, clear of the overlap and
  of each other — moved by a bounded, photo-dependent ``JITTER`` (a few pixels): the first
  layer's image cross-attention samples the spare image axis near the query's proposal.

SAM / SAM 2: the mask decoder's last upscaling convolution (and SAM 2's high-resolution skips
``conv_s0`` / ``conv_s1``) is zeroed with a positive bias and the hypernetworks' last layers give
a constant positive weight, so every mask logit is positive: the mask fills the image and
``perception.clip_masks_to_box`` cuts it to the prompt box. The IoU head's last layer is a
constant that makes the first multimask output best.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from agents.vlm.scripted_backend import ROLES

ROLE_NAMES = ("entity", "peripheral", "intermediate")
EXTRA_ROLES = {  # tiny-vocabulary words outside the scripted VLM's lexicon
    **{w: "entity" for w in "man woman child astronaut bike bicycle motorcycle rocket cup mug camera tripod bottle "
                            "chair table plate".split()},
    **{w: "peripheral" for w in "finger nose mouth foot handle flag coin spoon".split()},
    **{w: "intermediate" for w in "face window body".split()},
}
MATCH_LOGIT = 2.0  # a query on a token of its role: probability 0.88, above box and text thresholds
QUERY_SHARE = 0.8  # share of a query code's norm on its role and common pairs
WORD_SHARE = 0.1  # share on the word axis pair (the rest: the query's own pair)
WORD_SPREAD = 0.5  # largest logit shift from a word's own value: words of one role score 1.5 to 2.5
REFERENCE_EPS = 1e-5  # the eps of Grounding DINO's logit of the reference points
SATURATE = -1000.0  # the first box head's output: every reference point becomes 0
JITTER = (0.06, -0.04, 0.03, 0.03)  # largest photo-dependent change of a box's (cx, cy, w, h) logits (~3 px)
JITTER_WRITE = 0.1  # the sampled image feature enters a query's state as ±0.1·f on a spare axis pair (zero
# mean, so the state's norm, and with it the logits and the box rows, barely change)
JITTER_GAIN = 20.0  # the jitter clamps at ±1 where the sampled feature reaches ±1 / (JITTER_GAIN · JITTER_WRITE)
QUERY_ROLES = ("entity", "entity", "peripheral", "peripheral", "intermediate", "intermediate")
QUERY_SIDES = (1, -1, 1, -1, 1, -1)  # +1: the query prefers the role's words of high value, -1: of low value
QUERY_BOXES = (  # x0, y0, x1, y1 as shares of the image sides, one per query of QUERY_ROLES
    (0.03, 0.03, 0.65, 0.65), (0.35, 0.35, 0.97, 0.97),  # entities: IoU 0.15, a third of a side overlaps
    (0.06, 0.40, 0.28, 0.62), (0.72, 0.38, 0.94, 0.60),  # peripheral parts, one per entity, off the overlap
    (0.33, 0.06, 0.61, 0.32), (0.39, 0.68, 0.67, 0.94),  # intermediate parts, one per entity, off the overlap
)
IDLE_BOX = (0.45, 0.45, 0.55, 0.55)  # the queries that score on nothing
MASK_BIAS = 1.0  # bias of the zeroed last upscaling convolution: every upscaled feature is GELU(1) > 0
HYPER_BIAS = 4.0  # the hypernetworks' constant output: mask logit = channels · 4 · GELU(1) ≈ 13.5
IOU_LOGITS = (2.0, 3.0, 1.5, 1.0)  # SAM's IoU head (single-mask token, then the multimask outputs)


def word_role(word: str) -> str | None:
    return ROLES.get(word) or EXTRA_ROLES.get(word)


def _zero(*layers: nn.Module) -> None:
    for layer in layers:
        for parameter in layer.parameters():
            parameter.zero_()


def _identity_norms(module: nn.Module) -> None:
    for norm in module.modules():
        if isinstance(norm, nn.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()


def _pair_code(width: int, role: int | None, role_amp: float, common_amp: float) -> torch.Tensor:
    """Zero-mean code: +a/-a on axes (2r, 2r+1) for the role, +c/-c on the last two (the common pair)."""
    code = torch.zeros(width)
    if role is not None:
        code[2 * role], code[2 * role + 1] = role_amp, -role_amp
    code[-2], code[-1] = common_amp, -common_amp
    return code


def _amplitudes(width: int) -> tuple[float, float]:
    """(a, c): 2a² + 2c² = width (unit variance) and QUERY_SHARE · (2a² - 2c²) = MATCH_LOGIT."""
    match = MATCH_LOGIT / QUERY_SHARE
    return math.sqrt((width + match) / 4), math.sqrt((width - match) / 4)


def text_code(width: int, role: str | None) -> torch.Tensor:
    """A token's encoded text feature, before its word's value is added (unit variance)."""
    if role is None:
        return _pair_code(width, None, 0.0, math.sqrt(width / 2))
    return _pair_code(width, ROLE_NAMES.index(role), *_amplitudes(width))


def word_code(width: int) -> torch.Tensor:
    """The word axis pair (the one before the common pair), unit variance: a role word's value lies on it."""
    code = torch.zeros(width)
    code[-4], code[-3] = math.sqrt(width / 2), -math.sqrt(width / 2)
    return code


def query_code(width: int, role: str | None, index: int, side: int) -> torch.Tensor:
    """Query ``index``'s final hidden state (unit variance): QUERY_SHARE of its role's text code with
    the common pair reversed, ``side`` · WORD_SHARE of the word axis pair, the rest on its own pair."""
    if role is None:
        code = _pair_code(width, None, 0.0, -math.sqrt(width / 2))
    else:
        role_amp, common_amp = _amplitudes(width)
        code = _pair_code(width, ROLE_NAMES.index(role), role_amp, -common_amp)
    code = QUERY_SHARE * code + side * WORD_SHARE * word_code(width)
    own = 2 * len(ROLE_NAMES) + 2 * index
    amp = math.sqrt(width / 2 * (1 - QUERY_SHARE**2 - (side * WORD_SHARE) ** 2))
    code[own], code[own + 1] = amp, -amp
    return code


def word_values(vocabulary) -> dict[str, float]:
    """Each role word's value in [-1, 1], evenly spread over the role's words in alphabetical order."""
    values = {}
    for role in ROLE_NAMES:
        words = sorted(w for w in vocabulary if word_role(w) == role)
        values.update({w: (2 * k / (len(words) - 1) - 1 if len(words) > 1 else 0.0) for k, w in enumerate(words)})
    return values


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


@torch.no_grad()
def shape_grounding(model, tokenizer):
    """A copy of the tiny Grounding DINO with per-layer box heads and the weights described above."""
    from transformers import GroundingDinoForObjectDetection

    config = copy.deepcopy(model.config)
    config.decoder_bbox_embed_share = False
    shaped = GroundingDinoForObjectDetection(config).eval()
    shaped.load_state_dict(model.state_dict())
    core = shaped.model
    d_model, queries = config.d_model, config.num_queries
    if d_model < 2 * (len(ROLE_NAMES) + queries + 3) or queries < len(QUERY_ROLES) or config.decoder_layers != 2:
        raise ValueError("the tiny Grounding DINO needs d_model >= 2 * (roles + queries + 3) and two decoder layers")
    for module in (core.text_backbone, core.encoder, core.decoder, core.enc_output_norm):
        _identity_norms(module)

    # text: BERT output = the role's ±pair on its hidden axes; the projection maps it to the role's code
    bert = core.text_backbone
    hidden = bert.config.hidden_size
    if hidden < 2 * len(ROLE_NAMES) + 2:
        raise ValueError("the tiny Grounding DINO's BERT needs hidden_size >= 8")
    words = bert.embeddings.word_embeddings.weight
    words.zero_()
    vocabulary = tokenizer.get_vocab()
    other = 2 * len(ROLE_NAMES)  # the first axis of the pair of words without a role
    spread = WORD_SPREAD / (WORD_SHARE * d_model) / (1 - 2 / hidden)  # LayerNorm centres the value's pair sum
    values = word_values(vocabulary)
    for word, index in vocabulary.items():
        role = word_role(word)
        axis = 2 * ROLE_NAMES.index(role) if role else other
        words[index, axis], words[index, axis + 1] = 1.0, -1.0
        if role:  # the word's value on the sum of the other pair's axes
            words[index, other] = words[index, other + 1] = spread * values[word]
    _zero(bert.embeddings.position_embeddings, bert.embeddings.token_type_embeddings)
    for layer in bert.encoder.layer:
        _zero(layer.attention.output.dense, layer.output.dense)
    projection = core.text_projection  # pair difference -> role code, other pair's sum -> word axis
    _zero(projection)
    for axis, role in enumerate((*ROLE_NAMES, None)):
        code, value = text_code(d_model, role) / 2, (word_code(d_model) / 2 if role is None else 0)
        projection.weight[:, 2 * axis], projection.weight[:, 2 * axis + 1] = value + code, value - code

    # encoder: no residual branch reaches the text; every image feature is one constant code (but for
    # the jitter axis) that scores above the masked (invalid) proposals, whose boxes pass unchanged
    for layer in core.encoder.layers:
        layer.fusion_layer.text_param.zero_()
        _zero(layer.text_enhancer_layer.self_attn.out_proj, layer.text_enhancer_layer.fc2)
    jitter = 2 * (len(ROLE_NAMES) + queries)  # a spare axis: the image's own feature, for the jitter
    last = core.encoder.layers[-1].deformable_layer.final_layer_norm
    last.weight.zero_()
    last.weight[jitter] = 1.0
    last.bias.copy_(text_code(d_model, None))
    core.enc_output.weight.copy_(torch.eye(d_model))
    core.enc_output.weight[jitter, jitter] = 0.0  # proposal scores ignore the jitter axis: they tie
    core.enc_output.bias.zero_()
    _zero(core.encoder_output_bbox_embed.layers[-1])

    # decoder: no residual branch reaches the queries; each query's target is its code
    for layer in core.decoder.layers:
        _zero(layer.self_attn.out_proj, layer.encoder_attn_text.out_proj, layer.encoder_attn.output_proj, layer.fc2)
    sampler = core.decoder.layers[0].encoder_attn  # layer 0 samples the image's jitter axis near its proposal
    _zero(sampler.value_proj)
    sampler.value_proj.weight[0, jitter] = 1.0
    sampler.output_proj.weight[jitter, 0], sampler.output_proj.weight[jitter + 1, 0] = JITTER_WRITE, -JITTER_WRITE
    roles = list(QUERY_ROLES) + [None] * (queries - len(QUERY_ROLES))
    sides = list(QUERY_SIDES) + [0] * (queries - len(QUERY_SIDES))
    codes = torch.stack([query_code(d_model, role, q, side) for q, (role, side) in enumerate(zip(roles, sides))])
    core.query_position_embeddings.weight.copy_(codes)

    # boxes: layer 0 sends every reference point to 0; layer 1 adds logit(box) - logit(eps) per query
    boxes = torch.tensor(list(QUERY_BOXES) + [IDLE_BOX] * (queries - len(QUERY_BOXES)), dtype=torch.float64)
    cxcywh = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                          boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
    lift = -_logit(torch.tensor(REFERENCE_EPS, dtype=torch.float64)).float()  # 11.5, as a bias: in bf16 the
    # per-query rows then stay small (|logit(box)| < 2) and round finely
    own = 2 * len(ROLE_NAMES) + 2 * torch.arange(queries)
    for heads in (shaped.bbox_embed, core.decoder.bbox_embed):
        first, second = heads
        _zero(first.layers[-1])
        first.layers[-1].bias.fill_(SATURATE)
        select, keep, out = second.layers
        _zero(select, keep, out)
        select.weight[torch.arange(queries), own] = 1.0 / codes[torch.arange(queries), own]  # unit q: query q
        keep.weight[:queries, :queries] = torch.eye(queries)
        out.weight[:, :queries] = _logit(cxcywh).T.float()
        # + JITTER · clamp(JITTER_GAIN · sampled feature, -1, 1) = relu(g·x + 1) - relu(g·x - 1) - 1
        select.weight[queries:queries + 2, jitter] = JITTER_GAIN
        select.bias[queries:queries + 2] = torch.tensor([1.0, -1.0])
        keep.weight[queries, queries:queries + 2] = torch.tensor([1.0, -1.0])
        out.weight[:, queries] = torch.tensor(JITTER)
        out.bias.copy_(lift - torch.tensor(JITTER))
    return shaped


@torch.no_grad()
def shape_sam(model):
    """A copy of the tiny SAM (or SAM 2) whose masks are positive everywhere, first multimask best."""
    shaped = copy.deepcopy(model).eval()
    decoder = shaped.mask_decoder
    decoder.upscale_conv2.weight.zero_()
    decoder.upscale_conv2.bias.fill_(MASK_BIAS)
    for mlp in decoder.output_hypernetworks_mlps:
        mlp.proj_out.weight.zero_()
        mlp.proj_out.bias.fill_(HYPER_BIAS)
    head = decoder.iou_prediction_head.proj_out
    head.weight.zero_()
    head.bias.copy_(torch.tensor(IOU_LOGITS[: head.bias.numel()]))
    for skip in ("conv_s0", "conv_s1"):  # SAM 2's high-resolution features join the upscaling
        if hasattr(decoder, skip):
            _zero(getattr(decoder, skip))
    return shaped
