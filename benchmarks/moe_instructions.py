"""What one MoE decoder step executes, counted instead of timed: instructions, instruction-cache
misses, data-cache misses and mispredicted branches per step, from valgrind's cachegrind.

The host these benchmarks run on is shared and its speed drifts by tens of percent within seconds
(see moe_overhead.py), so a few percent of dispatch cost cannot be timed reliably. Cachegrind
counts instead, whatever else the machine is doing: the same models and steps give instruction
counts within about 2% of each other from run to run (a session's start-up is not quite the same
twice) and branch-predictor figures within about 5%. It simulates the caches instead of measuring
them, and it cannot say what a miss costs; use it to see what a change to the dispatch saves,
moe_overhead.py for the time.

The models are moe_overhead.py's: `dense`, `moe-E` (real routing) and `moe-E-one` (every token to
expert 0: the whole dispatch, one expert's weights per layer), exported to ONNX Runtime (int8).
`moe` decodes the first `--sentences` test sentences with beam 4 and its first `--steps` + 1
decoder-step inputs are kept. For each model and each simulated last-level cache size (`--ll`,
MiB; 16-way, 64-byte lines), cachegrind runs the steps in a fresh process twice, once with the
first step only and once with all of them: the difference, divided by `--steps`, is one step
(the start-up of a session differs by about 1% between runs, hence hundreds of steps).
Address randomisation is off in both (setarch -R); otherwise the simulated branch predictor's
figures move by tens of percent between runs.
Appends one record per width to benchmarks/results/moe_instructions.jsonl.

    python benchmarks/moe_instructions.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de --width 384
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The counted child's environment. PYTHONHASHSEED: the same dict orders, so the same allocations.
# One BLAS thread: numpy's OpenBLAS otherwise starts a server thread whose polling cachegrind counts
# with the steps, in proportion to the run's length (records before it include such instructions).
CHILD_ENV = {"PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

# cachegrind's summary lines -> record keys (the total of each line, reads and writes together)
COUNTERS = {"I   refs": "instructions", "I1  misses": "i1_misses", "LLi misses": "lli_misses",
            "D1  misses": "d1_misses", "LLd misses": "lld_misses", "Mispredicts": "mispredicts"}


def run_steps(decoder: str, feeds: str, steps: int) -> None:
    """Child process: run the first `steps` + 1 recorded steps of `feeds` through `decoder`."""
    import numpy as np
    import onnxruntime as ort

    saved = np.load(feeds)
    by_step: dict[int, dict] = {}
    for key in saved.files:
        index, name = key.split("|")
        by_step.setdefault(int(index), {})[name] = saved[key]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    for pool in ("intra_op", "inter_op"):  # a spinning thread would add instructions by the second
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    session = ort.InferenceSession(decoder, options, providers=["CPUExecutionProvider"])
    for i in range(steps + 1):  # step 0 (first allocations) runs in both processes and cancels out
        session.run(None, by_step[i])


def parse_cachegrind(text: str) -> dict:
    """The totals of cachegrind's summary (stderr) as integers, by COUNTERS' keys."""
    out = {}
    for label, key in COUNTERS.items():
        match = re.search(rf"{re.escape(label)}:\s+([\d,]+)", text)
        if not match:
            raise RuntimeError(f"no '{label}' line in cachegrind's output:\n{text[-2000:]}")
        out[key] = int(match.group(1).replace(",", ""))
    return out


def cachegrind(decoder: Path, feeds: Path, steps: int, ll_mib: int) -> subprocess.Popen:
    """Start cachegrind on a child process that runs `steps` + 1 steps (stderr piped)."""
    # without address randomisation, so that the simulated caches and branch predictor see the same
    # addresses in both runs and in every run
    cmd = ["setarch", platform.machine(), "--addr-no-randomize",
           "valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes", "--cachegrind-out-file=/dev/null",
           f"--LL={ll_mib * 2**20},16,64", sys.executable, __file__, "--child", str(decoder), str(feeds), str(steps)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **CHILD_ENV})


def per_step(decoder: Path, feeds: Path, steps: int, ll_mib: int) -> dict:
    """Counts of one decoder step: (all steps - first step only) / steps, both run at once."""
    runs = [cachegrind(decoder, feeds, n, ll_mib) for n in (0, steps)]
    counts = []
    for run in runs:
        _, err = run.communicate()
        if run.returncode:
            raise RuntimeError(f"cachegrind failed ({run.returncode}):\n{err[-2000:]}")
        counts.append(parse_cachegrind(err))
    return {key: round((counts[1][key] - counts[0][key]) / steps) for key in COUNTERS.values()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # under valgrind: import nothing heavy (torch) before the steps
        run_steps(argv[1], argv[2], int(argv[3]))
        return 0
    from common import RESULTS, append_jsonl, environment
    from moe_overhead import build_models, export_model, record_steps

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="supernet folder (supernet.safetensors + space.json)")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--width", type=int, default=None, help="expert / dense FFN width (default: the widest of the space)")
    p.add_argument("--sentences", type=int, default=12, help="test sentences decoded to record steps")
    p.add_argument("--steps", type=int, default=300,
                   help="decoder steps counted per model (session start-up varies by ~1%% between runs, so the "
                        "difference of two runs needs hundreds of steps)")
    p.add_argument("--ll", default="32,8", help="simulated last-level cache sizes in MiB, comma-separated")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "moe_instructions.jsonl"))
    args = p.parse_args(argv)
    missing = [tool for tool in ("valgrind", "setarch") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} needed (apt-get install valgrind util-linux)")
    ll_sizes = sorted({int(x) for x in args.ll.split(",")}, reverse=True)
    env = environment()

    import numpy as np
    import torch

    from automoe.evaluate import read_split
    from automoe.serve import Translator
    from automoe.train import load_supernet

    torch.set_num_threads(1)
    supernet = load_supernet(args.supernet)
    width = args.width or max(supernet.space.ffn_dims)
    models = build_models(supernet, width, args.experts, traced=False)
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        exports = {name: export_model(model, Path(tmp) / name, Path(args.data) / "spm.model", "int8")
                   for name, model in models.items()}
        moe_name = list(models)[1]
        steps = [s for sentence in record_steps(Translator.from_pretrained(exports[moe_name], threads=1), sources,
                                                args.beam) for s in sentence]
        if len(steps) < args.steps + 1:
            raise SystemExit(f"{args.sentences} sentences gave {len(steps)} steps; need {args.steps + 1}: "
                             "raise --sentences or lower --steps")
        feeds = Path(tmp) / "feeds.npz"
        np.savez(feeds, **{f"{i:05d}|{k}": v for i, step in enumerate(steps[: args.steps + 1]) for k, v in step.items()})
        counts = {f"{ll}MiB": {name: per_step(path / "decoder.onnx", feeds, args.steps, ll) for name, path in exports.items()}
                  for ll in ll_sizes}
    ratios = {ll: {name: {key: round(c[key] / by_model["dense"][key] - 1, 4) for key in c}
                   for name, c in by_model.items() if name != "dense"} for ll, by_model in counts.items()}
    record = {"benchmark": "moe_instructions", "supernet": str(args.supernet), "experts": args.experts, "width": width,
              "quantization": "int8", "beam": args.beam, "steps": args.steps, "sentences": args.sentences,
              "ll_ways": 16, "per_step": counts, "vs_dense": ratios,
              "blas_threads": int(CHILD_ENV["OPENBLAS_NUM_THREADS"]), "versions": {"valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()},
              **env}
    append_jsonl(Path(args.out), [record])
    for ll, by_model in ratios.items():
        for name, r in by_model.items():
            print(f"width {width}, LL {ll}: {name} vs dense per step: " + ", ".join(f"{k} {100 * v:+.1f}%" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
