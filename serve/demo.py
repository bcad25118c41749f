"""What the demo does, without gradio: the models it serves and how it names them, input checks,
cached Translators, timing and routing views (`DemoBackend`). `automoe.serve.app` wires Gradio
widgets to it; tests and the load benchmark use it directly.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path

from automoe.bench import ENGINES, model_family, parse_engine, reference_dense

from .routing_view import routing_html, width_rows
from .translator import Translator, visible

logger = logging.getLogger(__name__)

BUILTIN_EXAMPLES = [
    "In the beginning God created the heavens and the earth.",
    "Jesus wept.",
    "Peace be with you.",
    "The Lord is my shepherd; I shall not want.",
    "Love your neighbour as yourself.",
    "They went up into the upper room, where they were staying.",
]
COMPARE_HEADERS = ["model", "type", "experts per layer (enc | dec)", "ms", "vs dense", "German"]


class InputError(ValueError):
    """The user's input cannot be translated; the message is shown in the app."""


def model_kind(arch) -> str:
    """'dense', 'Switch (n experts)' (same number of equal experts everywhere) or 'AutoMoE': the
    bench's `model_family`, named for people."""
    family = model_family(arch)
    if family == "switch":
        return f"Switch ({len(arch.encoder_ffn[0])} experts)"
    return {"dense": "dense", "automoe": "AutoMoE"}[family]


def model_kinds(archs: dict) -> dict[str, str]:
    """`model_kind` of each {name: arch}, except that the dense models other than the reference
    (`automoe.bench.reference_dense`, as `automoe bench` picks its baseline) are searched dense
    subnets: 'HAT-style dense'."""
    reference = reference_dense(archs)
    kinds = {name: model_kind(arch) for name, arch in archs.items()}
    return {name: "HAT-style dense" if kind == "dense" and name != reference else kind for name, kind in kinds.items()}


def _experts_summary(arch) -> str:
    enc = " ".join(str(n) for n in arch.encoder_experts)
    dec = " ".join(str(n) for n in arch.decoder_experts)
    return f"{enc} | {dec}"


def available_engines() -> tuple[str, ...]:
    """The engine choices, named as `automoe bench` names them: torch always, and each runtime
    whose package (onnxruntime, ctranslate2) can be imported, in fp32 and int8; "onnxruntime-int8-row"
    (automoe's per-row int8, the shipped CPU setting) only where a C++ compiler builds its operator."""
    import importlib.util

    from automoe.export import kernel

    return tuple(e for e in ENGINES if parse_engine(e)[0] == "torch"
                 or importlib.util.find_spec(parse_engine(e)[0]) is not None
                 and (parse_engine(e)[1] != "int8-row" or kernel.available()))


def _skip_note(path: Path) -> str | None:
    """Why a local path given to the demo is not served (None: it is a model or export folder, or
    not a local path at all, i.e. a Hub repo id)."""
    from automoe.checkpoint import folder_kind

    if not path.exists():
        return None
    kind = folder_kind(path) if path.is_dir() else None
    if kind in ("model", "export"):
        return None
    if kind == "supernet":
        return (f"a supernet folder, not a model folder (extract a subnet to serve it: "
                f"`automoe extract {path} --arch largest --out DIR`)")
    return "not a model folder (config.json + model.safetensors) nor an export folder (export_info.json)"


def _names(models) -> dict[str, str]:
    """{display name: folder or Hub id} from a dict or a list of folders / Hub ids. Local paths
    that are not model or export folders (a supernet, a README, ...) are skipped with a note, so
    `automoe serve models/*` serves the models among them."""
    if isinstance(models, dict):
        named = {str(k): str(v) for k, v in models.items()}
    else:
        named, skipped = {}, []
        for m in models:
            path = Path(m)
            note = _skip_note(path)
            if note:
                logger.warning("skipping %s: %s", m, note)
                skipped.append(str(m))
                continue
            base = path.name if path.exists() else str(m)
            name, n = base, 2
            while name in named:
                name, n = f"{base}-{n}", n + 1
            named[name] = str(m)
        if skipped and not named:
            raise ValueError(f"none of {skipped} is a model or export folder: pass model folders or Hub repo ids")
    if not named:
        raise ValueError("no models given: pass model folders or Hub repo ids")
    return named


def discover_models(root: str | Path = "models") -> dict[str, str]:
    """Every model folder (one with config.json + model.safetensors) directly under `root`, by name."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(root.iterdir())
            if (p / "config.json").is_file() and (p / "model.safetensors").is_file()}


def default_model(models: dict[str, str]) -> str:
    """The model the demo opens with: the fastest AutoMoE model (a searched MoE model, named
    automoe-*; fastest by analytic GFLOPs), else the shipped model with the best test BLEU recorded
    in its config.json provenance (`training.eval.bleu`), else the first."""
    from automoe.checkpoint import read_model_config
    from automoe.search.flops import cost

    local = {}
    for name, folder in models.items():
        try:
            local[name] = read_model_config(folder)
        except (OSError, ValueError):
            continue  # a Hub id or unreadable folder: not ranked
    automoe_models = [n for n, (arch, _) in local.items() if n.startswith("automoe") and not arch.is_dense]
    if automoe_models:
        return min(automoe_models, key=lambda n: cost(local[n][0]).gflops)
    scored = [(meta["training"].get("eval", {}).get("bleu"), n) for n, (_, meta) in local.items()]
    scored = [(b, n) for b, n in scored if isinstance(b, (int, float))]
    return max(scored)[1] if scored else next(iter(models))


def load_examples(data_dir: str | Path | None, n: int = 8, max_chars: int = 160) -> list[str]:
    """Up to `n` short English sentences from the test split of a dataset folder, else built-ins."""
    if data_dir is not None:
        from automoe.evaluate import read_split

        try:
            sources, _ = read_split(data_dir, "test")
        except (OSError, ValueError) as e:
            logger.warning("no example sentences from %s (%s): using built-in ones", data_dir, e)
        else:
            picked = [s for s in sources if 10 <= len(s) <= max_chars][:n]
            if picked:
                return picked
    return BUILTIN_EXAMPLES[:n]


class DemoBackend:
    """What the app does, without gradio: cached Translators, input checks, timing, routing views.

    `models`: {name: folder or Hub id} or a list of them (named by folder name / id). `default`:
    the model selected at start (unless given: `default_model`, the fastest AutoMoE model, else
    the best recorded BLEU, else the first). `engines`: default every engine of
    `Translator` whose runtime is installed. `threads`: intra-op threads per request (default 1:
    requests run side by side up to the queue's concurrency limit, and on small shared VMs one
    thread per request is faster than two). Translators are loaded once per (model, engine) and
    kept; `preload` loads every model with the first engine up front so a bad path fails at start
    and the first request is not slow.
    """

    def __init__(self, models, default: str | None = None, *, engines: tuple[str, ...] | None = None,
                 threads: int | None = 1, max_chars: int = 1000, max_lines: int = 8,
                 default_beam: int = 4, preload: bool = True):
        self.models = _names(models)
        self.default = default or default_model(self.models)
        if self.default not in self.models:
            raise ValueError(f"default model {self.default!r} is not one of {list(self.models)}")
        self.engines = tuple(engines or available_engines())
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown:
            raise ValueError(f"engines {unknown} are not available; choose from {list(ENGINES)}")
        self.threads = threads
        self.max_chars = max_chars
        self.max_lines = max_lines
        self.default_beam = default_beam
        self._cache: dict[tuple[str, str, bool], Translator] = {}
        self._lock = threading.Lock()
        if preload:
            for name in self.models:
                self.translator(name, self.engines[0])

    # ------------------------------------------------------------------------ models
    def translator(self, name: str, engine: str = "torch", shortlist: bool = False) -> Translator:
        """The cached Translator for (model name, engine, shortlist), loaded on first use;
        `shortlist` decodes over the model's lexical shortlist (`automoe.shortlist`)."""
        if name not in self.models:
            raise InputError(f"unknown model {name!r}; choose one of {list(self.models)}")
        if engine not in self.engines:
            raise InputError(f"engine {engine!r} is not available; choose one of {list(self.engines)}")
        key = (name, engine, bool(shortlist))
        with self._lock:
            if key not in self._cache:
                start = time.perf_counter()
                runtime, quantize = parse_engine(engine)
                try:
                    tr = Translator.from_pretrained(self.models[name], engine=runtime, quantize=quantize,
                                                    threads=self.threads, shortlist=bool(shortlist))
                except Exception as e:  # shown to the user, not a crash (e.g. no shortlist.safetensors)
                    what = f"engine {engine!r}" + (" and its lexical shortlist" if shortlist else "")
                    raise InputError(f"could not load model {name!r} with {what}: {e}") from e
                tr.translate(["Warm up."], beam=1, max_length=4)
                logger.info("loaded %s (%s) in %.1f s", name, engine, time.perf_counter() - start)
                self._cache[key] = tr
            return self._cache[key]

    def arch(self, name: str):
        return self.translator(name, self.engines[0]).config

    def model_choices(self) -> list[str]:
        return list(self.models)

    def moe_models(self) -> list[str]:
        """Names of the loaded models that have at least one MoE layer."""
        return [n for n in self.models if not self.arch(n).is_dense]

    # ------------------------------------------------------------------------ input checks
    @staticmethod
    def _rejected(e: Exception) -> str:
        """The message of a refused request, logged as one line (never a traceback)."""
        message = " ".join(str(e).split())
        logger.info("rejected request: %s", message)
        return message

    def _lines(self, text: str | None) -> list[str]:
        text = (text or "").strip()
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"The input is not valid Unicode text: character {e.start} is a lone surrogate "
                             f"(U+{ord(text[e.start]):04X}).") from None
        if not visible(text):
            raise InputError("Type an English sentence (or pick an example) and press Translate.")
        if len(text) > self.max_chars:
            raise InputError(f"The input is {len(text)} characters long; this demo translates at most "
                             f"{self.max_chars}. Please shorten it.")
        lines = [line.strip() for line in text.splitlines() if visible(line)]
        if len(lines) > self.max_lines:
            raise InputError(f"The input has {len(lines)} lines; this demo translates at most {self.max_lines} "
                             "sentences (one per line) at a time.")
        return lines

    @staticmethod
    def _check_length(tr: Translator, lines: list[str], name: str) -> None:
        limit = tr.max_source_tokens
        for i, line in enumerate(lines, 1):
            n = len(tr.tokenizer.encode(line, out_type=int)) + 1  # + EOS
            if n > limit:
                which = f"Sentence {i}" if len(lines) > 1 else "The sentence"
                raise InputError(f"{which} is too long: {n} tokens, but model {name!r} reads at most {limit} "
                                 "tokens. Please shorten it or split it into several lines.")

    @staticmethod
    def _beam(beam) -> int:
        try:
            beam = int(beam)
        except (TypeError, ValueError):
            raise InputError(f"beam must be a whole number, got {beam!r}") from None
        if not 1 <= beam <= 8:
            raise InputError(f"beam must be between 1 and 8, got {beam}")
        return beam

    # ------------------------------------------------------------------------ the three views
    def translate(self, text: str, model: str, engine: str, beam: int,
                  shortlist: bool = False) -> tuple[str, float | None, str]:
        """(German text or a message, ms or None, status line); `shortlist` decodes over the
        model's lexical shortlist."""
        try:
            lines = self._lines(text)
            beam = self._beam(beam)
            tr = self.translator(model, engine, shortlist)
            self._check_length(tr, lines, model)
            start = time.perf_counter()
            out = tr.translate(lines, beam=beam)
        except (InputError, ValueError, TypeError) as e:  # refused input (e.g. a lone surrogate): said, not raised
            message = self._rejected(e)
            return message, None, f"⚠️ {message}"
        # rounded once: the status line and the number field must show the same value
        ms = round((time.perf_counter() - start) * 1000, 2)
        per = f" ({ms / len(lines):.1f} ms per sentence)" if len(lines) > 1 else ""
        status = f"**{ms:.1f} ms**{per} · model `{model}` · engine `{engine}` · beam {beam}"
        if shortlist:
            status += " · lexical shortlist"
        return "\n".join(out), ms, status

    def compare(self, text: str, engine: str, beam: int) -> tuple[list[list], str]:
        """(one table row per model: COMPARE_HEADERS, status line)."""
        try:
            lines = self._lines(text)
            beam = self._beam(beam)
        except InputError as e:
            return [], f"⚠️ {self._rejected(e)}"
        rows, archs = [], {}
        for name in self.models:
            try:
                tr = self.translator(name, engine)
                self._check_length(tr, lines, name)
                start = time.perf_counter()
                out = tr.translate(lines, beam=beam)
            except (InputError, ValueError, TypeError) as e:
                rows.append([name, "", "", None, "", f"⚠️ {self._rejected(e)}"])
                continue
            ms = round((time.perf_counter() - start) * 1000, 2)
            archs[name] = tr.config
            rows.append([name, "", _experts_summary(tr.config), ms, "", "\n".join(out)])
        kinds = model_kinds(archs)
        # "vs dense" divides the reference dense model's time (not a searched dense one's)
        dense_ms = next((row[3] for row in rows if kinds.get(row[0]) == "dense"), None)
        for row in rows:
            row[1] = kinds.get(row[0], "")
            if dense_ms and row[3]:
                row[4] = f"{dense_ms / row[3]:.2f}x"
        done = [r for r in rows if r[3] is not None]
        status = (f"{len(done)} of {len(rows)} models · engine `{engine}` · beam {beam} · one run each, in order: "
                  "timings on a shared machine are indicative only")
        return rows, status

    def routing(self, text: str, model: str, beam: int) -> tuple[str, str, list[list], dict]:
        """(German text or a message, routing HTML, WIDTH_HEADERS rows, raw routing dict)."""
        try:
            lines = self._lines(text)
            beam = self._beam(beam)
            if len(lines) > 1:
                raise InputError("The routing view shows one sentence at a time: enter a single line.")
            tr = self.translator(model, "torch")
            self._check_length(tr, lines, model)
            routed = tr.translate_with_routing(lines, beam=beam)[0]
        except (InputError, ValueError, TypeError) as e:
            message = self._rejected(e)
            return message, f"<p class='routing-message'>⚠️ {html.escape(message)}</p>", [], {}
        arch = tr.config
        raw = {"model": model, "source_pieces": routed.source_pieces, "target_pieces": routed.target_pieces,
               "encoder_routing": routed.encoder_routing, "decoder_routing": routed.decoder_routing,
               "encoder_ffn": [list(w) for w in arch.encoder_ffn], "decoder_ffn": [list(w) for w in arch.decoder_ffn]}
        return routed.text, routing_html(routed, arch, model, model_kind(arch)), width_rows(routed, arch), raw
