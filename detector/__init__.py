"""The bundled artifact detector (README, "Detector"): it reads the factory's shards (``shards``).

``data`` (shards → examples, split by source, augmentation), ``model`` (``ArtifactDetector``,
``DetectorConfig``, ``save_detector``/``load_detector``), ``train`` (Ray Train), ``eval`` (metrics +
trivial baselines), ``predict`` (mask, boxes, overlay), ``rank`` (best of N), ``repair`` (the FLUX
engine re-synthesises what the detector finds; it loads FLUX through ``factory.models``), ``vlm_eval``
and ``vlm_replies`` (a VLM fine-tuned on ``shards.export``'s LLaMA-Factory data). Two rooms:
``metrics/`` (each benchmark family's metric definitions) and ``benchmarks/`` (readers of the public
benchmarks' own files and the scorers that run a detector or a VLM's replies on them).
"""
