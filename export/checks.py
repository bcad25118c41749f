"""What each export target cannot express, collected before any work is done."""

from __future__ import annotations

from automoe.config import ArchConfig


class UnsupportedArchitecture(ValueError):
    """An architecture cannot run on an export target; the message lists every reason."""


def ctranslate2_violations(arch: ArchConfig) -> list[str]:
    """Every reason `arch` cannot be converted to CTranslate2 (empty when it can).

    CTranslate2 has no MoE layer and its cross-attention reads only the last encoder layer.
    Per-layer FFN widths and head counts and different encoder/decoder widths are fine (heads are
    zero-padded to the stack maximum and the query scale is set per layer).
    """
    reasons = []
    for stack in ("encoder", "decoder"):
        experts = getattr(arch, f"{stack}_experts")
        moe = [i for i, n in enumerate(experts) if n > 1]
        if moe:
            detail = ", ".join(f"{i} ({experts[i]} experts)" for i in moe)
            reasons.append(f"{stack} layers {detail} are MoE layers: CTranslate2 has no MoE layer")
    deep = [i for i, k in enumerate(arch.decoder_cross_last_k) if k > 1]
    if deep:
        detail = ", ".join(f"{i} (k={arch.decoder_cross_last_k[i]})" for i in deep)
        reasons.append(f"decoder layers {detail} attend to the last k>1 encoder layers: CTranslate2 "
                       "cross-attention reads only the last encoder layer")
    return reasons


def check_ctranslate2(arch: ArchConfig) -> None:
    """Raise `UnsupportedArchitecture` listing every reason `arch` cannot run on CTranslate2."""
    reasons = ctranslate2_violations(arch)
    if reasons:
        raise UnsupportedArchitecture(
            "this architecture cannot be exported to CTranslate2: " + "; ".join(reasons)
            + ". Export it to ONNX Runtime instead (automoe export MODEL --to onnx), which runs every architecture."
        )
