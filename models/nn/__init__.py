"""The networks: a dense BERT whose layers may differ (`bert`), the weight-sharing elastic
`SuperBert` and extraction of dense subnets (`supernet`), loading Hugging Face checkpoints
(`checkpoint`), and int8 fake quantization for quantization-aware training (`fake_quant`).
"""
