"""The detector's metrics: each benchmark family's own definitions.

``on_shards`` (every family applied to our shards' masks: pooled and per-image pixel scores, boxes,
image level), ``xaigd`` and ``xaigd_instances`` (X-AIGD), ``legion`` (LEGION / SynthScars),
``artifactbench`` (ArtifactBench / ArtiBench).
"""
