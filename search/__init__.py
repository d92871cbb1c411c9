"""Hardware-aware search: subnet features (`features`), the LightGBM `LatencyPredictor`
(`latency_predictor`) and its training rows from a store (`training`), objectives, the
evolutionary search (`evolution`) and the search job with device verification (`loop`),
reports and plots.

Depends on `bfnas.bench` and `bfnas.models`.
"""
