"""Hardware-aware search: features, the latency predictor, objectives, evolution.

Depends on `bfnas.bench` and `bfnas.models`; filled in by the predictor and search issues.
"""
