"""Fine-tune protocols: the one recipe by which every accuracy bfnas reports was made.

An accuracy names its task, its protocol and its seeds; two subnets are compared only under
one protocol. A protocol is the fine-tune's settings (all but the seed) and, when it
distils, how its teacher is made: the supernet's largest subnet fine-tuned on the task
with the teacher's own settings (labels only), whose logits on train the students learn
from. Its `hash()` is what the accuracy store files a fine-tune under.

The shipped protocols were chosen by measurement (benchmarks/finetune_protocol.py, its
results in benchmarks/results/finetune_protocol.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from bfnas.errors import InputError
from bfnas.models.digest import json_digest
from bfnas.models.train.finetune import FinetuneSettings


@dataclass(frozen=True)
class FinetuneProtocol:
    name: str
    settings: FinetuneSettings
    teacher: FinetuneSettings | None = None  # None: the labels alone
    about: str = ""

    def __post_init__(self) -> None:
        if (self.teacher is None) != (self.settings.distill == 0):  # a programming error
            raise ValueError(f"{self.name}: a teacher is needed exactly when distill > 0")

    def for_seed(self, seed: int) -> FinetuneSettings:
        return replace(self.settings, seed=seed)

    def identity(self) -> dict:
        """Everything that decides a fine-tune's number but the seed, the task and the
        starting weights: what makes two accuracies comparable."""
        settings = asdict(self.settings)
        settings.pop("seed")
        return {
            "settings": settings,
            "teacher": None if self.teacher is None else asdict(self.teacher),
        }

    def hash(self) -> str:
        return json_digest(self.identity())

    def describe(self) -> str:
        s = self.settings
        what = (
            f"{s.epochs} epoch(s) over all of train, lr {s.lr:g}, batch {s.batch}, "
            f"max_len {s.max_len}"
        )
        if s.freeze_word_embeddings:
            what += ", word embeddings frozen"
        if self.teacher is not None:
            what += (
                f", distilled ({s.distill:g} of the loss, T {s.temperature:g}) from the "
                f"largest subnet fine-tuned {self.teacher.epochs} epoch(s)"
            )
        return what


# Measured (benchmarks/results/finetune_protocol.md, offline task, 3 seeds): the full MiniLM
# 74.98 +- 0.98 % against a 6-epoch fine-tune's 74.69 %, the hand-scaled L1 ... L6 in order;
# distilling (0.5 of the loss, T 2) was no steadier (+- 1.36) and held L1 back (39.5 vs
# 43.7 %). No candidate met the goal of a seed std <= 0.5 points.
_FAST = FinetuneSettings(
    epochs=3,
    lr=1e-4,
    batch=32,
    max_len=64,
    length_grouped=True,
    freeze_word_embeddings=True,
)
# A demo's task is small (`task_data.DEMO_TASK`: 589 train sentences, 12 labels): under
# `standard` (57 steps of 32) L1 and L2 stay at 3-5 % dev accuracy over three seeds, below
# the 9.4 % majority class, and the full MiniLM reaches 50.3 %. Batches of 16 at 3e-4 (111
# steps) take L1 to 23.4 % and the full model to 52.8 +- 0.5 %, both families in order of
# size but for one neighbour pair (benchmarks/results/demo_protocol.md).
_DEMO = replace(_FAST, lr=3e-4, batch=16)
PROTOCOLS: dict[str, FinetuneProtocol] = {
    "standard": FinetuneProtocol(
        "standard",
        _FAST,
        about="the protocol of every accuracy bfnas compares: verification, baselines, "
        "the accuracy predictor's training rows",
    ),
    "demo": FinetuneProtocol(
        "demo",
        _DEMO,
        about="`bfnas demo`'s, for a task of a few hundred sentences in minutes; its "
        "accuracies are comparable only with each other",
    ),
}


def get_protocol(name: str) -> FinetuneProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InputError.bad_setting(
            "protocol", f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})"
        ) from None
