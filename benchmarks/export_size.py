"""How many bytes an ONNX Runtime export folder takes on disk, file by file.

Exports (int8 by default) the shipped dense model and a random-weight MoE model of the `small`
space (its largest architecture with `--experts` experts of width `--width` in every layer, seed 0,
the shipped model's vocabulary) with this checkout's exporter, and appends one record per model to
benchmarks/results/export_size.jsonl: every file's size, the folder's total, and the layout the
export says it has (export_info.json's "layout"; absent before exports stored weights once).

    python benchmarks/export_size.py --dense models/dense-small-bible
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import RESULTS, append_jsonl, environment


def folder_sizes(folder: Path) -> dict:
    """{"files": {name: bytes}, "total_bytes": sum, "total_mib": MiB} of a folder's files."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    total = sum(files.values())
    return {"files": files, "total_bytes": total, "total_mib": round(total / 2**20, 2)}


def moe_model(dense_dir: Path, out: Path, experts: int, width: int) -> Path:
    """A random-weight MoE model folder of the `small` space's largest architecture, `experts`
    experts of `width` per layer, with the dense model's tokenizer."""
    from automoe.checkpoint import read_model_config
    from automoe.config import SearchSpace
    from automoe.random_model import save_random_model

    arch = SearchSpace.preset("small").largest().replace(vocab_size=read_model_config(dense_dir)[0].vocab_size)
    arch = arch.replace(encoder_ffn=((width,) * experts,) * arch.encoder_layers,
                        decoder_ffn=((width,) * experts,) * arch.decoder_layers)
    return save_random_model(arch, out, seed=0, tokenizer_file=dense_dir / "spm.model")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense", default="models/dense-small-bible", help="a dense model folder (the shipped one)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--out", default=str(RESULTS / "export_size.jsonl"))
    args = p.parse_args(argv)
    env = environment()

    from automoe.export.onnx import to_onnx

    quantize = None if args.quantize == "none" else args.quantize
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"dense": Path(args.dense),
                  f"moe-{args.experts}x{args.width}": moe_model(Path(args.dense), Path(tmp) / "moe", args.experts, args.width)}
        for name, model_dir in models.items():
            folder = to_onnx(model_dir, Path(tmp) / f"{name}-onnx", quantize=quantize)
            info = json.loads((folder / "export_info.json").read_text(encoding="utf-8"))
            records.append({"benchmark": "export_size", "model": name, "source": str(model_dir) if name == "dense" else
                            "random weights (seed 0), small space", "quantization": quantize,
                            "layout": info.get("layout"), "moe_graphs": info.get("moe_graphs"),
                            **folder_sizes(folder), **env})
            print(f"{name}: {records[-1]['total_mib']} MiB ({', '.join(f'{k} {v / 2**20:.1f}' for k, v in records[-1]['files'].items())})")
    append_jsonl(Path(args.out), records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
