"""The bundled artifact detector (README, "Detector"); depends on ``shards`` only.

``metrics`` (the field's metric families), ``model`` (``ArtifactDetector``, ``DetectorConfig``,
``save_detector``/``load_detector``), ``data`` (shards → examples, split by source, augmentation),
``train`` (Ray Train), ``eval`` (metrics + trivial baselines), ``predict`` (mask, boxes, overlay),
``vlm_eval`` (scores a VLM fine-tuned on ``shards.export``'s LLaMA-Factory data).
"""
