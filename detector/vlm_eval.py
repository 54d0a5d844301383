"""Score a VLM's replies with the benchmarks' own metrics: on the LLaMA-Factory export's held-out answers,
or on a public benchmark's own files.

``python -m detector.vlm_eval --predictions generated_predictions.jsonl --out m.json [--css-model DIR]``
``python -m detector.vlm_eval --benchmark {artifactbench,synthscars,xaigd} --data DIR --predictions replies.jsonl
--out m.json [--css-model DIR]`` (``detector.benchmarks.vlm_scores``)

Without ``--benchmark`` the input is LLaMA-Factory's ``generated_predictions.jsonl`` for the export
(``shards.export``): one JSON object per line with the model's reply (``predict``) and the reference
reply (``label``), both parsed by ``detector.vlm_replies`` (boxes truncated to integers, empty boxes and
malformed items dropped; the export's images are not read, so boxes are not clipped). They are scored
as ArtifactBench does (``detector.metrics.artifactbench``): detection (accuracy, P / R / F1 of "has
artifacts") over every reply; localisation (mean best IoU, greedy ground-truth-order P / R / F1 at
IoU ≥ 0.5) over replies whose reference has artifacts; ROUGE-L (``rouge-score``, stemmed) and, with
``--css-model``, CSS (sentence-transformers) of the global explanation over every reply and of the
local explanations over replies whose reference has artifacts.

``--css-model`` is a local sentence-transformers folder (ArtifactBench uses
``sentence-transformers/paraphrase-MiniLM-L6-v2``: ``hf download`` it, then pass its folder) or a cached
Hub id; nothing is downloaded. Unreadable lines, missing or unknown ids, replies whose JSON does not
parse and, with ``--benchmark``, unreadable files, records and images (a truncated PNG included) are counted
in the output (``bad_inputs``, ``invalid_replies``), never fatal; a ``--data`` folder holding none of the
benchmark's layouts is a usage error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from detector.benchmarks.common import BadInputs
from detector.benchmarks.xaigd import XAIGD_SPLIT
from detector.eval import write_report
from detector.metrics.artifactbench import Sample, TextScorer, score
from detector.metrics.xaigd import TRANSFORMS
from detector.benchmarks.vlm_scores import ReplyTally, score_benchmark

BENCHMARKS = ("artifactbench", "synthscars", "xaigd")


def read_jsonl(path: str | Path, bad: BadInputs) -> list[dict]:
    """The JSON objects of a JSONL file; lines that are not JSON objects are counted as ``unreadable_line``."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            bad.add("unreadable_line", f"line {number}", str(err))
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.add("unreadable_line", f"line {number}", "not a JSON object")
    return rows


def export_samples(rows: list[dict], tally: ReplyTally, bad: BadInputs) -> list[Sample]:
    """LLaMA-Factory prediction rows → ArtifactBench samples (the reference is the ``label`` reply)."""
    samples = []
    for number, row in enumerate(rows, 1):
        predict, label = row.get("predict"), row.get("label")
        if not isinstance(predict, str) or not isinstance(label, str):
            bad.add("unreadable_line", f"row {number}", "expected string 'predict' and 'label'")
            continue
        ref, reply = ReplyTally().parse(label), tally.parse(predict)
        if not ref.valid:
            bad.add("invalid_reference", f"row {number}")
        samples.append(Sample(ref.has_artifacts, ref.boxes, ref.texts, ref.explanation, reply.boxes, reply.texts,
                              reply.explanation))
    return samples


def score_export(rows: list[dict], scorer: TextScorer, bad: BadInputs) -> dict:
    """The export's predictions scored as ArtifactBench does."""
    tally = ReplyTally()
    samples = export_samples(rows, tally, bad)
    return {**tally.report(), **bad.report(),
            "averaged_over": "detection and global explanation over every reply; localisation and local "
                             "explanation over replies whose reference has artifacts",
            "artifactbench": score(samples, scorer)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="JSONL replies (LLaMA-Factory's generated_predictions)")
    parser.add_argument("--out", required=True, help="metrics JSON file")
    parser.add_argument("--benchmark", choices=BENCHMARKS, help="score against a public benchmark's files")
    parser.add_argument("--data", help="the benchmark's folder (with --benchmark)")
    parser.add_argument("--css-model", "--embedding-model", dest="css_model", default=None,
                        help="local sentence-transformers folder (or cached id) for CSS, e.g. paraphrase-MiniLM-L6-v2")
    parser.add_argument("--xaigd-split", default=XAIGD_SPLIT)
    parser.add_argument("--xaigd-transform", choices=list(TRANSFORMS), default="keep-original-size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.benchmark and not args.data:
        parser.error("--benchmark needs --data DIR")
    scorer, bad = TextScorer(args.css_model, args.device), BadInputs()
    rows = read_jsonl(args.predictions, bad)
    if args.benchmark:
        try:
            metrics = score_benchmark(args.benchmark, args.data, rows, scorer, bad, args.xaigd_split,
                                      args.xaigd_transform)
        except FileNotFoundError as err:  # --data holds none of the benchmark's layouts
            parser.error(str(err))
    else:
        metrics = score_export(rows, scorer, bad)
    write_report(metrics, args.out)
    return metrics


if __name__ == "__main__":
    main()
