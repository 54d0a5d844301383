"""ArtifactBench metrics, as ArtiAgent's evaluation (krafton-ai/Artiagent, ``src/eval/eval_utils.py`` and
``src/eval_vlm/eval_loc_exp.py``) computes them.

* **Detection** over every image: plain accuracy, and precision / recall / F1 of the "has artifacts"
  class (plus macro F1 and the confusion counts), via scikit-learn.
* **Localisation** per image with artifacts, then the mean over those images: ``iou`` = mean over
  ground-truth boxes whose best prediction has IoU > 0 of that best IoU (misses are skipped, not
  zeros); P / R / F1 from greedy matching in ground-truth order (each box takes its best still-free
  prediction with IoU ≥ 0.5). An image with no predicted box, or whose ``iou`` is 0, scores 0 on all.
* **Explanation**: the global explanation's ROUGE-L (``rouge-score``, ``use_stemmer=True``, F-measure
  of ``score(reference, prediction)``) and CSS (sentence-transformers ``encode`` + ``util.cos_sim``),
  0 when either text is empty, averaged over **all** images. Local explanations: each ground-truth
  box is paired with its best-IoU prediction (IoU > 0; one prediction may serve several boxes), and the
  pair scores are summed and divided by the number of ground-truth boxes; averaged over the images
  with artifacts whose reference has box texts (a choice: the authors' code leaves this average open;
  ArtiBench's ``bboxes`` carry no text, so its images give no local reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

Box = Sequence[float]
CSS_MODEL = "sentence-transformers/paraphrase-MiniLM-L6-v2"


def box_iou(a: Box, b: Box) -> float:
    """IoU of two [x1, y1, x2, y2] boxes (0 when they do not overlap)."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    if inter == 0:
        return 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / float(union) if union > 0 else 0.0


def best_iou_mapping(gt: Sequence[Box], pred: Sequence[Box]) -> tuple[float, dict[int, int]]:
    """Each ground-truth box's best prediction (first on ties) if its IoU > 0 → (mean of those IoUs, gt → pred)."""
    if not gt or not pred:
        return 0.0, {}
    mapping, ious = {}, []
    for i, g in enumerate(gt):
        best, best_j = 0.0, -1
        for j, p in enumerate(pred):
            iou = box_iou(g, p)
            if iou > best:
                best, best_j = iou, j
        if best > 0:
            mapping[i] = best_j
            ious.append(best)
    return (float(np.mean(ious)) if ious else 0.0), mapping


@dataclass
class Localization:
    """One image's localisation scores."""

    iou: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


def greedy_gt_order(gt: Sequence[Box], pred: Sequence[Box], threshold: float = 0.5) -> Localization:
    """P / R / F1 after greedy matching in ground-truth order at IoU ≥ ``threshold`` (``iou`` left 0)."""
    if not gt and not pred:
        return Localization(precision=1.0, recall=1.0, f1=1.0)
    if not gt:
        return Localization(precision=0.0, recall=1.0, fp=len(pred))
    if not pred:
        return Localization(precision=1.0, recall=0.0, fn=len(gt))
    used: set[int] = set()
    for g in gt:
        best, best_j = 0.0, -1
        for j, p in enumerate(pred):
            iou = box_iou(g, p)
            if j not in used and iou >= threshold and iou > best:
                best, best_j = iou, j
        if best_j != -1:
            used.add(best_j)
    tp = len(used)
    fp, fn = len(pred) - tp, len(gt) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Localization(0.0, precision, recall, f1, tp, fp, fn)


def localize(gt: Sequence[Box], pred: Sequence[Box], threshold: float = 0.5) -> Localization:
    """One image with artifacts: all zeros without predictions or without any overlap, else mean best IoU + F1."""
    if not gt or not pred:
        return Localization()
    iou, _ = best_iou_mapping(gt, pred)
    if iou <= 0:
        return Localization()
    scores = greedy_gt_order(gt, pred, threshold)
    scores.iou = iou
    return scores


def detection(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float | int]:
    """Accuracy, P / R / F1 of the positive class, macro F1, and TP / FP / FN / TN."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if not len(y_true):
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "macro_f1": 0.0,
                "tp": 0, "fp": 0, "fn": 0, "tn": 0}
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel())
    kw = {"zero_division": 0, "labels": [0, 1]}
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "precision": float(precision_score(y_true, y_pred, **kw)),
            "recall": float(recall_score(y_true, y_pred, **kw)), "f1": float(f1_score(y_true, y_pred, **kw)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", **kw)), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


class TextScorer:
    """ROUGE-L (``rouge-score``, stemming) and, given a local sentence-transformers folder, CSS."""

    def __init__(self, css_model: str | Path | None = None, device: str = "cpu"):
        from rouge_score import rouge_scorer

        self.rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self.css_model = load_css_model(css_model, device) if css_model else None

    def rouge_l(self, reference: str, prediction: str) -> float:
        return float(self.rouge.score(reference, prediction)["rougeL"].fmeasure)

    def css(self, references: list[str], predictions: list[str]) -> list[float]:
        """Cosine similarity of each pair's embeddings (texts encoded in batches); [] without a model."""
        if self.css_model is None or not references:
            return []
        from sentence_transformers import util

        a = self.css_model.encode(references, convert_to_tensor=True, show_progress_bar=False)
        b = self.css_model.encode(predictions, convert_to_tensor=True, show_progress_bar=False)
        return [float(v) for v in util.pairwise_cos_sim(a, b).cpu()]


def load_css_model(path: str | Path, device: str = "cpu"):
    """A sentence-transformers model from a local folder or the HF cache; never downloaded."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError) as err:
        fetch = "" if str(path).startswith(("/", ".")) else f"; fetch it with `hf download {path}`"
        raise FileNotFoundError(f"CSS model {str(path)!r} could not be loaded ({err}){fetch}") from err


@dataclass
class Sample:
    """One image: the reference (ground truth) and the prediction, both as boxes, box texts and a global text."""

    has_artifacts: bool
    gt_boxes: list[list[float]]
    gt_texts: list[str]
    explanation: str
    pred_boxes: list[list[float]]
    pred_texts: list[str] = field(default_factory=list)
    pred_explanation: str = ""
    predicted_positive: bool | None = None  # default: the prediction has a box


def score(samples: list[Sample], scorer: TextScorer | None = None) -> dict:
    """ArtifactBench's detection, localisation and (with ``scorer``) explanation metrics over ``samples``."""
    truth = [int(s.has_artifacts) for s in samples]
    guess = [int(bool(s.pred_boxes) if s.predicted_positive is None else s.predicted_positive) for s in samples]
    positives = [s for s in samples if s.has_artifacts]
    locs = [localize(s.gt_boxes, s.pred_boxes) for s in positives]
    mean = lambda values: float(np.mean(values)) if len(values) else 0.0  # noqa: E731
    out = {"detection": detection(truth, guess),
           "localization": {"mean_iou": mean([x.iou for x in locs]),
                            "mean_precision": mean([x.precision for x in locs]),
                            "mean_recall": mean([x.recall for x in locs]), "mean_f1": mean([x.f1 for x in locs]),
                            "valid_samples": len(locs)}}
    if scorer is not None:
        out["explanation"] = explanation_scores(samples, positives, scorer)
    return out


def explanation_scores(samples: list[Sample], positives: list[Sample], scorer: TextScorer) -> dict:
    """Global scores over every sample (0 when a text is empty); local scores over the ``positives`` whose
    reference has box texts (ArtiBench's ``bboxes`` have none)."""
    global_idx = [i for i, s in enumerate(samples) if s.explanation and s.pred_explanation.strip()]
    pairs = [(samples[i].explanation, samples[i].pred_explanation.strip()) for i in global_idx]
    rouge, css = np.zeros(len(samples)), np.zeros(len(samples))
    rouge[global_idx] = [scorer.rouge_l(r, p) for r, p in pairs]
    if scorer.css_model is not None and pairs:
        css[global_idx] = scorer.css(*map(list, zip(*pairs)))
    positives = [s for s in positives if s.gt_texts]  # a reference without box texts has nothing to compare
    local_pairs, owner = [], []
    for k, s in enumerate(positives):
        _, mapping = best_iou_mapping(s.gt_boxes, s.pred_boxes)
        for i, j in mapping.items():
            if i < len(s.gt_texts) and j < len(s.pred_texts):
                local_pairs.append((s.gt_texts[i], s.pred_texts[j]))
                owner.append(k)
    local_rouge, local_css = np.zeros(len(positives)), np.zeros(len(positives))
    for k, (r, p) in zip(owner, local_pairs):
        local_rouge[k] += scorer.rouge_l(r, p)
    if scorer.css_model is not None and local_pairs:
        for k, value in zip(owner, scorer.css(*map(list, zip(*local_pairs)))):
            local_css[k] += value
    n_gt = np.array([len(s.gt_texts) for s in positives], float)
    per_image = lambda v: np.divide(v, n_gt, out=np.zeros_like(v), where=n_gt > 0)  # noqa: E731
    out = {"global_rouge_l": float(rouge.mean()) if len(samples) else 0.0, "global_samples": len(samples),
           "local_rouge_l": float(per_image(local_rouge).mean()) if len(positives) else 0.0,
           "local_samples": len(positives), "local_pairs": len(local_pairs)}
    if scorer.css_model is not None:
        out["global_css"] = float(css.mean()) if len(samples) else 0.0
        out["local_css"] = float(per_image(local_css).mean()) if len(positives) else 0.0
    return out
