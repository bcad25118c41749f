"""Export dense subnets to CTranslate2 (its TransformerSpec: post-norm, ReLU, sinusoidal positions).

The folder is a plain CTranslate2 model (model.bin, config.json, shared_vocabulary.json) plus the
SentencePiece model and export_info.json (provenance: source checksum, tool versions). Its
config.json holds CTranslate2's settings and, beside them, the model's config (`read_config`:
the architecture is read from there only); CTranslate2 ignores keys it does not know.

`convert(config, state_dict, pieces)` is a pure function built from one small helper per
sublayer, like CTranslate2's own converters; `to_ctranslate2` does the I/O. Each layer keeps its
own FFN width and head count: CTranslate2 has one head count per stack, so a layer with fewer
heads is zero-padded to the stack maximum (a zero head attends uniformly to zero values and adds
nothing). What CTranslate2 cannot express (MoE layers, cross-attention over k>1 encoder layers)
is refused by `automoe.export.checks` before any work.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from automoe.artifacts import staged_out_dir, write_export_info
from automoe.checkpoint import (WEIGHTS_NAME, load_state_dict, load_tokenizer, read_model_config,
                                verify_model_folder)
from automoe.config import ArchConfig
from automoe.modeling import sinusoidal_positions
from automoe.shortlist import carry_into_export

from .checks import check_ctranslate2

logger = logging.getLogger(__name__)
QUANTIZATIONS = (None, "int8", "int16")


def _require():
    try:
        import ctranslate2
    except ImportError as e:
        raise ImportError("ctranslate2 is needed for this: pip install 'automoe[ct2]'") from e
    return ctranslate2


def _np(t) -> np.ndarray:
    # A copy: CTranslate2's quantization rewrites the arrays it is given in place.
    return np.array(t.float().numpy(), dtype=np.float32, copy=True)


def pad_heads(q_w, q_b, k_w, k_b, v_w, v_b, o_w, heads: int, target: int):
    """Zero-pad an attention with `heads` heads of size qkv/heads to `target` heads of that size."""
    if heads == target:
        return q_w, q_b, k_w, k_b, v_w, v_b, o_w
    extra = (target - heads) * (q_w.shape[0] // heads)
    rows = lambda w: np.concatenate([w, np.zeros((extra,) + w.shape[1:], w.dtype)])  # noqa: E731
    cols = np.concatenate([o_w, np.zeros((o_w.shape[0], extra), o_w.dtype)], axis=1)
    return rows(q_w), rows(q_b), rows(k_w), rows(k_b), rows(v_w), rows(v_b), cols


def set_linear(spec, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Fill a LinearSpec."""
    spec.weight = weight
    if bias is not None:
        spec.bias = bias


def set_layer_norm(spec, sd: dict, name: str) -> None:
    """Fill a LayerNormSpec from `name`.weight / `name`.bias."""
    spec.gamma, spec.beta = _np(sd[f"{name}.weight"]), _np(sd[f"{name}.bias"])


def set_attention(spec, sd: dict, name: str, heads: int, target: int, self_attention: bool) -> None:
    """Fill a MultiHeadAttentionSpec: fused QKV (self) or Q + fused KV (cross), padded heads."""
    proj = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
    w = {p: _np(sd[f"{name}.{m}.weight"]) for p, m in proj.items()}
    b = {p: _np(sd[f"{name}.{m}.bias"]) for p, m in proj.items()}
    q_w, q_b, k_w, k_b, v_w, v_b, o_w = pad_heads(w["q"], b["q"], w["k"], b["k"], w["v"], b["v"], w["o"],
                                                  heads, target)
    if self_attention:
        set_linear(spec.linear[0], np.concatenate([q_w, k_w, v_w]), np.concatenate([q_b, k_b, v_b]))
    else:
        set_linear(spec.linear[0], q_w, q_b)
        set_linear(spec.linear[1], np.concatenate([k_w, v_w]), np.concatenate([k_b, v_b]))
    set_linear(spec.linear[-1], o_w, b["o"])
    # The real head size; CTranslate2 would otherwise derive it from the model width and head count.
    spec.queries_scale = np.dtype("float32").type((w["q"].shape[0] // heads) ** -0.5)


def set_ffn(spec, sd: dict, name: str) -> None:
    """Fill a FeedForwardSpec from the single (dense) expert of a layer and its post-norm."""
    set_linear(spec.linear_0, _np(sd[f"{name}.ffn.experts.0.fc1.weight"]), _np(sd[f"{name}.ffn.experts.0.fc1.bias"]))
    set_linear(spec.linear_1, _np(sd[f"{name}.ffn.experts.0.fc2.weight"]), _np(sd[f"{name}.ffn.experts.0.fc2.bias"]))
    set_layer_norm(spec.layer_norm, sd, f"{name}.ffn_norm")


def set_inputs(spec, sd: dict, dim: int, max_positions: int) -> None:
    """Token embeddings (the first `dim` columns of the shared table) and our sinusoidal table."""
    import torch

    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _np(sd["embed_tokens.weight"][:, :dim])
    spec.scale_embeddings = True  # multiply by sqrt(dim), as MoETransformer does
    spec.position_encodings.encodings = _np(sinusoidal_positions(torch.arange(max_positions), dim))


def convert(config: ArchConfig, state_dict: dict, pieces: list[str]):
    """Pure conversion of a dense automoe model to a `ctranslate2.specs.TransformerSpec`."""
    check_ctranslate2(config)
    from ctranslate2.specs import transformer_spec

    enc_heads = max(config.encoder_heads)
    dec_heads = max(config.decoder_heads + config.decoder_cross_heads)
    encoder = transformer_spec.TransformerEncoderSpec(config.encoder_layers, enc_heads, pre_norm=False)
    decoder = transformer_spec.TransformerDecoderSpec(config.decoder_layers, dec_heads, pre_norm=False)
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    sd = state_dict
    set_inputs(encoder, sd, config.encoder_embed_dim, config.max_positions)
    set_inputs(decoder, sd, config.decoder_embed_dim, config.max_positions)
    set_linear(decoder.projection, _np(sd["embed_tokens.weight"][:, : config.decoder_embed_dim]))
    for i, layer in enumerate(encoder.layer):
        name = f"encoder_layers.{i}"
        set_attention(layer.self_attention, sd, f"{name}.self_attn", config.encoder_heads[i], enc_heads, True)
        set_layer_norm(layer.self_attention.layer_norm, sd, f"{name}.self_attn_norm")
        set_ffn(layer.ffn, sd, name)
    for i, layer in enumerate(decoder.layer):
        name = f"decoder_layers.{i}"
        set_attention(layer.self_attention, sd, f"{name}.self_attn", config.decoder_heads[i], dec_heads, True)
        set_layer_norm(layer.self_attention.layer_norm, sd, f"{name}.self_attn_norm")
        set_attention(layer.attention, sd, f"{name}.cross_attn", config.decoder_cross_heads[i], dec_heads, False)
        set_layer_norm(layer.attention.layer_norm, sd, f"{name}.cross_attn_norm")
        set_ffn(layer.ffn, sd, name)
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.add_source_eos = True  # users pass SentencePiece pieces; CT2 appends </s> like our encoder input
    spec.config.decoder_start_token = pieces[config.bos_id]
    spec.config.bos_token, spec.config.eos_token = pieces[config.bos_id], pieces[config.eos_id]
    spec.config.unk_token = "<unk>" if "<unk>" in pieces else pieces[1]
    return spec


def read_config(folder: str | Path) -> ArchConfig:
    """The architecture of a CTranslate2 export folder (the "arch" its config.json holds beside
    CTranslate2's own settings)."""
    path = Path(folder) / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if "arch" not in data:
        raise ValueError(f"{path} has no automoe architecture (\"arch\"; an older automoe kept it in export_info.json): "
                         "export the model folder again (automoe export MODEL --to ct2 --force), or delete this "
                         "folder if it is in the export cache")
    return ArchConfig.from_dict(data["arch"])


def is_current(folder: str | Path, quantize: str | None) -> bool:
    """Whether `folder` holds a CTranslate2 export as this automoe writes it for `quantize` (its
    config.json holds the architecture): an export cache re-exports a folder that is not, e.g. one
    whose architecture an older automoe kept in export_info.json."""
    try:
        info = json.loads((Path(folder) / "export_info.json").read_text(encoding="utf-8"))
        read_config(folder)
    except (OSError, ValueError, TypeError):
        return False
    return info.get("target") == "ctranslate2" and info.get("quantization") == quantize


def to_ctranslate2(model_dir: str | Path, out_dir: str | Path, *, quantize: str | None = None,
                   force: bool = False, verify: bool = True) -> Path:
    """Convert a dense model folder to a CTranslate2 folder that plain `ctranslate2.Translator`
    loads, with the SentencePiece model beside it; returns the folder. The model folder's
    checksums are verified unless `verify=False`; export_info.json records the sha256 of every
    file written ("sha256")."""
    if quantize not in QUANTIZATIONS:
        hint = " (int8-row is automoe's ONNX Runtime form: export with --to onnx)" if quantize == "int8-row" else ""
        raise ValueError(f"quantize={quantize!r} must be one of {list(QUANTIZATIONS)} for CTranslate2{hint}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    arch, meta = read_model_config(model_dir)
    check_ctranslate2(arch)  # before any work
    _require()
    if verify:
        verify_model_folder(model_dir, meta)

    tok = (meta.get("tokenizer") or {}).get("file")
    if not tok:
        raise ValueError(f"{model_dir} has no tokenizer; CTranslate2 needs the vocabulary")
    sp = load_tokenizer(model_dir / tok)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if len(pieces) != arch.vocab_size:
        raise ValueError(f"tokenizer has {len(pieces)} pieces but the model's vocab_size is {arch.vocab_size}")
    state = load_state_dict(model_dir / WEIGHTS_NAME)
    spec = convert(arch, state, pieces)
    with staged_out_dir(out_dir, force) as tmp:
        spec.validate()
        spec.optimize(quantization=quantize)
        spec.save(str(tmp))  # model.bin, config.json (CTranslate2's own), shared_vocabulary.json
        # the model's config joins CTranslate2's settings (no key in common), the one home of the architecture
        ct2_config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        (tmp / "config.json").write_text(json.dumps({**ct2_config, **model_config}, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(model_dir / tok, tmp / tok)
        shortlist = carry_into_export(model_dir, tmp, pieces)  # shortlist + vmap.txt, None without one
        write_export_info(tmp, model_dir, {"format": "automoe-ct2", "target": "ctranslate2", "quantization": quantize,
                                           "shortlist": shortlist},
                          tokenizer=meta.get("tokenizer"), tools=("torch", "ctranslate2"))
    return out_dir
