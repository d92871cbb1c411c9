"""The fine-tune's protocol options: length-grouped batches, frozen word embeddings and task
distillation from a teacher's logits."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from bfnas.errors import InputError
from bfnas.models.nn.checkpoint import minilm_dir, read_pooler
from bfnas.models.space.subnet import SubnetConfig
from bfnas.models.train.finetune import (
    FinetuneSettings,
    distill_loss,
    epoch_batches,
    finetune_classifier,
    prepare_task,
)
from bfnas.models.train.glue_task import read_task
from bfnas.models.train.task_classifier import predict_logits
from bfnas.models.train.task_data import TaskDataSettings, build_task

TINY = SubnetConfig.uniform(1, 128, 2, 64, 256)
TEACHER = SubnetConfig.uniform(2, 256, 8, 256, 1024)


@pytest.fixture(scope="module")
def two_class_task(tmp_path_factory):
    """The offline task at two modules' worth of docstring sentences."""
    folder = tmp_path_factory.mktemp("task") / "task"
    build_task(folder, TaskDataSettings(classes=2, max_per_class=150))
    return folder


@pytest.mark.parametrize("grouped", [False, True])
def test_an_epoch_uses_every_example_once(grouped):
    rng = random.Random(0)
    lengths = [rng.randint(3, 64) for _ in range(1000)]
    torch.manual_seed(0)
    batches = epoch_batches(lengths, 32, grouped)
    rows = [r for b in batches for r in b]
    assert sorted(rows) == list(range(1000))
    assert len(batches) == math.ceil(1000 / 32)  # the schedule counts on this many steps


def test_grouped_batches_pad_far_less_and_their_order_is_random():
    rng = random.Random(0)
    lengths = [rng.randint(3, 64) for _ in range(3200)]

    def padding(batches):
        return sum(max(lengths[r] for r in b) * len(b) for b in batches) / sum(lengths)

    torch.manual_seed(0)
    plain = epoch_batches(lengths, 32, False)
    torch.manual_seed(0)
    grouped = epoch_batches(lengths, 32, True)
    assert padding(grouped) < 1.1 < 1.5 < padding(plain)
    # Not shortest first: the batches' longest rows are not in increasing order.
    longest = [max(lengths[r] for r in b) for b in grouped]
    assert longest != sorted(longest)


def test_distill_loss_is_the_cross_entropy_to_the_teachers_distribution():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    # At T=1 against a one-hot teacher it is the plain cross-entropy with those labels.
    hard = torch.full((5, 3), -1e4)
    labels = torch.tensor([0, 2, 1, 1, 0])
    hard[torch.arange(5), labels] = 1e4
    assert torch.allclose(distill_loss(student, hard, 1.0), F.cross_entropy(student, labels))
    # Least where the student agrees with the teacher.
    assert distill_loss(teacher, teacher, 2.0) < distill_loss(student, teacher, 2.0)


def test_distilling_needs_a_teacher_and_sane_settings(minilm_supernet, two_class_task):
    for bad in ({"distill": 1.5}, {"distill": -0.1}, {"temperature": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FinetuneSettings(**bad)
    settings = FinetuneSettings(epochs=1, max_len=32, distill=0.5)
    data = prepare_task(minilm_supernet, TINY, read_task(two_class_task), minilm_dir(), settings)
    with pytest.raises(ValueError, match="teacher"):
        finetune_classifier(minilm_supernet, TINY, data, settings)


def test_frozen_word_embeddings_stay_and_a_teacher_pulls_the_student(
    minilm_supernet,
    two_class_task,
):
    task = read_task(two_class_task)
    base = FinetuneSettings(epochs=1, lr=3e-4, batch=16, max_len=32, length_grouped=True)
    data = prepare_task(minilm_supernet, TINY, task, minilm_dir(), base)
    pooler = read_pooler("minilm")
    words = minilm_supernet.extract(TINY).embeddings.word_embeddings.weight.detach().clone()

    frozen = FinetuneSettings(**{**base.__dict__, "freeze_word_embeddings": True})
    model, _ = finetune_classifier(minilm_supernet, TINY, data, frozen, pooler)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, words)
    trained, _ = finetune_classifier(minilm_supernet, TINY, data, base, pooler)
    assert not torch.equal(trained.bert.embeddings.word_embeddings.weight, words)

    # A teacher whose logits say the opposite of the labels: a student distilled only from it
    # learns the teacher, one trained on the labels alone does not.
    labels = data.train.labels
    contrary = F.one_hot(1 - labels, 2).float() * 8.0

    def agreement(distill: float) -> float:
        settings = FinetuneSettings(
            **{**base.__dict__, "epochs": 3, "lr": 1e-3, "distill": distill}
        )
        student, _ = finetune_classifier(
            minilm_supernet, TINY, data, settings, pooler, teacher_logits=contrary
        )
        predicted = predict_logits(student, data.train, 32, data.pad).argmax(-1)
        return float((predicted == 1 - labels).float().mean())

    assert agreement(0.0) < 0.4 < 0.6 < agreement(1.0)


def test_a_teacher_is_made_once_and_read_back_checked(minilm_supernet, two_class_task, tmp_path):
    from dataclasses import replace

    from bfnas.models.train import task_teacher
    from bfnas.models.train.protocols import FinetuneProtocol

    student = FinetuneSettings(epochs=1, batch=32, max_len=32, length_grouped=True, distill=0.5)
    protocol = FinetuneProtocol(
        "t", student, teacher=replace(student, distill=0.0, lr=1e-3, epochs=3)
    )
    data = prepare_task(
        minilm_supernet, TINY, read_task(two_class_task), minilm_dir(), protocol.settings
    )
    logits, about = task_teacher.teacher_logits(minilm_supernet, TEACHER, data, protocol, tmp_path)
    assert logits.shape == (len(data.train.ids), 2)
    assert about["arch"] == TEACHER.to_dict()
    # Learned the task: it agrees with most of train's labels.
    assert about["train_accuracy"] > 0.6

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher was fine-tuned again")

    real = task_teacher.finetune_classifier
    task_teacher.finetune_classifier = no_training
    try:
        again, _ = task_teacher.teacher_logits(minilm_supernet, TEACHER, data, protocol, tmp_path)
        assert torch.equal(again, logits)
        # Another teacher recipe is another teacher.
        other = FinetuneProtocol("u", student, teacher=replace(student, distill=0.0, lr=2e-4))
        with pytest.raises(AssertionError, match="again"):
            task_teacher.teacher_logits(minilm_supernet, TEACHER, data, other, tmp_path)
        # Logits changed on disk are refused in one line, not trained on.
        (npy,) = tmp_path.glob(f"*/{task_teacher.LOGITS_FILE}")
        raw = bytearray(npy.read_bytes())
        raw[-1] ^= 0xFF
        npy.write_bytes(bytes(raw))
        with pytest.raises(InputError, match="sha256"):
            task_teacher.teacher_logits(minilm_supernet, TEACHER, data, protocol, tmp_path)
    finally:
        task_teacher.finetune_classifier = real
