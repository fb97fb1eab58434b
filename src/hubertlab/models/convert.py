"""State-dict and config conversion between hubertlab and transformers, torchaudio and fairseq.

Every foreign layout is first renamed to transformers' key names (the three share a layout), then
to ours (fused qkv, `weight_g`/`weight_v` for the position conv). Head keys are handled per format.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import torch

from hubertlab.data.masking import MaskConfig
from hubertlab.models.config import CONV_KERNELS, HubertConfig

Tensors = dict[str, torch.Tensor]

# transformers name -> ours; regexes applied to each key (the layer ones keep the index).
_HF_TO_OURS = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"backbone.cnn.layers.\1.conv."),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"backbone.cnn.layers.\1.norm."),
    (r"feature_projection\.layer_norm\.", "backbone.feature_norm."),
    (r"feature_projection\.projection\.", "backbone.feature_proj."),
    (r"masked_spec_embed$", "mask_embedding"),
    (
        r"encoder\.pos_conv_embed\.conv\.(weight_g|parametrizations\.weight\.original0)$",
        "backbone.encoder.pos_conv.weight_g",
    ),
    (
        r"encoder\.pos_conv_embed\.conv\.(weight_v|parametrizations\.weight\.original1)$",
        "backbone.encoder.pos_conv.weight_v",
    ),
    (r"encoder\.pos_conv_embed\.conv\.bias$", "backbone.encoder.pos_conv.bias"),
    (r"encoder\.layer_norm\.", "backbone.encoder.norm."),
    (
        r"encoder\.layers\.(\d+)\.attention\.out_proj\.",
        r"backbone.encoder.layers.\1.attention.out.",
    ),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"backbone.encoder.layers.\1.attn_norm."),
    (
        r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.",
        r"backbone.encoder.layers.\1.fc1.",
    ),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"backbone.encoder.layers.\1.fc2."),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.", r"backbone.encoder.layers.\1.ffn_norm."),
]
_QKV = re.compile(r"encoder\.layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")

_TORCHAUDIO_TO_HF = [
    (r"^encoder\.feature_projection\.", "feature_projection."),
    (r"^encoder\.transformer\.", "encoder."),
    (r"^mask_generator\.mask_embedding$", "masked_spec_embed"),
]
_FAIRSEQ_TO_HF = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (
        r"^feature_extractor\.conv_layers\.(\d+)\.2\.(1\.)?",
        r"feature_extractor.conv_layers.\1.layer_norm.",
    ),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^mask_emb$", "masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.", "encoder.pos_conv_embed.conv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.", r"encoder.layers.\1.attention."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.feed_forward.output_dense."),
]
_HF_POS = "encoder.pos_conv_embed.conv.parametrizations.weight."
FAIRSEQ_SPECIAL_ROWS = 4  # <s>, <pad>, </s>, <unk> precede the units in each fairseq dictionary


BACKBONE_PREFIX = "backbone."
_LEGACY_BACKBONE = ("cnn.", "feature_norm.", "feature_proj.", "encoder.")


def legacy_to_ours(state: Tensors) -> Tensors:
    """Our checkpoints from before the backbone/head split (flat `cnn.*`, `encoder.*` keys)
    -> today's keys (`backbone.cnn.*`, ...); today's state dicts pass unchanged."""
    return {
        (BACKBONE_PREFIX + k if k.startswith(_LEGACY_BACKBONE) else k): v for k, v in state.items()
    }


def _rename(state: Tensors, rules: list[tuple[str, str]]) -> Tensors:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def hf_to_ours(state: Tensors) -> Tensors:
    """transformers HubertModel keys (optionally under `hubert.`) -> ours; fuses q, k, v."""
    state = {k.removeprefix("hubert."): v for k, v in state.items()}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, value in state.items():
        m = _QKV.match(key)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        else:
            rest[key] = value
    out = _rename(rest, _HF_TO_OURS)
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer}: attention {kind} lacks one of q/k/v projections")
        out[f"backbone.encoder.layers.{layer}.attention.qkv.{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return out


def ours_to_hf(state: Tensors) -> Tensors:
    """Our backbone keys -> transformers HubertModel keys (the head is dropped)."""
    out = {}
    reverse = {
        "cnn.layers.{}.conv.": "feature_extractor.conv_layers.{}.conv.",
        "cnn.layers.{}.norm.": "feature_extractor.conv_layers.{}.layer_norm.",
        "encoder.layers.{}.attention.out.": "encoder.layers.{}.attention.out_proj.",
        "encoder.layers.{}.attn_norm.": "encoder.layers.{}.layer_norm.",
        "encoder.layers.{}.fc1.": "encoder.layers.{}.feed_forward.intermediate_dense.",
        "encoder.layers.{}.fc2.": "encoder.layers.{}.feed_forward.output_dense.",
        "encoder.layers.{}.ffn_norm.": "encoder.layers.{}.final_layer_norm.",
    }
    fixed = {
        "feature_norm.": "feature_projection.layer_norm.",
        "feature_proj.": "feature_projection.projection.",
        "mask_embedding": "masked_spec_embed",
        "encoder.pos_conv.weight_g": _HF_POS + "original0",
        "encoder.pos_conv.weight_v": _HF_POS + "original1",
        "encoder.pos_conv.bias": "encoder.pos_conv_embed.conv.bias",
        "encoder.norm.": "encoder.layer_norm.",
    }
    for key, value in state.items():
        if key.startswith(("final_proj.", "unit_embeddings.")):
            continue
        key = key.removeprefix("backbone.")
        m = re.match(r"encoder\.layers\.(\d+)\.attention\.qkv\.(weight|bias)$", key)
        if m:
            for name, part in zip("qkv", value.chunk(3), strict=True):
                out[f"encoder.layers.{m[1]}.attention.{name}_proj.{m[2]}"] = part.clone()
            continue
        m = re.match(r"(cnn|encoder)\.layers\.(\d+)\.", key)
        if m:
            generic = key.replace(f".{m[2]}.", ".{}.", 1)
            for src, dst in reverse.items():
                if generic.startswith(src):
                    out[dst.format(m[2]) + generic[len(src) :]] = value
                    break
            else:
                raise ValueError(f"no transformers name for key {key!r}")
            continue
        for src, dst in fixed.items():
            if key.startswith(src):
                out[dst + key[len(src) :]] = value
                break
        else:
            raise ValueError(f"no transformers name for key {key!r}")
    return out


def torchaudio_to_ours(state: Tensors) -> Tensors:
    """torchaudio Wav2Vec2Model / HuBERTPretrainModel keys (with or without a Lightning `model.`
    prefix) -> ours, head included when present."""
    state = {k.removeprefix("model.").removeprefix("wav2vec2."): v for k, v in state.items()}
    head = {}
    if "logit_generator.label_embeddings" in state:
        head["unit_embeddings.0"] = state.pop("logit_generator.label_embeddings")
        for kind in ("weight", "bias"):
            head[f"final_proj.0.{kind}"] = state.pop(f"logit_generator.final_proj.{kind}")
    return {**hf_to_ours(_rename(state, _TORCHAUDIO_TO_HF)), **head}


def fairseq_to_ours(state: Tensors, num_units: tuple[int, ...] | None = None) -> Tensors:
    """fairseq HubertModel keys -> ours. label_embs_concat is split per unit set and loses its
    4 special-token rows; `num_units` gives the sets (default: one set of all rows - 4)."""
    state = dict(state)
    head = {}
    if "label_embs_concat" in state:
        table = state.pop("label_embs_concat")
        if num_units is None:
            num_units = (table.shape[0] - FAIRSEQ_SPECIAL_ROWS,)
        sizes = [k + FAIRSEQ_SPECIAL_ROWS for k in num_units]
        if sum(sizes) != table.shape[0]:
            raise ValueError(
                f"label_embs_concat has {table.shape[0]} rows, expected {sum(sizes)} for unit sets "
                f"{list(num_units)} (+{FAIRSEQ_SPECIAL_ROWS} special rows each)"
            )
        proj_w, proj_b = state.pop("final_proj.weight"), state.pop("final_proj.bias")
        final_dim = table.shape[1]
        untied = proj_w.shape[0] == final_dim * len(num_units) and len(num_units) > 1
        for j, part in enumerate(table.split(sizes)):
            head[f"unit_embeddings.{j}"] = part[FAIRSEQ_SPECIAL_ROWS:].clone()
            rows = slice(j * final_dim, (j + 1) * final_dim) if untied else slice(0, final_dim)
            head[f"final_proj.{j}.weight"] = proj_w[rows].clone()
            head[f"final_proj.{j}.bias"] = proj_b[rows].clone()
    state = {k: v for k, v in state.items() if not k.startswith("label_embs")}
    return {**hf_to_ours(_rename(state, _FAIRSEQ_TO_HF)), **head}


def infer_config(state: Tensors, **known: Any) -> HubertConfig:
    """A config for our-layout `state` from tensor shapes, plus `known` fields. What shapes do
    not tell follows the published models: pre-LN iff the CNN has LayerNorms, 64-dim heads
    (16 heads for 1280 dims), standard strides."""
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    convs = sorted(
        (int(m[1]), v)
        for k, v in state.items()
        if (m := re.match(r"cnn\.layers\.(\d+)\.conv\.weight$", k))
    )
    if not convs:
        raise ValueError("no CNN weights (cnn.layers.N.conv.weight) found in the state dict")
    conv_norm = "layer" if "cnn.layers.1.norm.weight" in state else "group"
    hidden_dim = state["feature_proj.weight"].shape[0]
    num_layers = 1 + max(
        int(m[1]) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))
    )
    v = state["encoder.pos_conv.weight_v"]
    fields: dict[str, Any] = dict(
        conv_channels=tuple(w.shape[0] for _, w in convs),
        conv_kernels=tuple(w.shape[2] for _, w in convs),
        conv_norm=conv_norm,
        conv_bias="cnn.layers.0.conv.bias" in state,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        num_heads=16 if hidden_dim == 1280 else max(1, hidden_dim // 64),
        ffn_dim=state["encoder.layers.0.fc1.weight"].shape[0],
        pre_ln=conv_norm == "layer",
        pos_conv_kernel=v.shape[2],
        pos_conv_groups=hidden_dim // v.shape[1],
    )
    if len(convs) != 7 or fields["conv_kernels"] != CONV_KERNELS:
        fields["conv_strides"] = known.pop("conv_strides", None) or tuple(
            max(1, k // 2) for k in fields["conv_kernels"]
        )
    heads = sorted(k for k in state if k.startswith("unit_embeddings."))
    if heads:
        fields["num_units"] = tuple(state[k].shape[0] for k in heads)
        fields["final_dim"] = state[heads[0]].shape[1]
    fields.update(known)
    return HubertConfig.from_dict(fields, where="inferred config")


def _literal_layers(text: str) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's conv_feature_layers string ("[(512,10,5)] + [(512,3,2)] * 4 ...")
    without eval: only list/tuple literals, + and * are allowed."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        return ast.literal_eval(node)

    return [tuple(x) for x in ev(ast.parse(text, mode="eval").body)]


def fairseq_config_fields(args: dict[str, Any]) -> dict[str, Any]:
    """HubertConfig fields from a fairseq args/cfg.model mapping (missing ones are skipped)."""
    names = {
        "encoder_embed_dim": "hidden_dim",
        "encoder_layers": "num_layers",
        "encoder_attention_heads": "num_heads",
        "encoder_ffn_embed_dim": "ffn_dim",
        "layer_norm_first": "pre_ln",
        "conv_pos": "pos_conv_kernel",
        "conv_pos_groups": "pos_conv_groups",
        "dropout": "dropout",
        "attention_dropout": "attention_dropout",
        "activation_dropout": "activation_dropout",
        "dropout_input": "input_dropout",
        "encoder_layerdrop": "layerdrop",
        "final_dim": "final_dim",
        "logit_temp": "logit_temp",
        "conv_bias": "conv_bias",
        "feature_grad_mult": "feature_grad_mult",
        "normalize": "normalize_waveform",
    }
    fields = {ours: args[theirs] for theirs, ours in names.items() if args.get(theirs) is not None}
    if args.get("extractor_mode") is not None:
        fields["conv_norm"] = "layer" if args["extractor_mode"] == "layer_norm" else "group"
    if isinstance(args.get("conv_feature_layers"), str):
        layers = _literal_layers(args["conv_feature_layers"])
        fields["conv_channels"] = tuple(c for c, _, _ in layers)
        fields["conv_kernels"] = tuple(k for _, k, _ in layers)
        fields["conv_strides"] = tuple(s for _, _, s in layers)
    return fields


def hf_config_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """HubertConfig fields from a transformers HubertConfig dict (config.json)."""
    if hf.get("feat_proj_layer_norm", True) is False or hf.get("conv_pos_batch_norm", False):
        raise ValueError(
            "transformers configs without feat_proj_layer_norm or with "
            "conv_pos_batch_norm are not supported"
        )
    for key in ("feat_extract_activation", "hidden_act"):
        if hf.get(key, "gelu") != "gelu":
            raise ValueError(f"transformers config {key}={hf[key]!r}: only 'gelu' is supported")
    return dict(
        conv_channels=tuple(hf["conv_dim"]),
        conv_kernels=tuple(hf["conv_kernel"]),
        conv_strides=tuple(hf["conv_stride"]),
        conv_bias=bool(hf.get("conv_bias", False)),
        conv_norm="layer" if hf.get("feat_extract_norm", "group") == "layer" else "group",
        hidden_dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"],
        pre_ln=bool(hf.get("do_stable_layer_norm", False)),
        pos_conv_kernel=hf.get("num_conv_pos_embeddings", 128),
        pos_conv_groups=hf.get("num_conv_pos_embedding_groups", 16),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        dropout=hf.get("hidden_dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        activation_dropout=hf.get("activation_dropout", 0.0),
        input_dropout=hf.get("feat_proj_dropout", 0.0),
        layerdrop=hf.get("layerdrop", 0.0),
    )


def hf_config_dict(cfg: HubertConfig) -> dict[str, Any]:
    """transformers HubertConfig keyword arguments for our config."""
    cfg = cfg.backbone
    return dict(
        conv_dim=list(cfg.conv_channels),
        conv_kernel=list(cfg.conv_kernels),
        conv_stride=list(cfg.conv_strides),
        conv_bias=cfg.conv_bias,
        feat_extract_norm=cfg.conv_norm,
        feat_extract_activation="gelu",
        hidden_size=cfg.hidden_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        hidden_act="gelu",
        do_stable_layer_norm=cfg.pre_ln,
        num_conv_pos_embeddings=cfg.pos_conv_kernel,
        num_conv_pos_embedding_groups=cfg.pos_conv_groups,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        feat_proj_dropout=cfg.input_dropout,
        layerdrop=cfg.layerdrop,
        feat_proj_layer_norm=True,
        # transformers' own default masking for fine-tuning; keeps masked_spec_embed. The
        # span length is that of our pretraining's [mask] default (and transformers').
        mask_time_prob=0.05,
        mask_time_length=MaskConfig.mask_length,
    )
