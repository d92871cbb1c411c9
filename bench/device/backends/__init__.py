"""Inference backends a worker times a model with: ONNX Runtime (`ort`, with its provider
options in `ort_options`) and TensorRT (`tensorrt/`).
"""
