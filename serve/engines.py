"""Inference engines behind `Translator`: each turns batches of source ids into output ids.

- `TorchEngine`: the PyTorch model and `automoe.generate`.
- `OnnxEngine`: an ONNX Runtime export folder. One sentence runs through the in-graph
  BeamSearch operator; a batch of `BATCH_MIN` or more sentences (the default: none) runs the
  exported encoder and decoder-step graphs under automoe's own beam search, smaller ones one
  sentence at a time, so results never depend on batching (fp32 exports compute a sentence alike
  on both paths; int8 ones only one sentence at a time, as their activation scales span a batch).
- `CTranslate2Engine` (in `automoe.serve.ct2`) for dense exports.
All engines return the same tokens as the torch model up to floating-point differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from automoe.config import ArchConfig
from automoe.generate import beam_search, check_generation_args


def check_threads(threads: int | None) -> int | None:
    """`threads` as an engine takes it: None or 0 leave the runtime's default, n >= 1 uses n."""
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads={threads!r}: pass a number of threads >= 1, or 0 / None for the runtime's default")
    return threads or None


def _pad(batch: list[list[int]], pad_id: int) -> np.ndarray:
    out = np.full((len(batch), max(len(ids) for ids in batch)), pad_id, dtype=np.int64)
    for row, ids in enumerate(batch):
        out[row, : len(ids)] = ids
    return out


def _strip(ids, config: ArchConfig) -> list[int]:
    out = []
    for t in ids:
        if t in (config.eos_id, config.pad_id):
            break
        out.append(int(t))
    return out


class TorchEngine:
    """PyTorch eager inference of a `MoETransformer`."""

    name = "torch"

    def __init__(self, model, threads: int | None = None):
        self.model = model.eval()
        self.config: ArchConfig = model.config
        self.threads = check_threads(threads)

    def translate_ids(self, batch: list[list[int]], *, beam: int, max_length: int, routing: bool = False,
                      shortlist=None):
        """Source id lists (EOS-terminated) -> `automoe.generate.Generation`; with a
        `automoe.shortlist.Shortlist`, each sentence decodes over its own shortlist."""
        from automoe.generate import generate

        if self.threads:
            torch.set_num_threads(self.threads)
        src = torch.from_numpy(_pad(batch, self.config.pad_id))
        ids = None if shortlist is None else torch.from_numpy(shortlist.batch_ids(batch))
        return generate(self.model, src, beam=beam, max_length=max_length, return_routing=routing, shortlist=ids)


def custom_ops_library(folder: Path, name) -> Path:
    """The path of an export folder's operator library, which must be automoe's, under its fixed
    name, inside the folder (native code is never loaded from a path an export_info.json names)."""
    from automoe.artifacts import ArtifactError
    from automoe.export.kernel import LIBRARY_FILE

    path = folder / LIBRARY_FILE
    if name != LIBRARY_FILE or not path.is_file() or path.is_symlink() or \
            not path.resolve().is_relative_to(folder.resolve()):
        raise ArtifactError(f"{folder / 'export_info.json'}: custom_ops_library {name!r} is not the file "
                            f"{LIBRARY_FILE} inside the export folder; automoe loads native code only from there: "
                            "export the model again")
    return path


class OnnxStepper:
    """Beam-search stepper over the exported encoder (+ first step) and decoder-step graphs."""

    def __init__(self, engine: "OnnxEngine", src: np.ndarray, copies: int):
        cfg = engine.config
        mask = (src != cfg.pad_id).astype(np.int32)
        start = np.full((src.shape[0], 1), cfg.bos_id, dtype=np.int32)
        outs = engine.encoder.run(None, {"encoder_input_ids": src.astype(np.int32), "encoder_attention_mask": mask,
                                         "decoder_input_ids": start})
        n = engine.layers
        expand = lambda a: np.repeat(a, copies, axis=0)  # noqa: E731
        self.engine = engine
        self.pending = expand(outs[0][:, -1])  # logits of the first step: [N, V]
        self.self_kv = [expand(a) for a in outs[2: 2 + 2 * n]]
        # Cross K/V and the mask are identical for every hypothesis of a sentence and beam search only
        # reorders within a sentence, so they are expanded once and never reordered.
        self.feeds = {"encoder_attention_mask": expand(mask)}
        self.feeds.update(zip(engine.past_cross_names, (expand(a) for a in outs[2 + 2 * n:])))

    def step(self, tokens: torch.Tensor):
        """tokens [N, 1] -> (logits [N, V], no routing)."""
        if self.pending is not None:
            logits, self.pending = self.pending, None
            return torch.from_numpy(logits), None
        feeds = dict(self.feeds, input_ids=tokens.numpy().astype(np.int32))
        feeds.update(zip(self.engine.past_self_names, self.self_kv))
        outs = self.engine.decoder.run(None, feeds)
        self.self_kv = outs[1:]
        return torch.from_numpy(outs[0][:, -1]), None

    def reorder(self, rows: torch.Tensor) -> None:
        """Follow the surviving hypotheses (rows [N']); fewer rows than held (finished sentences
        left the batch) select the cross-attention inputs too."""
        idx = rows.numpy()
        if len(idx) != len(self.feeds["encoder_attention_mask"]):
            self.feeds = {name: a[idx] for name, a in self.feeds.items()}
        self.self_kv = [a[idx] for a in self.self_kv]
        if self.pending is not None:
            self.pending = self.pending[idx]


# A batch of fewer sentences than this is translated one sentence at a time through the in-graph
# BeamSearch, a larger one under automoe's beam search over decoder.onnx; None: always one at a
# time. For fp32 exports both give the same translations. None because the stepped path was measured slower per
# sentence than one at a time even at batch 32 (docs/throughput.md, "The batched path"), and because
# int8 exports quantize activations per tensor, which on the stepped path would make a sentence's
# translation depend on its batch-mates.
BATCH_MIN: int | None = None


class OnnxEngine:
    """ONNX Runtime inference of an export folder written by `automoe.export.onnx.to_onnx`."""

    name = "onnxruntime"

    def __init__(self, folder: str | Path, threads: int | None = None, *, config: ArchConfig | None = None,
                 info: dict | None = None):
        """`config` and `info` (export_info.json), when the caller has read them already, are not read again."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("engine='onnxruntime' needs onnxruntime: pip install 'automoe[onnx]'") from e
        from automoe.checkpoint import read_model_config
        from automoe.export.onnx import BEAM_FILE, DECODER_FILE, ENCODER_FILE, kv_names

        self.folder = Path(folder)
        self.info = info if info is not None else json.loads((self.folder / "export_info.json").read_text(
            encoding="utf-8"))
        self.config = config if config is not None else read_model_config(self.folder)[0]
        options = self.options = ort.SessionOptions()  # every graph opens with these (`open_graph`)
        threads = self.threads = check_threads(threads)
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        library = self.info.get("custom_ops_library")
        if library:  # automoe's int8 MoE operator (export/kernel.py), built on the exporting machine
            path = custom_ops_library(self.folder, library)
            try:
                options.register_custom_ops_library(str(path))
            except Exception as e:  # noqa: BLE001  ORT raises its own Fail / RuntimeError types
                raise RuntimeError(f"{self.folder}: its operator library {library} does not load here ({e}); "
                                   "re-export the model on this machine, or with moe_dispatch='compact'") from e
        self.encoder, self.decoder = self.open_graph(ENCODER_FILE), self.open_graph(DECODER_FILE)
        self.beam = self.open_graph(BEAM_FILE)
        self._shortlist_sessions = {}  # shortlist beam graph file -> session
        # width -> fixed-width shortlist beam graph (export_info.json keys are strings)
        widths = (self.info.get("shortlist") or {}).get("widths") or {}
        self.shortlist_widths = {int(w): name for w, name in widths.items()}
        self.layers = self.config.decoder_layers
        self.use_beam_graph = True  # one sentence through the in-graph BeamSearch (False: the python stepper)
        self.batch_min = BATCH_MIN
        self.past_self_names = kv_names("past", "self", self.layers)
        self.past_cross_names = kv_names("past", "cross", self.layers)

    def open_graph(self, name: str):
        """An ONNX Runtime session of the folder's graph `name` with the engine's session options
        (`self.options`: threads, automoe's operator library, anything a caller set, e.g. profiling)."""
        import onnxruntime as ort

        return ort.InferenceSession(str(self.folder / name), self.options, providers=["CPUExecutionProvider"])

    def run_beam_graph(self, src: np.ndarray, beam: int, max_length: int, *, min_length: int = 1,
                       shortlist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One `session.run` of the in-graph beam search over `src` (int [B, S]): (sequences [B, 1,
        start + up to max_length] ids, scores [B, 1]). With `shortlist` (one sentence's
        `Shortlist.ids`), a beam graph whose projection reads the shortlisted rows only."""
        cfg = self.config
        feeds = {"input_ids": src.astype(np.int32), "attention_mask": (src != cfg.pad_id).astype(np.int32),
                 # the operator counts the start token in max_length
                 "max_length": np.array([max_length + 1], np.int32), "min_length": np.array([min_length], np.int32),
                 "num_beams": np.array([beam], np.int32), "num_return_sequences": np.array([1], np.int32),
                 "length_penalty": np.array([1.0], np.float32), "repetition_penalty": np.array([1.0], np.float32)}
        session, positions = self.beam, None
        if shortlist is not None:
            session, extra, positions = self._shortlist_beam(shortlist)
            feeds.update(extra)
        sequences, scores = session.run(None, feeds)
        if positions is not None:  # the fixed-width graph returns shortlist positions
            sequences = positions[sequences]
        return sequences, scores

    def _beam_graph(self, src: np.ndarray, beam: int, max_length: int, shortlist: np.ndarray | None = None):
        from automoe.generate import Generation

        sequences, scores = self.run_beam_graph(src, beam, max_length, shortlist=shortlist)
        return Generation([_strip(seq[0][1:], self.config) for seq in sequences], scores[:, 0].tolist())

    def _shortlist_beam(self, ids: np.ndarray):
        """(session, extra inputs, positions or None) of the shortlist beam graph for one sentence's
        shortlist `ids` (`automoe.export.onnx_shortlist`): the narrowest fixed-width graph that
        holds it, else the scattered one (positions None: it returns ids). Sessions open on first use."""
        from automoe.export.onnx_shortlist import INPUT, SHORTLIST_BEAM_FILE, fit_width

        fitted = fit_width(ids, self.shortlist_widths)
        name, extra, positions = fitted if fitted else (SHORTLIST_BEAM_FILE, {INPUT: ids}, None)
        if name not in self._shortlist_sessions:
            if not (self.folder / name).is_file():
                raise ValueError(f"{self.folder} has no {name}: export the model folder again "
                                 "after `automoe shortlist build`")
            self._shortlist_sessions[name] = self.open_graph(name)
        return self._shortlist_sessions[name], extra, positions

    def translate_ids(self, batch: list[list[int]], *, beam: int, max_length: int, routing: bool = False,
                      shortlist=None):
        """Source id lists (EOS-terminated) -> `automoe.generate.Generation` (no routing); with a
        `automoe.shortlist.Shortlist`, each sentence decodes over its own shortlist (one sentence:
        the shortlist beam graph; a batch: the step graphs' logits masked to it, the same decoding)."""
        from automoe.generate import Generation, MaskedStepper

        if routing:
            raise ValueError("routing traces are available with engine='torch' only")
        cfg = self.config
        check_generation_args(cfg, beam, max_length)
        if self.use_beam_graph and max_length >= 2 and (self.batch_min is None or len(batch) < self.batch_min):
            parts = [self._beam_graph(_pad([ids], cfg.pad_id), beam, max_length,
                                      None if shortlist is None else shortlist.ids(ids)) for ids in batch]
            return Generation([g.tokens[0] for g in parts], [g.scores[0] for g in parts])
        if self.threads:  # beam search's log-softmax and top-k run in torch: on the engine's threads too
            torch.set_num_threads(self.threads)
        stepper = OnnxStepper(self, _pad(batch, cfg.pad_id), beam)
        if shortlist is not None:
            stepper = MaskedStepper(stepper, torch.from_numpy(shortlist.batch_ids(batch)), cfg.vocab_size, beam)
        best = beam_search(stepper, len(batch), beam=beam, max_length=max_length, bos_id=cfg.bos_id,
                           eos_id=cfg.eos_id, pad_id=cfg.pad_id)
        return Generation([_strip(ids[1:], cfg) for _, ids, _ in best], [score for score, _, _ in best])
