"""`SuperBert`: the weight-sharing elastic BERT, and extraction of dense subnets from it.

Every subnet uses the leading slice of every weight: the first `layers` layers, the first
`hidden` channels of the residual stream, the first `qkv` rows of Q/K/V, the first `ffn`
rows of the FFN. Heads split a layer's qkv slice evenly, so the head count changes no
weight shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfnas.errors import InputError
from bfnas.models.nn.bert import (
    Bert,
    Embeddings,
    Encoder,
    Layer,
    Vocab,
    additive_mask,
    init_bert_weights,
    run_embeddings,
    run_layer,
)
from bfnas.models.nn.fake_quant import fake_quant_activation, int8_linear
from bfnas.models.space.search_space import SearchSpace
from bfnas.models.space.subnet import SubnetConfig


@dataclass(frozen=True)
class SupernetDims:
    """The largest size of each dimension; every subnet is a leading slice of these."""

    layers: int
    hidden: int
    qkv: int
    ffn: int
    vocab: Vocab = field(default_factory=Vocab)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_space(cls, space: SearchSpace, vocab: Vocab | None = None) -> SupernetDims:
        big = space.largest()
        return cls(big.layers, big.hidden, space.max_qkv(), big.ffn[0], vocab or Vocab())


class SuperBert(nn.Module):
    def __init__(self, dims: SupernetDims, source: dict | None = None) -> None:
        super().__init__()
        self.dims = dims
        # Where the weights came from (checkpoint path and hash, or random seed); recorded
        # with every artifact made from this supernet.
        self.source = source or {"kind": "uninitialised"}
        eps = dims.vocab.layer_norm_eps
        self.embeddings = Embeddings(dims.hidden, dims.vocab)
        self.encoder = Encoder(
            [Layer(dims.hidden, dims.qkv, dims.ffn, eps) for _ in range(dims.layers)]
        )

    @classmethod
    def random(cls, dims: SupernetDims, seed: int = 0) -> SuperBert:
        """A randomly initialised supernet; the same dims and seed give the same weights."""
        model = cls(dims, source={"kind": "random", "seed": seed})
        init_bert_weights(model, torch.Generator().manual_seed(seed))
        return model.eval()

    # -- compatibility ---------------------------------------------------------------
    def check_fits(self, cfg: SubnetConfig, setting: str = "arch") -> None:
        """Refuse `cfg` where it is larger than this supernet; `setting` names what it came as
        (`arch`, or `space` for a space's largest member)."""
        d = self.dims
        if cfg.layers > d.layers:
            raise InputError.bad_setting(
                setting, f"{cfg.layers} exceeds the supernet's {d.layers}", field="layers"
            )
        if cfg.hidden > d.hidden:
            raise InputError.bad_setting(
                setting, f"{cfg.hidden} exceeds the supernet's {d.hidden}", field="hidden"
            )
        for name, limit in (("qkv", d.qkv), ("ffn", d.ffn)):
            for i, v in enumerate(getattr(cfg, name)):
                if v > limit:
                    raise InputError.bad_setting(
                        setting, f"{v} exceeds the supernet's {limit}", field=f"{name}[{i}]"
                    )

    def check_space(self, space: SearchSpace, setting: str = "space") -> None:
        """Refuse a space whose largest member does not fit in this supernet."""
        try:
            big = space.largest()
            self.check_fits(
                SubnetConfig.uniform(big.layers, big.hidden, 1, space.max_qkv(), big.ffn[0])
            )
        except InputError as exc:
            raise InputError.bad_setting(
                setting, f"space {space.name} does not fit the supernet: {exc.reason}", exc.field
            ) from None

    # -- running -----------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        cfg: SubnetConfig,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        int8: bool = False,
    ) -> Tensor:
        """The supernet run at `cfg`: the last hidden state, [batch, seq, cfg.hidden]
        (with `int8`, fake-quantized as in `states`)."""
        return self._run(input_ids, cfg, attention_mask, token_type_ids, int8)[0][-1]

    def states(
        self,
        input_ids: Tensor,
        cfg: SubnetConfig,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        int8: bool = False,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """What distillation compares: the hidden state after the embeddings and after each
        layer, and each layer's attention probabilities averaged over heads.

        With `int8`, the subnet runs as the `dynamic` INT8 recipe deploys it (fake-quantized
        projections and embedding tables, straight-through gradients): measured here, its
        output matches ONNX Runtime's INT8 graph of the same subnet to ~2e-6."""
        return self._run(input_ids, cfg, attention_mask, token_type_ids, int8, probs=[])

    def _run(
        self,
        input_ids: Tensor,
        cfg: SubnetConfig,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        int8: bool = False,
        probs: list[Tensor] | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        self.check_fits(cfg)
        eps = self.dims.vocab.layer_norm_eps
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = run_embeddings(
            self.embeddings,
            input_ids,
            token_type_ids,
            cfg.hidden,
            eps,
            fake_quant_activation if int8 else lambda t: t,
        )
        mask = additive_mask(attention_mask, x.dtype)
        hiddens = [x]
        for i in range(cfg.layers):
            x = run_layer(
                self.encoder.layer[i],
                x,
                mask,
                cfg.heads[i],
                cfg.qkv[i],
                cfg.ffn[i],
                cfg.hidden,
                eps,
                probs,
                int8_linear if int8 else F.linear,
            )
            hiddens.append(x)
        return hiddens, probs if probs is not None else []

    def sliced_state(self, cfg: SubnetConfig) -> dict[str, Tensor]:
        """The dense subnet's state dict as views of the supernet's leading slices (no copy):
        the same names and shapes as `extract(cfg).state_dict()`."""
        self.check_fits(cfg)
        source = self.state_dict()
        out = {}
        for name, shape in dense_shapes(cfg, self.dims.vocab).items():
            out[name] = source[name][tuple(slice(0, n) for n in shape)]
        return out

    def extract(self, cfg: SubnetConfig) -> Bert:
        """A plain dense `Bert` at `cfg` holding copies of the supernet's leading slices."""
        dense = Bert(cfg, self.dims.vocab)
        dense.load_state_dict({k: v.clone() for k, v in self.sliced_state(cfg).items()})
        return dense.eval()


def dense_shapes(cfg: SubnetConfig, vocab: Vocab) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a dense `Bert` at `cfg`, without building one."""
    h = cfg.hidden
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (vocab.vocab_size, h),
        "embeddings.position_embeddings.weight": (vocab.max_positions, h),
        "embeddings.token_type_embeddings.weight": (vocab.type_vocab, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i, (q, f) in enumerate(zip(cfg.qkv, cfg.ffn, strict=True)):
        p = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            shapes[f"{p}.attention.self.{part}.weight"] = (q, h)
            shapes[f"{p}.attention.self.{part}.bias"] = (q,)
        shapes[f"{p}.attention.output.dense.weight"] = (h, q)
        shapes[f"{p}.attention.output.dense.bias"] = (h,)
        shapes[f"{p}.intermediate.dense.weight"] = (f, h)
        shapes[f"{p}.intermediate.dense.bias"] = (f,)
        shapes[f"{p}.output.dense.weight"] = (h, f)
        shapes[f"{p}.output.dense.bias"] = (h,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}.{ln}.weight"] = (h,)
            shapes[f"{p}.{ln}.bias"] = (h,)
    return shapes


def weights_sha256(weights: nn.Module | Mapping[str, Tensor]) -> str:
    """Hash of a module's (or a state dict's) tensors: names, shapes, dtypes and bytes,
    stable across runs."""
    digest = hashlib.sha256()
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    for name, tensor in sorted(state.items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def supernet_outputs(supernet: SuperBert, cfg: SubnetConfig, inputs: list[dict]) -> list:
    """The supernet's last hidden state at `cfg` for each feed (numpy in, numpy out): the
    reference an exported subnet must match, without building the dense copy."""
    with torch.no_grad():
        return [
            supernet(
                torch.from_numpy(f["input_ids"]),
                cfg,
                torch.from_numpy(f["attention_mask"]),
                torch.from_numpy(f["token_type_ids"]),
            ).numpy()
            for f in inputs
        ]
