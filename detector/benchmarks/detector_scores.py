"""A trained detector on a public benchmark's own files, scored with that benchmark's own metrics.

``python -m detector.eval --benchmark {xaigd,synthscars,artifactbench} --data DIR --checkpoint CKPT --out m.json``

The detector predicts at its input size; its mask is upsampled to each image's own size and
thresholded (``--threshold``), its image score likewise; boxes are the mask's connected components.

* ``xaigd`` — X-AIGD category-agnostic pixel metrics (IoU, PixP, PixR, PixF1 pooled over every image,
  overall and per generator) after X-AIGD's mask transform (``--xaigd-transform``), and image-level
  balanced accuracy / P / R / F1 (every labelled row is AI-generated, so only recall is informative);
  per category (``detector.metrics.xaigd_instances``): fine-grained pixel metrics (after the same
  transform) and instance-level P@t / R@t / F1@t at the image's own size for each
  ``--xaigd-overlap-threshold``, both overall and per generator. The predicted mask and its boxes are
  submitted under ``submitted_categories``: a category-agnostic detector's under every category (X-AIGD
  itself scores such a model category-agnostically only, so compare only PixR and R@t of those rows);
* ``synthscars`` — LEGION's per-image mIoU, mIoU without background, F1 and IoU, averaged over every image;
* ``artifactbench`` — ArtifactBench detection over every image and localisation over images with artifacts;
  an image scored "no artifacts" (image score ≤ ``--threshold``) submits no boxes, as ArtiAgent's
  evaluation gives a reply saying so none (``detector.benchmarks.artifactbench`` reads either layout).

Inputs that cannot be evaluated (unreadable file or image, missing image, missing or mis-sized mask,
malformed polygon or box, unknown category) are skipped and counted under ``bad_inputs``; they never stop the run.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from detector.benchmarks.common import BadInputs, Skip, open_image
from detector.benchmarks.legion import iter_legion, legion_truth
from detector.benchmarks.xaigd import XAIGD_SPLIT, iter_xaigd
from detector.benchmarks.artifactbench import iter_artifactbench
from detector.metrics.on_shards import mask_to_boxes
from detector.metrics.artifactbench import Sample, score
from detector.metrics.legion import LegionTotals, image_scores
from detector.metrics.xaigd import ARTIFACT, XaigdPixelCounts, polygon_mask, transform_mask, xaigd_image_level
from detector.metrics.xaigd_instances import (XaigdCategoryTally, category_masks, category_scores, gt_instances,
                                              submitted_categories)
from detector.model import load_detector
from detector.predict import Prediction, infer

BENCHMARKS = ("xaigd", "synthscars", "artifactbench")
Item = tuple[str, Callable[[], tuple[Image.Image, Any]]]  # (id, loader → (image, ground truth)); loader may Skip


def stream(model, items: Iterable[Item], batch_size: int, bad: BadInputs
           ) -> Iterator[tuple[str, Image.Image, Any, Prediction]]:
    """Load each item (counting the ones that ``Skip`` or fail to decode), predict in batches."""
    items = iter(items)
    while batch := list(islice(items, batch_size)):
        loaded = []
        for key, load in batch:
            try:
                loaded.append((key, *load()))
            except Skip as skip:
                bad.add(skip.kind, key, skip.detail)
            except ValueError as err:
                bad.add("unreadable_image", key, str(err))
        if loaded:
            for (key, image, truth), pred in zip(loaded, infer(model, [im for _, im, _ in loaded])):
                yield key, image, truth, pred


def type_scores(pred: Prediction) -> dict[str, float]:
    """A prediction's per-category scores if the detector has them, else its type head's."""
    return getattr(pred, "categories", None) or pred.types


def category_rule(pred: Prediction) -> str:
    """How ``submitted_categories`` assigns this prediction: by its ``type_head`` or to ``every_category``."""
    return "type_head" if category_scores(type_scores(pred)) else "every_category"


def _xaigd(model, data: Path, threshold: float, batch_size: int, bad: BadInputs, split: str, transform: str,
           overlap_thresholds: tuple[float, ...] = (0.5,)) -> dict:
    def load(record):
        if record.image is None:
            raise Skip("missing_image", "no image bytes in the row")
        image = open_image(record.image)
        if image.size != (record.width, record.height):
            raise Skip("size_mismatch", f"image {image.size}, record {(record.width, record.height)} (w, h)")
        return image, record

    overall, per_generator = XaigdPixelCounts(), defaultdict(XaigdPixelCounts)
    categories = XaigdCategoryTally(overlap_thresholds)
    categories_per_generator = defaultdict(lambda: XaigdCategoryTally(overlap_thresholds))
    guesses, rules = [], set()
    items = ((r.key, lambda r=r: load(r)) for r in iter_xaigd(data, split, bad))
    for _, _, record, pred in stream(model, items, batch_size, bad):
        gt = transform_mask(polygon_mask(record.polygons, record.height, record.width), transform)
        predicted = pred.probability > threshold
        mask = transform_mask(np.where(predicted, ARTIFACT, 0).astype(np.uint8), transform)
        overall.add(mask, gt)
        per_generator[record.generator].add(mask, gt)
        guesses.append(int(pred.score > threshold))
        gts = category_masks(record.labels, record.height, record.width)
        submitted, boxes = submitted_categories(type_scores(pred), threshold), mask_to_boxes(predicted)
        instances = {c: gt_instances(m) for c, m in gts.items()}
        gts = {c: transform_mask(m, transform) for c, m in gts.items()}
        rules.add(category_rule(pred))
        for tally in (categories, categories_per_generator[record.generator]):
            tally.add_pixels({c: mask for c in submitted}, gts)
            tally.add_instances(instances, {c: boxes for c in submitted})
    by_generator = {g: t.report() for g, t in sorted(categories_per_generator.items())}
    return {"split": split, "transform": transform, "category_agnostic": overall.report(),
            "per_generator": {g: c.report() for g, c in sorted(per_generator.items())},
            "image_level": xaigd_image_level([1] * len(guesses), guesses),
            "category_rule": "/".join(sorted(rules)) or "none", **categories.report(),
            "fine_grained_per_generator": {g: r["fine_grained"] for g, r in by_generator.items()},
            "instance_per_generator": {g: r["instance"] for g, r in by_generator.items()}}


def _synthscars(model, data: Path, threshold: float, batch_size: int, bad: BadInputs) -> dict:
    def load(record):
        image = open_image(record.image_path, exif=True)
        return image, legion_truth(record, image.height, image.width)

    totals = LegionTotals()
    items = ((r.image_id, lambda r=r: load(r)) for r in iter_legion(data, bad))
    for _, _, gt, pred in stream(model, items, batch_size, bad):
        totals.add(image_scores((pred.probability > threshold).astype(np.uint8), gt))
    return totals.report()


def _artifactbench(model, data: Path, threshold: float, batch_size: int, bad: BadInputs) -> dict:
    samples = []
    items = ((r.id, lambda r=r: (open_image(r.image), r)) for r in iter_artifactbench(data, bad))
    for _, _, record, pred in stream(model, items, batch_size, bad):
        positive = pred.score > threshold  # "no artifacts" submits no boxes, as a reply saying so does
        boxes = mask_to_boxes(pred.probability > threshold) if positive else []
        samples.append(Sample(record.has_artifacts, record.boxes, record.texts, record.explanation, boxes,
                              predicted_positive=positive))
    return score(samples)


AVERAGED_OVER = {
    "xaigd": "pixel and instance counts pooled over every evaluated image; image level over every evaluated image",
    "synthscars": "mean over every evaluated image, positive or not (LEGION)",
    "artifactbench": "detection over every evaluated image; localisation over images with artifacts",
}


def evaluate_benchmark(benchmark: str, data: str | Path, checkpoint: str | Path, threshold: float = 0.5,
                       batch_size: int = 16, device: str = "cpu", split: str = XAIGD_SPLIT,
                       transform: str = "keep-original-size", overlap_thresholds: tuple[float, ...] = (0.5,)) -> dict:
    """The detector's metrics on ``benchmark``'s files under ``data``, with the bad inputs counted."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    model, bad, data = load_detector(checkpoint, device), BadInputs(), Path(data)
    if benchmark == "xaigd":
        metrics = _xaigd(model, data, threshold, batch_size, bad, split, transform, tuple(overlap_thresholds))
        evaluated = metrics["category_agnostic"]["evaluated_images"]
    elif benchmark == "synthscars":
        metrics = _synthscars(model, data, threshold, batch_size, bad)
        evaluated = metrics["images"]
    else:
        metrics = _artifactbench(model, data, threshold, batch_size, bad)
        evaluated = metrics["detection"]["tp"] + metrics["detection"]["fp"] + metrics["detection"]["fn"] + \
            metrics["detection"]["tn"]
    return {"benchmark": benchmark, "data": str(data), "checkpoint": str(checkpoint), "threshold": threshold,
            "n_images": evaluated, **bad.report(), "averaged_over": AVERAGED_OVER[benchmark], benchmark: metrics}
