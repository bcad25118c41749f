"""The supernet study's result tables (issue #27: prefix sharing against Mixture-of-Supernets;
README and docs/mos.md), built from results/supernets.jsonl for `report.py`."""

from __future__ import annotations

import json
from pathlib import Path

from common import read_results as _read

ROOT = Path(__file__).resolve().parent.parent


def supernets_table() -> str:
    """Inherited-weight test BLEU of the same four subnets in the prefix, mos-layer and mos-neuron
    supernets trained alike (supernets.jsonl, issue #27)."""
    records = _read("supernets")
    rows = [r for r in records if "bleu" in r]
    if not rows:
        return ("_Not measured yet: the three comparison supernets, each started from supernet v3, are step 7 "
                "of tools/proof_queue.py (docs/mos.md)._")
    latest: dict[tuple, dict] = {}
    for r in rows:
        name = Path(r["model"]).name
        kind = name.removeprefix("cmp-") if name.startswith("cmp-") else f"`{name}`"
        latest[(Path(str(r.get("arch_name"))).stem, kind)] = r
    kinds = list(dict.fromkeys(k for _, k in latest))
    archs = list(dict.fromkeys(a for a, _ in latest))
    key = lambda arch: json.dumps(arch, sort_keys=True)  # noqa: E731
    # the shipped model of the same architecture, trained on its own (its latest test evaluation)
    alone = {key(r["arch"]): r for r in _read("eval") if r.get("split") == "test" and r.get("arch_name") is None
             and r.get("arch") and (ROOT / r["model"]).is_dir()}
    lines = ["| subnet | " + " | ".join(kinds) + " | trained on its own (shipped model) |",
             "|---|" + "---:|" * len(kinds) + "---|"]
    for arch in archs:
        cells = [f"{latest[(arch, k)]['bleu']:.2f}" if (arch, k) in latest else "" for k in kinds]
        shipped = next((alone[key(r["arch"])] for (a, _), r in latest.items() if a == arch and r.get("arch")
                        and key(r["arch"]) in alone), None)
        cells.append(f"{shipped['bleu']:.2f} (`{Path(shipped['model']).name}`)" if shipped else "none shipped")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    r0 = next(iter(latest.values()))
    return ("\n".join(lines) + f"\n\nTest BLEU with inherited weights, no fine-tuning ({r0['sentences']} sentences, "
            f"beam {r0['beam']}, `{r0['bleu_signature']}`). prefix, mos-layer and mos-neuron each start from the "
            "shipped prefix supernet v3 (`supernet-small-bible-v3`) and train 3M target tokens more with the "
            "sandwich rule on the same batches, schedule and seed; `mos-neuron-scratch` is a neuron-wise MoS "
            "supernet trained from scratch on v3's own schedule and budget (docs/mos.md). Last column: the "
            "shipped model whose architecture is "
            "this subnet's, trained by its own recipe on 18.2M target tokens (its card), for the gap to close."
            + (" `mos-scratch-*` rows: the subnets the evolutionary search found in `mos-neuron-scratch` at the 1/2 "
               "and 1/3 budgets of the shipped searches (same settings), evaluated there and in v3."
               if any(a.startswith("mos-scratch-") for a in archs) else "")
            + _supernet_training([r for r in records if r.get("benchmark") == "supernet_training"])
            + _supernet_finetune([r for r in records if r.get("benchmark") == "supernet_finetune"], rows))


def _supernet_training(records: list[dict]) -> str:
    """The training side of the supernet comparison: each supernet's last validation perplexities
    and how far its router tells the evaluated subnets apart (its latest record)."""
    latest = {r["model"]: r for r in records}
    if not latest:
        return ""
    lines = ["| supernet | weight sharing | target tokens (this run) | dev ppl, largest | dev ppl, smallest | "
             "router spread |", "|---|---|---:|---:|---:|---:|"]
    for r in latest.values():
        name = Path(r["model"]).name + (f" ({r['note']})" if r.get("note") else "")
        spread = "" if r.get("mixing_spread") is None else f"{r['mixing_spread']:.4f}"
        lines.append(f"| `{name}` | {r['weight_sharing']['kind']} | {r['tokens_seen'] / 1e6:.2f}M | "
                     f"{r['valid']['largest']['ppl']:.2f} | {r['valid']['smallest']['ppl']:.2f} | {spread} |")
    return ("\n\n" + "\n".join(lines) + "\n\nDev perplexity on the first 300 dev sentences at the end of each run. "
            "Router spread: the largest difference between the mixing coefficients that two of the four subnets "
            "above get for the same matrix (0: the router gives every architecture the same mixture; "
            "`automoe.mos.mixing_spread`).")


# the searched architectures of the fine-tune records (arch_name) -> their files in benchmarks/results/search/
FINETUNED_ARCHS = {"automoe-third": "automoe-0.333", "automoe-half": "automoe-0.500"}


def _supernet_finetune(records: list[dict], inherited: list[dict]) -> str:
    """The same architecture fine-tuned from each supernet on the same recipe and budget: its test
    BLEU before (inherited weights, `inherited` records) and after; a row per architecture,
    supernet and budget."""
    latest = {(FINETUNED_ARCHS[r["arch_name"]], Path(r["supernet"]).name, round(r["tokens_seen"], -5)): r
              for r in records}
    if not latest:
        return ""
    before = {(Path(str(r.get("arch_name"))).stem, Path(r["model"]).name): r["bleu"] for r in inherited}
    lines = ["| architecture | fine-tuned from | test BLEU before (inherited) | target tokens | wall h | dev BLEU | "
             "test BLEU |", "|---|---|---:|---:|---:|---:|---:|"]
    for (arch, name, _), r in sorted(latest.items(), key=lambda item: (item[0][0], item[0][2])):
        start = f"{before[arch, name]:.2f}" if (arch, name) in before else ""
        lines.append(f"| {arch} | `{name}` | {start} | {r['tokens_seen'] / 1e6:.2f}M | "
                     f"{r['wall_seconds'] / 3600:.2f} | {r['dev_bleu']:.2f} | {r['test_bleu']:.2f} |")
    r0 = next(iter(latest.values()))
    full = " and continued to the full one" if len({tokens for *_, tokens in latest}) > 1 else ""
    return ("\n\n" + "\n".join(lines) + "\n\nThe searched architectures fine-tuned from each supernet with the "
            "shipped models' recipe (the same seed and batches): the 1/3 one on the recipe comparison's budget "
            f"(from v3: that comparison's inherit run, recipes.jsonl){full}. The full-budget runs from v3 are the "
            "`automoe-small-bible-*` models as first shipped; each architecture ships the run with the higher dev "
            f"BLEU (its card names the supernet it started from). torch, beam {r0['beam']}, all dev and test "
            "sentences.")
