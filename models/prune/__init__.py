"""Pruning a BERT: the masks of lottery tickets (unstructured and by whole heads and FFN
neurons) and the dense smaller model a structured ticket becomes."""
