"""Model cards (README.md of a model folder) written from config.json and results files only.

Every number in a card comes from the folder's config.json (architecture, training provenance)
or from JSONL records written by `automoe eval --results` / `benchmarks/engines.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import ArchConfig
from .search.flops import cost


def read_records(path: str | Path, **match) -> list[dict]:
    """Records of a JSONL file whose fields equal `match`."""
    path = Path(path)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def total_training(info: dict) -> dict:
    """Updates, target tokens and wall seconds of a run plus every run it was initialised from."""
    total = {"updates": 0, "tokens_seen": 0, "wall_seconds": 0.0, "segments": 0}
    while info:
        for k in ("updates", "tokens_seen", "wall_seconds"):
            total[k] += info.get(k) or 0
        total["segments"] += 1
        info = info.get("previous")
    return total


def _arch_table(arch: ArchConfig) -> str:
    rows = ["| stack | layer | heads | cross heads / last-k | expert widths |", "|---|---:|---:|---|---|"]
    for i in range(arch.encoder_layers):
        rows.append(f"| encoder (d={arch.encoder_embed_dim}) | {i} | {arch.encoder_heads[i]} | | "
                    f"{', '.join(map(str, arch.encoder_ffn[i]))} |")
    for i in range(arch.decoder_layers):
        rows.append(f"| decoder (d={arch.decoder_embed_dim}) | {i} | {arch.decoder_heads[i]} | "
                    f"{arch.decoder_cross_heads[i]} / {arch.decoder_cross_last_k[i]} | "
                    f"{', '.join(map(str, arch.decoder_ffn[i]))} |")
    return "\n".join(rows)


RECIPES = {
    "scratch": "Recipe: trained from scratch. ",
    "inherit": "Recipe: fine-tuned from the inherited weights (extracted subnet) of {supernet}. ",
    "distill": "Recipe: sequence-level knowledge distillation: trained from scratch on the dense baseline's beam-4 "
               "translations of the training sources (`automoe data distill`); dev/test keep human references. ",
    "inherit+distill": "Recipe: fine-tuned from the inherited weights of {supernet} on the dense baseline's beam-4 "
                       "translations of the training sources (`automoe data distill`). ",
}


def _training(training: dict) -> str:
    if not training:
        return "No training provenance recorded."
    tc = training.get("train_config", {})
    hours = training.get("wall_seconds", 0) / 3600
    earlier = ""
    if training.get("previous"):
        total = total_training(training)
        earlier = (f" This run started from the weights of an earlier run of {training['previous'].get('updates')} "
                   f"updates (fresh optimizer and schedule); all {total['segments']} segments together: "
                   f"{total['updates']} updates, {total['tokens_seen']:,} target tokens processed, "
                   f"{total['wall_seconds'] / 3600:.2f} h.")
    epochs = training.get("epochs")
    supernet = "the supernet"
    if training.get("init_from"):  # which supernet: the folder's name, never the training machine's path
        supernet += f" `{Path(str(training['init_from'])).name}`"
        if training.get("init_note"):
            supernet += f" ({training['init_note']})"
    recipe = RECIPES.get(training.get("recipe"), "").format(supernet=supernet)
    data = str(training.get("data"))
    if Path(data).is_absolute():  # a folder of the training machine (e.g. distilled data under ~/.cache): its name
        data = Path(data).name
    return (f"{recipe}Trained on `{data}` (manifest sha256 `{str(training.get('data_manifest_sha256'))[:12]}`) "
            f"for {training.get('updates')} updates, {training.get('tokens_seen'):,} target tokens processed"
            f"{' (summed over the subnets of each update)' if tc.get('sandwich') else ''}, {epochs} epoch{'' if epochs == 1 else 's'}, {hours:.2f} h wall time on "
            f"{training.get('world_size', 1)} process(es) of a 2-core CPU machine, seed {training.get('seed')}, "
            f"peak lr {tc.get('lr')}, {tc.get('max_tokens')}-token batches, dropout {tc.get('dropout')}, "
            f"label smoothing {tc.get('label_smoothing')}, commit `{str(training.get('git_commit'))[:10]}`.{earlier}")


def _latest(records: list[dict], *fields: str) -> list[dict]:
    """The last record of every distinct value of `fields`, in order of first appearance: a results
    file keeps every run, and a card shows the newest measurement of each row."""
    return list({tuple(r.get(f) for f in fields): r for r in records}.values())


def _eval_table(records: list[dict]) -> str:
    records = _latest(records, "arch_name", "split", "sentences", "beam", "engine")
    if not records:
        return "Not evaluated yet."
    rows = ["| subnet | split | sentences | beam | BLEU | chrF | engine |", "|---|---|---:|---:|---:|---:|---|"]
    for r in records:
        rows.append(f"| {r.get('arch_name') or 'model'} | {r['split']} | {r['sentences']} | {r['beam']} | "
                    f"{r['bleu']:.2f} | {r['chrf']:.2f} | {r['engine']} |")
    return "\n".join(rows) + f"\n\nsacrebleu signatures: `{records[-1]['bleu_signature']}`, `{records[-1]['chrf_signature']}`."


def _bench_section(records: list[dict]) -> str:
    """The card's speed section from the model's records of the last `automoe bench` run."""
    from .bench_results import last_run

    run = last_run(records)
    if not run:
        return ""
    rows = ["| engine | threads | decoding | median ms / sentence | p90 ms | speedup vs dense | BLEU | chrF |",
            "|---|---:|---|---:|---:|---:|---:|---:|"]
    skipped = {(r["engine"], r["threads"]) for r in run if "skipped" in r and not r.get("shortlist")}
    for r in run:
        listed = bool(r.get("shortlist"))
        if listed and "skipped" in r and (r["engine"], r["threads"]) in skipped:
            continue  # the engine cannot run the model at all: said once, on the full-vocabulary row
        decoding = (f"lexical shortlist ({r['shortlist_size']:.0f} pieces per sentence on average)"
                    if listed and "shortlist_size" in r else "lexical shortlist" if listed else "full vocabulary")
        if "skipped" in r:
            rows.append(f"| {r['engine']} | {r['threads']} | {decoding} | skipped: {r['skipped']} | | | | |")
        else:
            rows.append(f"| {r['engine']} | {r['threads']} | {decoding} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                        f"{r['speedup']:.2f}x | {r['bleu']:.2f} | {r['chrf']:.2f} |")
    r0 = run[0]
    return (f"\n## Speed (`automoe bench`)\n\n{r0['cpu']}, batch 1, beam {r0['beam']}, {r0['sentences']} test sentences, "
            f"every shipped model interleaved in one run; speedup = `{r0['baseline']}`'s median latency / this "
            f"model's, same engine and threads (benchmarks/results/bench.jsonl, commit "
            f"`{str(r0.get('git_commit'))[:10]}`).\n\n" + "\n".join(rows) + "\n")


def model_card(title: str, summary: str, arch: ArchConfig, training: dict, eval_records: list[dict],
               latency_records: list[dict] = (), usage: str = "", limitations: str = "",
               bench_records: list[dict] = ()) -> str:
    """The README.md text of a model folder. `eval_records`, `latency_records` and `bench_records`
    may hold every run of results/eval.jsonl, engines.jsonl and bench.jsonl for the model: the card
    shows the newest."""
    c = cost(arch)
    latency = _bench_section(list(bench_records))
    if latency_records:  # a results file keeps every run: show the last (its records share its start time)
        latency_records = [r for r in latency_records if r.get("date") == latency_records[-1].get("date")]
        rows = ["| engine | median ms / sentence | speedup vs torch fp32 |", "|---|---:|---:|"]
        rows += [f"| {r['engine']} | {r['median_ms']:.1f} | {r.get('speedup_vs_torch_fp32') or 0:.2f}x |"
                 for r in latency_records]
        r0 = latency_records[0]
        latency += (f"\n## Latency\n\n{r0['cpu']}, {r0['threads']} thread, batch 1, beam {r0['beam']}, "
                   f"{r0['latency_sentences']} test sentences (benchmarks/results/engines.jsonl).\n\n" + "\n".join(rows) + "\n")
    return f"""---
language: [en, de]
license: apache-2.0
library_name: automoe
tags: [translation, mixture-of-experts, neural-architecture-search]
---

# {title}

{summary}

## Architecture

{c.total_params / 1e6:.2f}M parameters ({c.embedding_params / 1e6:.2f}M in the shared embedding),
{c.active_params / 1e6:.2f}M active non-embedding parameters per token, {c.gflops:.3f} GFLOPs for a
30-token source and 30-token target (analytic, `automoe.search.flops`), vocabulary {arch.vocab_size}.

{_arch_table(arch)}

## Training

{_training(training)}

## Evaluation

{_eval_table(list(eval_records))}
{latency}
## Usage

{usage or '```python' + chr(10) + 'from automoe import Translator' + chr(10) + 'print(Translator.from_pretrained("PATH").translate(["Jesus wept."]))' + chr(10) + '```'}

## Limitations

{limitations or "Trained on a small single-domain corpus on a CPU; expect low quality outside that domain."}
"""
