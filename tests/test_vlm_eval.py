"""Scoring a VLM's replies: Qwen2.5-VL ``bbox_2d`` parsing as ArtiAgent's evaluation does it, the export's
answers scored with ArtifactBench's metrics (hand counts), CSS with a tiny offline sentence-transformers model,
bad lines counted, and a perfect model on the factory's export."""

import json
from pathlib import Path

import pytest
import torch

from detector.metrics.artifactbench import TextScorer, load_css_model
from detector.vlm_eval import main
from detector.vlm_replies import parse_reply
from shards.export import NO_ARTIFACTS, data_file
from shards.export import main as export_main

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "an", "the", "hand", "has", "six", "fingers", "wheel",
         "is", "bent", "dog", "extra", "leg", "##s", "ear", "missing", "no", "artifacts", "."]


def build_css_model(folder: Path) -> Path:
    """A random tiny BERT with a WordPiece tokenizer from a small vocab file, saved as a sentence-transformers
    model (Transformer + mean Pooling): the layout of paraphrase-MiniLM-L6-v2, built offline."""
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    encoder = folder / "encoder"
    encoder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(encoder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(encoder)
    transformer = Transformer(str(encoder), max_seq_length=32)
    SentenceTransformer(modules=[transformer, Pooling(16, "mean")]).save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="module")
def css_model(tmp_path_factory) -> Path:
    return build_css_model(tmp_path_factory.mktemp("css"))


def _reply(boxes, texts, global_explanation: str) -> str:
    items = [{"bbox_2d": b, "label": "extra part", "explanation": t} for b, t in zip(boxes, texts)]
    return f"```json\n{json.dumps(items)}\n```\n{global_explanation}"


# ------------------------------------------------------------------------------------------ parsing
def test_reply_parsing_truncates_clips_and_drops_only_bad_items():
    text = ('```json\n[{"bbox_2d": [1.9, 2.7, 300.5, 40.2], "label": "a"}, {"bbox_2d": [5, 5, 5, 9]},'
            ' {"bbox_2d": "x"}, {"bbox_2d": [1, 2, 3]}, {"label": "no box"}, 7, {"bbox_2d": [-3, 1, 4, 2.5]}]\n```\n'
            '```json\n{"explanation": "two flaws"}\n```')
    reply = parse_reply(text, width=100, height=50)
    assert reply.boxes == [[1, 2, 100, 40], [0, 1, 4, 2]] and reply.texts == ["a", ""]
    assert (reply.explanation, reply.valid, reply.malformed_items, reply.degenerate_boxes) == ("two flaws", True, 4, 1)
    assert parse_reply(text).boxes == [[1, 2, 300, 40], [-3, 1, 4, 2]]  # size unknown: truncated, not clipped
    assert parse_reply('```json\n[{"bbox_2d": [0, 0, 0.5, 9]}]\n```').degenerate_boxes == 1  # 0.5 → 0: empty


def test_reply_parsing_export_format_and_invalid_replies():
    reply = parse_reply(_reply([[1, 2, 3, 4]], ["a hand has six fingers"], "An extra finger."))
    assert (reply.boxes, reply.texts) == ([[1, 2, 3, 4]], ["a hand has six fingers"])
    assert reply.explanation == "An extra finger."
    plain = parse_reply(NO_ARTIFACTS)
    assert plain.valid and not plain.has_artifacts and plain.explanation == NO_ARTIFACTS
    for bad in ("```json\n{not json\n```", "```json\n[{\"bbox_2d\": [1, 2, 3, 4]}", "```json\n7\n```"):
        reply = parse_reply(bad)
        assert not reply.valid and not reply.boxes and reply.explanation == ""


# ------------------------------------------------------------------------------- export predictions
PAIRS = [  # (predicted, reference)
    (_reply([[0, 0, 10, 10]], ["a hand has six fingers"], "An extra finger."),
     _reply([[0, 0, 10, 10]], ["a hand has six fingers"], "An extra finger.")),
    (_reply([[0, 0, 10, 10]], ["a hand with six fingers"], "Two flaws."),
     _reply([[0, 0, 10, 10], [20, 20, 30, 30]], ["a hand has six fingers", "an ear is missing"], "Two flaws.")),
    (_reply([[5, 5, 8, 8]], ["a warped wheel"], "A warped wheel."), NO_ARTIFACTS),
    ("```json\n{not json\n```", _reply([[0, 0, 10, 10]], ["a leg is bent"], "A bent leg.")),
]


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_export_predictions_scored_as_artifactbench_by_hand(tmp_path):
    rows = [{"prompt": "q", "predict": p, "label": r} for p, r in PAIRS] + ["not json", {"predict": "x"}]
    m = main(["--predictions", str(_write(tmp_path / "p.jsonl", rows)), "--out", str(tmp_path / "m.json")])
    assert (m["n_replies"], m["invalid_replies"]) == (4, 1)
    assert m["bad_inputs"] == {"unreadable_line": 2}
    ab = m["artifactbench"]
    # truth [1, 1, 0, 1], guess [1, 1, 1, 0]: plain accuracy 2/4; P = R = F1 = 2/3 for "has artifacts"
    assert ab["detection"]["accuracy"] == 0.5 and ab["detection"]["f1"] == pytest.approx(2 / 3)
    # positives: 1 → IoU 1, F1 1; 2 → IoU 1 (the miss is skipped), P 1, R 1/2, F1 2/3; 4 → nothing predicted: 0
    loc = ab["localization"]
    assert loc == pytest.approx({"mean_iou": 2 / 3, "mean_precision": 2 / 3, "mean_recall": 0.5,
                                 "mean_f1": (1 + 2 / 3) / 3, "valid_samples": 3})
    e = ab["explanation"]
    # global over all 4: identical, identical, "A warped wheel." vs NO_ARTIFACTS (no common token), empty → 0
    assert e["global_rouge_l"] == pytest.approx(0.5) and e["global_samples"] == 4
    # local over 3 positives: 1; (rouge("a hand has six fingers", "a hand with six fingers") = 0.8) / 2 boxes; 0
    assert e["local_rouge_l"] == pytest.approx((1 + 0.8 / 2 + 0) / 3) and "local_css" not in e
    assert json.loads((tmp_path / "m.json").read_text()) == m


# ------------------------------------------------------------------------------------------------ CSS
def test_css_uses_sentence_transformers_and_scores_empty_text_zero(css_model, tmp_path):
    from sentence_transformers import SentenceTransformer, util

    scorer = TextScorer(css_model)
    texts = ["a hand has six fingers", "the wheel is bent", "an ear is missing"]
    reference = SentenceTransformer(str(css_model), device="cpu")
    expected = [util.cos_sim(reference.encode(a, convert_to_tensor=True), reference.encode(b, convert_to_tensor=True)
                             ).item() for a, b in zip(texts, texts[1:] + texts[:1])]  # one text at a time
    assert scorer.css(texts, texts[1:] + texts[:1]) == pytest.approx(expected, abs=1e-5)
    assert scorer.css(texts, texts) == pytest.approx([1.0] * 3, abs=1e-5)
    assert util.cos_sim(reference.encode("", convert_to_tensor=True),
                        reference.encode(texts[0], convert_to_tensor=True)).item() != 0  # the model embeds ""
    rows = [{"predict": _reply([[0, 0, 4, 4]], ["a hand has six fingers"], ""),
             "label": _reply([[0, 0, 4, 4]], ["a hand has six fingers"], "the wheel is bent")}]
    m = main(["--predictions", str(_write(tmp_path / "p.jsonl", rows)), "--out", str(tmp_path / "m.json"),
              "--css-model", str(css_model)])
    e = m["artifactbench"]["explanation"]
    assert e["global_css"] == 0.0 and e["global_rouge_l"] == 0.0  # empty predicted explanation scores 0
    assert e["local_css"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(FileNotFoundError, match="hf download sentence-transformers/none"):
        load_css_model("sentence-transformers/none")


def test_a_perfect_model_on_the_factory_export_scores_one(factory_shards, tmp_path):
    export_main(["--format", "llamafactory", "--shards", str(factory_shards), "--out", str(tmp_path / "export")])
    records = json.loads((tmp_path / "export" / data_file("val")).read_text())
    rows = [{"prompt": r["messages"][0]["content"], "predict": r["messages"][1]["content"],
             "label": r["messages"][1]["content"]} for r in records]
    m = main(["--predictions", str(_write(tmp_path / "generated_predictions.jsonl", rows)),
              "--out", str(tmp_path / "m.json")])
    ab = m["artifactbench"]
    assert m["n_replies"] == len(records) and m["invalid_replies"] == 0 and m["bad_inputs"] == {}
    assert ab["detection"]["accuracy"] == ab["detection"]["f1"] == 1.0
    assert ab["localization"]["mean_f1"] == ab["localization"]["mean_iou"] == 1.0
    assert ab["explanation"]["global_rouge_l"] == pytest.approx(1.0)
