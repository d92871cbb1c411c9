"""From a subnet to a file a device runs: ONNX export through torch (`onnx_export`), the
direct graph writer for FP32 and dynamic INT8 (`graph_writer`), the INT8 recipes
(`quantize`), and the content-addressed cache that never builds the same artifact twice
(`artifacts`).
"""
