"""From a subnet to a file a device runs: ONNX export through torch (`onnx_export`), the
direct graph writer for FP32 and dynamic INT8 (`graph_writer`), the INT8 recipes as plain
data (`recipes`) and their application (`quantize`), the encoder's input names and generated
token batches (`encoder_io`, numpy only), and the content-addressed cache that never builds
the same artifact twice (`artifacts`).
"""
