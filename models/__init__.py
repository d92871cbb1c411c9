"""Everything about the networks, before any device: which subnets exist, the networks
themselves, stage-1 training, and turning a subnet into a deployable ONNX / INT8 file.

- `space/`: the search-space vocabulary (`SearchSpace`, `SubnetConfig`, shipped presets).
- `nn/`: BERT, the elastic `SuperBert`, checkpoint loading, fake quantization.
- `train/`: pretraining data, supernet distillation, data parallelism, fine-tuning, one-shot
  scoring.
- `deploy/`: ONNX export, the direct graph writer, INT8 recipes, content-addressed artifacts.
- `digest.py` (the one file hash) and `outputs.py` (output paths checked first, atomic files).

Knows nothing of devices or search. Heavy modules (torch, onnx) are imported by the
submodules that need them, so `bfnas.models.space` stays cheap to import.
"""
