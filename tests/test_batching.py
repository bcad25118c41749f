"""One beam search: a sentence translates the same alone, in any batch and at any position in it,
on every engine (torch, ONNX Runtime fp32, int8 and int8-row), for dense and MoE models.

ONNX Runtime fp32 and int8-row are tested on the stepped path (decoder.onnx under automoe's beam
search, which `batch_min` selects) against the in-graph beam search one sentence at a time; int8
exports quantize activations with one scale per tensor, so on that path a row would depend on its
batch-mates, and `Translator` translates int8 lists one sentence at a time (serve.engines.BATCH_MIN):
the int8 tests check that default."""

from pathlib import Path

import pytest

from automoe.config import SearchSpace
from automoe.random_model import save_random_model
from automoe.serve import Translator

DATA = Path(__file__).parent / "data" / "bible-en-de"
SOURCES = [line.strip() for line in (DATA / "test.src").read_text().splitlines()[:14]] + ["Amen.", "Jesus wept."]
TINY = SearchSpace.preset("tiny")
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "dense-small-bible"


def _arch(moe: bool):
    arch = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                  decoder_cross_last_k=(2, 1, 2), decoder_heads=(2, 4, 2))
    if moe:
        return arch.replace(encoder_ffn=((40, 8), (24,), (8, 24, 40)), decoder_ffn=((24, 40, 8), (40,), (8, 8)))
    return arch.replace(encoder_ffn=((40,), (8,), (24,)), decoder_ffn=((8,), (40,), (24,)))


@pytest.fixture(scope="module", params=["dense", "moe"])
def model_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / request.param
    return save_random_model(_arch(request.param == "moe"), folder, seed=3, sharpen=4.0,
                             tokenizer_file=DATA / "spm.model")


def _translations(tr: Translator, sources: list[str], beam: int = 4) -> dict[str, list[str]]:
    """The translations of `sources` one at a time, in one batch, in batches of another make-up
    (a small token budget), and in one batch in reverse order (turned back)."""
    single = [tr.translate([s], beam=beam, max_length=16)[0] for s in sources]
    batched = tr.translate(sources, beam=beam, max_length=16)
    budget = tr.max_batch_tokens
    tr.max_batch_tokens = 60
    small = tr.translate(sources, beam=beam, max_length=16)
    tr.max_batch_tokens = budget
    reverse = tr.translate(sources[::-1], beam=beam, max_length=16)[::-1]
    return {"single": single, "batched": batched, "small batches": small, "reversed": reverse}


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "onnxruntime-int8", "onnxruntime-int8-row"])
def test_a_sentence_translates_alike_alone_and_in_any_batch(model_dir, engine, tmp_path):
    from automoe.bench import parse_engine
    from automoe.export.onnx import to_onnx

    if engine == "torch":
        tr = Translator.from_pretrained(model_dir)
    else:
        quantize = parse_engine(engine)[1]
        tr = Translator.from_pretrained(to_onnx(model_dir, tmp_path / engine, quantize=quantize))
        if quantize != "int8":  # per-row int8 and fp32: every row alone, so batches may take the stepped path
            tr.backend.batch_min = 2  # batches through decoder.onnx under automoe's beam search
    got = _translations(tr, SOURCES)
    for way in ("batched", "small batches", "reversed"):
        differ = [s for s, a, b in zip(SOURCES, got["single"], got[way]) if a != b]
        assert not differ, f"{engine}: {len(differ)} sentences translate differently {way}: {differ[:3]}"


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="needs models/dense-small-bible")
def test_shipped_dense_model_translates_alike_batched_and_alone(tmp_path):
    """100 test verses with the shipped dense model on ONNX Runtime int8 and int8-row: identical
    translations one at a time and as one list (int8: the default path for its lists, one sentence
    at a time; int8-row: the whole list through decoder.onnx)."""
    from automoe.evaluate import read_split
    from automoe.export.onnx import to_onnx

    sources, _ = read_split(DATA, "test", 100)
    for quantize in ("int8", "int8-row"):
        tr = Translator.from_pretrained(to_onnx(SHIPPED, tmp_path / quantize, quantize=quantize), threads=1)
        if quantize == "int8-row":
            tr.backend.batch_min = 2  # the stepped path: decoder.onnx at up to 100 sentences x 4 beams
        single = [tr.translate([s])[0] for s in sources]
        batched = tr.translate(sources)
        differ = [i for i, (a, b) in enumerate(zip(single, batched)) if a != b]
        assert not differ, f"{quantize}: {len(differ)} of {len(sources)} verses differ, e.g. {sources[differ[0]]!r}"
