"""The public benchmarks, read from their own on-disk layouts, and the scorers that use them.

Readers: ``common`` (the tally of bad inputs, image and parquet reading), ``xaigd`` (X-AIGD),
``legion`` (SynthScars / LEGION), ``artifactbench`` (ArtifactBench / ArtiBench). Scorers:
``detector_scores`` (a trained detector, ``python -m detector.eval --benchmark``) and ``vlm_scores``
(a VLM's replies, ``python -m detector.vlm_eval``).
"""
