"""Scoring a fine-tuned VLM's replies (LLaMA-Factory ``generated_predictions.jsonl``) against the export's
answers: hand-counted detection / box / ROUGE-L metrics, the embedding cosine, a perfect run end to end."""

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from detector.vlm_eval import ReplyPair, SentenceEmbedder, main, read_predictions, score
from shards.export import NO_ARTIFACTS, data_file, parse_answer
from shards.export import main as export_main


def _reply(boxes: list[list[int]], explanations: list[str], global_explanation: str) -> str:
    items = [{"bbox_2d": b, "label": "extra part", "explanation": e} for b, e in zip(boxes, explanations)]
    return f"```json\n{json.dumps(items)}\n```\n{global_explanation}"


PAIRS = [  # (predicted, reference)
    (_reply([[0, 0, 10, 10]], ["a hand has six fingers"], "An extra finger."),
     _reply([[0, 0, 10, 10]], ["a hand has six fingers"], "An extra finger.")),
    (_reply([[0, 0, 10, 10]], ["a hand with six fingers"], "Two flaws."),
     _reply([[0, 0, 10, 10], [20, 20, 30, 30]], ["a hand has six fingers", "an ear is missing"], "Two flaws.")),
    (_reply([[5, 5, 8, 8]], ["a warped wheel"], "A warped wheel."), NO_ARTIFACTS),
    ("```json\n{not json\n```", _reply([[0, 0, 10, 10]], ["a leg is bent"], "A bent leg.")),
]


def test_scores_match_a_hand_count():
    m = score([ReplyPair(parse_answer(p), parse_answer(r)) for p, r in PAIRS])
    assert m["n_replies"] == 4 and m["invalid_replies"] == 1
    # truth [1, 1, 0, 1], guess [1, 1, 1, 0]: TP 2, FP 1, FN 1, TN 0
    assert m["image_balanced_accuracy"] == pytest.approx((2 / 3 + 0) / 2)
    assert (m["image_precision"], m["image_recall"], m["image_f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # images with reference boxes: 1 → (1, 1, 1); 2 → (1, 0.5, 2/3); 4 → (0, 0, 0)
    assert (m["box_precision"], m["box_recall"], m["box_f1"]) == pytest.approx((2 / 3, 0.5, 5 / 9))
    assert m["mean_best_iou"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    # global: identical, identical, empty → (1 + 1 + 0) / 3; local: identical, LCS 4 of 5 and 5 → (1 + 0.8) / 2
    assert (m["global_explanations"], m["global_rouge_l"]) == (3, pytest.approx(2 / 3))
    assert (m["local_explanations"], m["local_rouge_l"]) == (2, pytest.approx(0.9))


def test_parse_answer_inverts_the_export_and_flags_bad_replies():
    reply = parse_answer(_reply([[1, 2, 3, 4], [5, 6, 7, 8]], ["x", "y"], "Global words."))
    assert (reply.boxes, reply.explanations, reply.global_explanation, reply.valid) == \
        ([[1, 2, 3, 4], [5, 6, 7, 8]], ["x", "y"], "Global words.", True)
    assert not parse_answer(NO_ARTIFACTS).has_artifacts and parse_answer(NO_ARTIFACTS).valid
    for bad in ("```json\n[{\"bbox_2d\": [1, 2, 3]}]\n```", "```json\n[{\"label\": \"x\"}]\n```", "```json\n7\n```"):
        assert not parse_answer(bad).valid and not parse_answer(bad).boxes


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random tiny BERT and an offline word-level tokenizer, saved like a Hub checkpoint."""
    path = tmp_path_factory.mktemp("encoder")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "hand", "has", "six", "fingers", "wheel", "is", "bent"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(path)
    return path


def test_embedding_cosine_is_mean_pooled_and_normalised(tiny_encoder):
    embedder = SentenceEmbedder(str(tiny_encoder))
    texts = ["a hand has six fingers", "a wheel is bent"]
    assert embedder.cosine(texts[:1], texts[:1]) == pytest.approx([1.0], abs=1e-6)
    # independent: each text alone (no padding), plain mean over its tokens, numpy cosine
    model, tokenizer = BertModel.from_pretrained(tiny_encoder).eval(), BertTokenizerFast.from_pretrained(tiny_encoder)
    with torch.no_grad():
        means = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for t in texts]
    expected = float(means[0] @ means[1] / np.linalg.norm(means[0]) / np.linalg.norm(means[1]))
    assert embedder.cosine(texts[:1], texts[1:]) == pytest.approx([expected], abs=1e-5)
    m = score([ReplyPair(parse_answer(p), parse_answer(r)) for p, r in PAIRS], embedder)
    assert -1.0 <= m["local_cosine"] <= 1.0 and -1.0 <= m["global_cosine"] <= 1.0
    with pytest.raises(FileNotFoundError, match="hf download sentence-transformers/none"):
        SentenceEmbedder("sentence-transformers/none")


def test_a_perfect_model_on_the_factory_export_scores_one(factory_shards, tmp_path):
    export_main(["--format", "llamafactory", "--shards", str(factory_shards), "--out", str(tmp_path / "export")])
    records = json.loads((tmp_path / "export" / data_file("val")).read_text())
    lines = [json.dumps({"prompt": r["messages"][0]["content"], "predict": r["messages"][1]["content"],
                         "label": r["messages"][1]["content"]}) for r in records]
    (tmp_path / "generated_predictions.jsonl").write_text("\n".join(lines))
    m = main(["--predictions", str(tmp_path / "generated_predictions.jsonl"), "--out", str(tmp_path / "m.json")])
    assert m["n_replies"] == len(records) and m["invalid_replies"] == 0
    assert m["image_f1"] == m["box_f1"] == m["mean_best_iou"] == 1.0
    n_boxes = sum(len(parse_answer(r["messages"][1]["content"]).boxes) for r in records)
    assert m["local_explanations"] == n_boxes > 0  # every reference box matched by its own copy
    assert json.loads((tmp_path / "m.json").read_text()) == m
    (tmp_path / "broken.jsonl").write_text('{"predict": "x"}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:1: expected a JSON object with 'predict' and 'label'"):
        read_predictions(tmp_path / "broken.jsonl")
