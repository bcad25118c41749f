import pytest
import torch

from automoe.config import ConfigError
from automoe.extract import extract_subnet
from automoe.supernet import SuperTransformer
from contracts import assert_extraction_exact


def test_supernet_equals_extracted_for_random_archs(tiny_space, rng, batch):
    torch.manual_seed(0)
    supernet = SuperTransformer(tiny_space).eval()
    archs = [tiny_space.sample(rng) for _ in range(25)] + [tiny_space.largest(), tiny_space.smallest()]
    assert len(set(archs)) > 20
    assert_extraction_exact(supernet, archs, batch)


def test_extracted_weights_are_prefix_slices_and_independent(tiny_space, rng):
    supernet = SuperTransformer(tiny_space)
    arch = tiny_space.sample(rng)
    model = extract_subnet(supernet, arch)
    big = dict(supernet.model.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, big[name][tuple(slice(0, n) for n in p.shape)])
        assert p.data_ptr() != big[name].data_ptr()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    name, p = next(iter(model.named_parameters()))
    assert not torch.equal(p, big[name][tuple(slice(0, n) for n in p.shape)])


def test_gradients_reach_only_the_used_slices(tiny_space, batch):
    supernet = SuperTransformer(tiny_space).train()
    arch = tiny_space.smallest()
    src, tgt = batch
    out = supernet(src, tgt, arch)
    (out.logits.float().pow(2).mean() + out.aux_loss).backward()
    fc1 = supernet.model.encoder_layers[0].ffn.experts[0].fc1.weight
    assert fc1.grad[:8, :16].abs().sum() > 0 and fc1.grad[8:].abs().sum() == 0 and fc1.grad[:, 16:].abs().sum() == 0
    assert supernet.model.decoder_layers[2].self_attn.q_proj.weight.grad is None  # layer not in the subnet


def test_arch_outside_space_rejected(tiny_space, batch):
    supernet = SuperTransformer(tiny_space)
    src, tgt = batch
    with pytest.raises(ConfigError, match=r"outside search space 'tiny'.*encoder_layers=4 not in \[3, 2\]"):
        supernet(src, tgt, tiny_space.largest().replace(encoder_layers=4, encoder_heads=(4,) * 4,
                                                       encoder_ffn=((40,),) * 4))


def test_extracted_model_saves_small(tiny_space, rng, tmp_path):
    from automoe.modeling import MoETransformer

    supernet = SuperTransformer(tiny_space)
    arch = tiny_space.smallest()
    model = extract_subnet(supernet, arch)
    model.save_pretrained(tmp_path / "sub")
    size = (tmp_path / "sub" / "model.safetensors").stat().st_size
    assert size < 0.5 * sum(p.numel() * 4 for p in supernet.parameters())
    assert MoETransformer.from_pretrained(tmp_path / "sub").config == arch
