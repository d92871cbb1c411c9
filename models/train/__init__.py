"""Stage 1 and the quality checks of a subnet: pretraining token shards from raw text
(`pretraining_data`), distillation of the supernet from a teacher (`distill`), data-parallel
training under torchrun (`parallel`), fine-tuning on a GLUE-format task (`finetune`) and
one-shot scoring against the teacher (`oneshot`).
"""
