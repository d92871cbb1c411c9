"""Hardware-aware search: features, the latency predictor, objectives, evolution.

Depends on `bfnas.bench` and `bfnas.models`. So far: `features` (subnet features, built
column-wise) and `predictor` (`LatencyPredictor`: LightGBM, spread models, text-file save).
"""
