"""How a trained supernet routes: expert usage per layer and dev NLL of MoE subnets vs dense.

A supernet whose routers send (almost) every token to expert 0 has MoE subnets that behave like
dense ones: search then cannot gain from experts, and decode-time MoE costs look better than
they would with varied routing. This measures it, teacher-forced on the first `--sentences` dev
pairs with inherited weights: the share of tokens each expert of every layer receives in the
all-experts subnet (every layer `max_experts` experts of the widest FFN), the mean number of
distinct experts the 4 beams of a decoding step pick per decoder layer, and the dev NLL per
token of the dense, all-experts and a mixed-width MoE subnet.
Appends one record to benchmarks/results/routing.jsonl.

    python benchmarks/routing.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402


def expert_usage(supernet, arch, batch) -> dict[str, list[float]]:
    """Share of real tokens routed to each expert, per encoder and decoder layer."""
    import torch

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = supernet(batch["src"], batch["tgt_in"], arch)
    usage = {}
    for side, routing, mask, ffn in (("enc", out.encoder_routing, batch["src"].ne(0), arch.encoder_ffn),
                                     ("dec", out.decoder_routing, batch["tgt_in"].ne(0), arch.decoder_ffn)):
        for layer in range(routing.shape[-1]):
            counts = collections.Counter(routing[..., layer][mask].tolist())
            total = sum(counts.values())
            usage[f"{side}{layer}"] = [round(counts.get(e, 0) / total, 4) for e in range(len(ffn[layer]))]
    return usage


def experts_read(model, tokenizer, sources: list[str], beam: int) -> list[list[list[int]]]:
    """The experts each decoder step's rows route to, per step and MoE layer (sets as sorted
    lists), from PyTorch beam search on `sources` one at a time."""
    import torch

    from automoe.generate import TorchStepper, beam_search, default_max_length

    steps = []

    class Recording(TorchStepper):
        def step(self, tokens):
            logits, routing = super().step(tokens)
            steps.append([sorted(set(routing[:, layer].tolist())) for layer in range(routing.shape[1])])
            return logits, routing

    cfg = model.config
    with torch.no_grad():
        for sentence in sources:
            ids = tokenizer.encode(sentence)[: cfg.max_positions - 1] + [cfg.eos_id]
            beam_search(Recording(model, torch.tensor([ids]), beam), 1, beam=beam,
                        max_length=default_max_length(model, len(ids)), bos_id=cfg.bos_id, eos_id=cfg.eos_id,
                        pad_id=cfg.pad_id)
    return steps


def distinct_experts_per_step(model, tokenizer, sources: list[str], beam: int) -> float:
    """Mean number of distinct experts the `beam` rows of a decoding step pick, per decoder layer."""
    return statistics.mean(len(experts) for step in experts_read(model, tokenizer, sources, beam) for experts in step)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--sentences", type=int, default=200, help="dev pairs for usage and NLL")
    p.add_argument("--decode-sentences", type=int, default=50, help="test sentences decoded for distinct experts")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "routing.jsonl"))
    args = p.parse_args(argv)
    env = environment()
    import torch

    from automoe import data as data_lib
    from automoe.evaluate import read_split
    from automoe.extract import extract_subnet
    from automoe.search.run import supernet_fitness
    from automoe.supernet_folder import load_supernet

    torch.set_num_threads(1)
    supernet = load_supernet(args.supernet)
    space = supernet.space
    tokenizer = data_lib.load_tokenizer(Path(args.supernet) / "spm.model")
    widest, dense = max(space.ffn_dims), space.largest()
    all_experts = dense.replace(encoder_ffn=((widest,) * space.max_experts,) * dense.encoder_layers,
                                decoder_ffn=((widest,) * space.max_experts,) * dense.decoder_layers)
    mixed_widths = tuple(sorted(space.ffn_dims, reverse=True))[: space.max_experts]
    mixed = dense.replace(encoder_ffn=(mixed_widths,) * dense.encoder_layers,
                          decoder_ffn=(mixed_widths,) * dense.decoder_layers)
    fitness = supernet_fitness(supernet, args.data, sentences=args.sentences)
    folder = Path(args.data)
    pairs = list(zip(data_lib.encode_file(tokenizer, folder / "dev.src", space.max_positions),
                     data_lib.encode_file(tokenizer, folder / "dev.tgt", space.max_positions)))[: args.sentences]
    batch = data_lib.collate(pairs, tokenizer.pad_id(), tokenizer.bos_id())
    sources, _ = read_split(args.data, "test", limit=args.decode_sentences)
    record = {
        "benchmark": "routing", "supernet": str(args.supernet), "dev_sentences": len(pairs),
        "dev_nll": {"dense": round(fitness(dense), 4), f"{space.max_experts}x{widest}": round(fitness(all_experts), 4),
                    "mixed " + "/".join(map(str, mixed_widths)): round(fitness(mixed), 4)},
        "usage_all_experts": expert_usage(supernet, all_experts, batch),
        "distinct_experts_per_decode_step": round(distinct_experts_per_step(
            extract_subnet(supernet, all_experts).eval(), tokenizer, sources, args.beam), 4),
        "decode_sentences": len(sources), "beam": args.beam, **env}
    append_jsonl(Path(args.out), [record])
    print(record["dev_nll"], "distinct experts per decode step:", record["distinct_experts_per_decode_step"])
    for layer, shares in record["usage_all_experts"].items():
        print(f"  {layer}: " + " ".join(f"{s:.3f}" for s in shares))
    return 0


if __name__ == "__main__":
    sys.exit(main())
