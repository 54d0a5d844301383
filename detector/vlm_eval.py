"""Score a VLM fine-tuned on the LLaMA-Factory export (``shards.export``) the way ArtifactBench does.

``python -m detector.vlm_eval --predictions generated_predictions.jsonl --out metrics.json
[--embedding-model sentence-transformers/paraphrase-MiniLM-L6-v2]``

The input is LLaMA-Factory's ``generated_predictions.jsonl``: one JSON object per line with the
model's reply (``predict``) and the reference reply (``label``), both in the export's answer format
(``shards.export.parse_answer``). Reported:

* detection — "does the image have artifacts" (a reply with boxes) as image-level balanced accuracy,
  precision, recall, F1;
* localisation — greedy one-to-one box matching at IoU ≥ 0.5 → P, R, F1 per image, averaged over
  images with reference boxes, and mean best IoU (``detector.metrics.box_f1``);
* explanation — ROUGE-L of the global explanation (images whose reference has artifacts) and of
  the local explanations of matched boxes; with ``--embedding-model``, also the cosine similarity
  of mean-pooled sentence embeddings (the pooling of sentence-transformers' paraphrase-MiniLM-L6-v2,
  which ArtiAgent uses), loaded from a local folder or the HF cache, never downloaded;
* ``invalid_replies`` — replies whose JSON block does not parse (scored as "no boxes").
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector.eval import write_report
from detector.metrics import box_f1, greedy_match, image_level, rouge_l
from shards.export import ParsedAnswer, parse_answer


@dataclass
class ReplyPair:
    predicted: ParsedAnswer
    reference: ParsedAnswer


class SentenceEmbedder:
    """Mean-pooled, L2-normalised embeddings from a transformers encoder (``AutoModel`` + tokenizer)."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        except OSError as err:
            fetch = "" if path.startswith(("/", ".")) else f"; fetch it with `hf download {path}`"
            raise FileNotFoundError(f"embedding model {path!r} could not be loaded ({err}){fetch}") from err
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def cosine(self, candidates: list[str], references: list[str]) -> list[float]:
        """Cosine similarity of each candidate with its reference."""
        if not candidates:
            return []
        a, b = self(candidates), self(references)
        return [float(x) for x in (a * b).sum(1)]


def read_predictions(path: str | Path) -> list[ReplyPair]:
    """LLaMA-Factory's ``generated_predictions.jsonl`` → parsed (predicted, reference) replies."""
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(ReplyPair(parse_answer(row["predict"]), parse_answer(row["label"])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: expected a JSON object with 'predict' and 'label' ({err})") from err
    return pairs


def score(pairs: list[ReplyPair], embedder: SentenceEmbedder | None = None) -> dict:
    """Detection, localisation and explanation metrics of the predicted replies against the references."""
    if not pairs:
        raise ValueError("no predictions to score")
    truth = np.array([p.reference.has_artifacts for p in pairs])
    guess = np.array([p.predicted.has_artifacts for p in pairs])
    metrics: dict = {"n_replies": len(pairs), "invalid_replies": sum(not p.predicted.valid for p in pairs),
                     **{f"image_{k}": v for k, v in image_level(truth, guess).items()},
                     **box_f1([p.predicted.boxes for p in pairs], [p.reference.boxes for p in pairs])}

    flawed = [p for p in pairs if p.reference.has_artifacts]
    global_pairs = ([p.predicted.global_explanation for p in flawed], [p.reference.global_explanation for p in flawed])
    local_pairs: tuple[list[str], list[str]] = ([], [])
    for p in flawed:
        for i, j, _ in greedy_match(p.predicted.boxes, p.reference.boxes):
            local_pairs[0].append(p.predicted.explanations[i])
            local_pairs[1].append(p.reference.explanations[j])
    for name, (candidates, references) in (("global", global_pairs), ("local", local_pairs)):
        metrics[f"{name}_explanations"] = len(candidates)
        metrics[f"{name}_rouge_l"] = float(np.mean([rouge_l(c, r) for c, r in zip(candidates, references)])
                                           ) if candidates else 0.0
        if embedder is not None:
            cosines = embedder.cosine(candidates, references)
            metrics[f"{name}_cosine"] = float(np.mean(cosines)) if cosines else 0.0
    return metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="LLaMA-Factory's generated_predictions.jsonl")
    parser.add_argument("--out", required=True, help="metrics JSON file")
    parser.add_argument("--embedding-model", default=None,
                        help="local folder or cached HF id, e.g. sentence-transformers/paraphrase-MiniLM-L6-v2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    embedder = SentenceEmbedder(args.embedding_model, args.device) if args.embedding_model else None
    metrics = score(read_predictions(args.predictions), embedder)
    write_report(metrics, args.out)
    return metrics


if __name__ == "__main__":
    main()
