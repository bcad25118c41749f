"""Multi-split reversible stacks: exact inversion with dropout, gradients equal to stored activations
(MoE layers included), and activation memory that does not grow with depth."""

import pytest
import torch

from automoe.config import SearchSpace
from automoe.modeling import Attention
from automoe.moe import MoEFeedForward
from automoe.reversible import (AttentionSublayer, FeedForwardSublayer, ReversibleDecoder, ReversibleEncoder,
                                ReversibleSequence)


def _arch(layers: int = 3, dropout: float = 0.3):
    """The tiny space's Switch model (3 experts per layer) with every dropout on."""
    arch = SearchSpace.preset("tiny").switch_baseline()
    return arch.replace(encoder_layers=layers, decoder_layers=layers, encoder_heads=(4,) * layers,
                        decoder_heads=(2,) * layers, decoder_cross_heads=(4,) * layers,
                        decoder_cross_last_k=(1,) * layers, encoder_ffn=((40, 24, 8),) * layers,
                        decoder_ffn=((8, 40),) * layers, dropout=dropout, attention_dropout=dropout,
                        activation_dropout=dropout)


def _stack(splits: int, layers: int = 3, d: int = 24, reversible: bool = True) -> ReversibleSequence:
    """Self-attention + MoE FFN sublayers, dropout everywhere."""
    subs = []
    for _ in range(layers):
        subs += [AttentionSublayer(Attention(d, d, 24, 4, 0.3), d, 0.3),
                 FeedForwardSublayer(MoEFeedForward(d, (40, 24, 8), activation_dropout=0.3), d, 0.3)]
    return ReversibleSequence(subs, splits, reversible).train()


@pytest.mark.parametrize("splits", [2, 3, 4])
def test_inputs_recomputed_from_outputs_with_dropout(splits):
    torch.manual_seed(0)
    stack = _stack(splits)
    x = [torch.randn(3, 7, 24) for _ in range(splits)]  # distinct random streams
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    contexts = [(mask[:, None, None, :],), (mask,)] * 3
    seeds = stack.draw_seeds()
    with torch.no_grad():
        y, _ = stack.run(x, contexts, seeds)
    assert max((a - b).abs().max().item() for a, b in zip(x, y)) > 0.1  # the stack did change the streams
    back = stack.inverse(y, contexts, seeds)
    assert max((a - b).abs().max().item() for a, b in zip(x, back)) < 1e-5
    # the replayed dropout masks are what makes it exact: other seeds do not invert
    wrong = stack.inverse(y, contexts, [s + 1 for s in seeds])
    assert max((a - b).abs().max().item() for a, b in zip(x, wrong)) > 1e-2


def _grads(encoder, decoder, reversible: bool, src, tgt, mask):
    encoder.layers.reversible = decoder.layers.reversible = reversible
    params = list(encoder.parameters()) + list(decoder.parameters())
    for t in params + [src, tgt]:
        t.grad = None
    torch.manual_seed(7)  # same dropout seeds for both runs
    memory, enc_aux = encoder(src, mask)
    out, dec_aux = decoder(tgt, memory, mask, torch.ones(tgt.shape[:2], dtype=torch.bool))
    loss = (out * torch.linspace(-1, 1, out.shape[-1])).sum() + 3 * (enc_aux + dec_aux) + memory.pow(2).mean()
    loss.backward()
    return loss.detach(), [t.grad for t in params + [src, tgt]]


@pytest.mark.parametrize("splits", [2, 3])
def test_gradients_equal_stored_activations_with_moe(splits):
    torch.manual_seed(0)
    arch = _arch()
    encoder, decoder = ReversibleEncoder(arch, splits).train(), ReversibleDecoder(arch, splits).train()
    src = torch.randn(3, 7, 24, requires_grad=True)
    tgt = torch.randn(3, 9, 24, requires_grad=True)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    loss_rev, rev = _grads(encoder, decoder, True, src, tgt, mask)
    loss_ref, ref = _grads(encoder, decoder, False, src, tgt, mask)
    assert torch.allclose(loss_rev, loss_ref)
    routers = [p for n, p in encoder.named_parameters() if "router" in n]
    assert routers and all(p.grad is not None and p.grad.abs().sum() > 0 for p in routers)  # aux loss reaches them
    for a, b in zip(rev, ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


def _saved_bytes(stack: ReversibleSequence, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of one forward (parameters excluded)."""
    params = {p.data_ptr() for p in stack.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        if t.data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = stack(x)[0]
    y.sum().backward()  # the backward pass's recomputations keep their tensors one step at a time
    return total


def test_reversible_activation_memory_does_not_grow_with_depth():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 24, requires_grad=True)
    rev = [_saved_bytes(_stack(2, layers), x) for layers in (1, 4)]
    stored = [_saved_bytes(_stack(2, layers, reversible=False), x) for layers in (1, 4)]
    assert rev[0] == rev[1]  # the last outputs only, whatever the depth
    assert stored[1] > 3 * stored[0] and stored[1] > 10 * rev[1]


def test_eval_and_no_grad_give_the_reversible_result():
    torch.manual_seed(0)
    stack = _stack(3).eval()
    x = torch.randn(2, 5, 24, requires_grad=True)
    y, _ = stack(x)
    with torch.no_grad():
        y_plain, _ = stack(x)
    stack.reversible = False
    assert torch.allclose(y, stack(x)[0], atol=1e-6) and torch.allclose(y, y_plain, atol=1e-6)


def test_errors_say_what_to_change():
    with pytest.raises(ValueError, match="at least 2 streams"):
        _stack(1)
    with pytest.raises(ValueError, match="one tuple each"):
        _stack(2)(torch.randn(1, 3, 24), [()])
    with pytest.raises(ValueError, match="decoder_cross_last_k"):
        ReversibleDecoder(_arch().replace(decoder_cross_last_k=(2, 1, 1)))
