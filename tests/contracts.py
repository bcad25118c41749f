"""Assertions of the contracts that several test files check on different model kinds."""

import torch

from automoe.extract import extract_subnet
from automoe.search.flops import cost


def assert_extraction_exact(supernet, archs, batch) -> None:
    """For every arch: the extracted standalone model gives the supernet's logits, balance loss and
    routing on `batch` (src, tgt), and holds exactly the arch's parameters (no weight sets, no
    architecture router)."""
    src, tgt = batch
    for arch in archs:
        model = extract_subnet(supernet, arch)
        with torch.no_grad():
            expected = supernet(src, tgt, arch)
            got = model(src, tgt)
        torch.testing.assert_close(got.logits, expected.logits)
        torch.testing.assert_close(got.aux_loss, expected.aux_loss)
        assert torch.equal(got.encoder_routing, expected.encoder_routing)
        assert torch.equal(got.decoder_routing, expected.decoder_routing)
        assert sum(p.numel() for p in model.parameters()) == cost(arch).total_params
