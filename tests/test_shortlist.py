"""Lexical shortlists: the file round-trips and refuses what is corrupt or mismatched; decoding over a
shortlist that holds every token the full-vocabulary decode chose gives the same translation on
every engine (tiny random models, the fixture corpus)."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from automoe.config import SearchSpace
from automoe.evaluate import corpus_scores
from automoe.random_model import save_random_model
from automoe.serve import Translator
from automoe.shortlist import (SHORTLIST_FILE, VMAP_FILE, Shortlist, ShortlistError, build_shortlist,
                               load_for_model, translator_kwargs, vmap_lines)
from automoe.shortlist_tune import choose, parse_sizes, tune_shortlist

DATA = Path(__file__).parent / "data" / "bible-en-de"
SOURCES = [line.strip() for line in (DATA / "test.src").read_text().splitlines()[:14]] + ["Amen.", "Jesus wept."]
TINY = SearchSpace.preset("tiny")


def _save(arch, path, seed=0):
    # Decoding over a shortlist renormalises the softmax over it. Greedy decoding is unchanged by
    # that; beam search compares hypotheses by summed log-probabilities, which shift by the mass
    # left out, so beam results equal the full decode's only when that mass is negligible, as in a
    # confident model. A random model is that confident only with sharp output embeddings (at the
    # usual sharpen=4 a tenth of the vocabulary leaves ~40% of the mass out and beams differ).
    return save_random_model(arch, path, seed=seed, sharpen=80.0, tokenizer_file=DATA / "spm.model")


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    arch = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                  encoder_ffn=((40, 8), (24,), (8, 24, 40)), decoder_ffn=((24, 40, 8), (40,), (8, 8)),
                                  decoder_cross_last_k=(2, 1, 2), decoder_heads=(2, 4, 2))
    folder = _save(arch, tmp_path_factory.mktemp("m") / "moe")
    build_shortlist(DATA, folder, top_k=8, frequent=20).save(folder / SHORTLIST_FILE)
    return folder


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    arch = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                  encoder_ffn=((40,), (8,), (24,)), decoder_ffn=((8,), (40,), (24,)),
                                  encoder_heads=(2, 4, 2), decoder_heads=(4, 2, 2), decoder_cross_heads=(2, 2, 4))
    folder = _save(arch, tmp_path_factory.mktemp("d") / "dense", seed=1)
    build_shortlist(DATA, folder, top_k=8, frequent=20).save(folder / SHORTLIST_FILE)
    return folder


def test_build_records_sizes_and_round_trips(moe_dir, tmp_path):
    sl = load_for_model(moe_dir)
    h = sl.header
    assert h["vocab_size"] == 1000 and h["top_k"] == 8 and h["frequent"] == 20 and h["score"] == "dice"
    assert h["special_ids"] == [0, 1, 2, 3] and set(h["special_ids"]) <= set(sl.always.tolist())
    stats = h["stats"]
    assert stats["split"] == "dev" and stats["sentences"] == len((DATA / "dev.src").read_text().splitlines())
    assert 24 <= stats["avg_size"] <= stats["max_size"] < 1000 and 0.3 < stats["coverage"] <= 1
    assert (sl.table[h["special_ids"]] == -1).all()  # EOS / padding bring no targets
    ids = sl.ids([17, 40, 3, 0])
    assert ids[:4].tolist() == [0, 1, 2, 3] and (np.diff(ids[4:]) > 0).all()  # specials first, then ascending
    assert set(sl.table[17][sl.table[17] >= 0].tolist()) <= set(ids.tolist())
    assert sl.batch_ids([[17, 3], [17, 40, 3]]).shape[0] == 2
    again = Shortlist.load(sl.save(tmp_path / "copy.safetensors"))
    assert again.header == sl.header and (again.table == sl.table).all() and (again.always == sl.always).all()
    assert translator_kwargs(moe_dir) == (True, {"shortlist": True})
    assert translator_kwargs(tmp_path) == (False, {})


def test_corrupt_or_mismatched_shortlists_are_refused_naming_the_file(moe_dir, tmp_path):
    good = moe_dir / SHORTLIST_FILE
    sl = Shortlist.load(good)
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ShortlistError, match="truncated.safetensors"):
        Shortlist.load(bad)
    with pytest.raises(ShortlistError, match="built for a vocabulary of 1000 pieces, the model has 999"):
        Shortlist.load(good, vocab_size=999)
    with pytest.raises(ShortlistError, match="another tokenizer"):
        Shortlist.load(good, tokenizer_sha256="0" * 64)
    out_of_range = dataclasses.replace(sl, table=np.full_like(sl.table, 5000))
    with pytest.raises(ShortlistError, match="out.safetensors: ids outside the vocabulary"):
        Shortlist.load(out_of_range.save(tmp_path / "out.safetensors"))
    other = dataclasses.replace(sl, header={**sl.header, "format": "something-else"})
    with pytest.raises(ShortlistError, match="other.safetensors: format 'something-else'"):
        Shortlist.load(other.save(tmp_path / "other.safetensors"))
    with pytest.raises(ShortlistError, match="not found: build one"):
        Shortlist.load(tmp_path / "missing.safetensors")
    # a model folder whose tokenizer changed after the shortlist was built refuses it
    copy = tmp_path / "model"
    shutil.copytree(moe_dir, copy)
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()  # the same pieces in another file: another tokenizer
    proto.ParseFromString((copy / "spm.model").read_bytes())
    proto.trainer_spec.model_prefix = "changed"
    (copy / "spm.model").write_bytes(proto.SerializeToString())
    with pytest.raises(ShortlistError, match=f"{copy / SHORTLIST_FILE} was built with another tokenizer"):
        Translator.from_pretrained(copy, shortlist=True, verify=False)  # the spm.model edited on purpose


def covering(model_dir: Path, translators: list, tmp_path: Path, beams=(1, 4)) -> Path:
    """A copy of `model_dir` whose shortlist also always holds every token that `translators`
    chose (full-vocabulary decodes, batched and one sentence at a time); the rest stays out."""
    sl = load_for_model(model_dir)
    chosen = set()
    for tr in translators:
        for beam in beams:
            for batch in [SOURCES] + [[s] for s in SOURCES]:
                _, results = tr._run(batch, beam, 24, routing=False)
                chosen |= {t for gen, row in results for t in gen.tokens[row]}
    always = np.union1d(sl.always, np.asarray(sorted(chosen), dtype=np.int32)).astype(np.int32)
    folder = tmp_path / f"{model_dir.name}-covering"
    shutil.copytree(model_dir, folder)
    dataclasses.replace(sl, always=always).save(folder / SHORTLIST_FILE)
    assert len(load_for_model(folder).ids([3])) < sl.vocab_size * 0.6  # a real restriction
    return folder


def assert_shortlist_equals_full(full: Translator, short: Translator, beams=(1, 4)) -> None:
    """Batched and one-sentence-at-a-time translations with the shortlist equal the full decode's."""
    for beam in beams:
        expected = full.translate(SOURCES, beam=beam, max_length=24)
        assert len(set(expected)) > 5  # the sentences really differ
        assert short.translate(SOURCES, beam=beam, max_length=24) == expected
        one_by_one = [full.translate([s], beam=beam, max_length=24)[0] for s in SOURCES]  # may differ in int8
        assert [short.translate([s], beam=beam, max_length=24)[0] for s in SOURCES] == one_by_one


def test_torch_shortlist_decode_equals_full_decode(moe_dir, tmp_path):
    full = Translator.from_pretrained(moe_dir)
    folder = covering(moe_dir, [full], tmp_path)
    short = Translator.from_pretrained(folder, shortlist=True)
    assert_shortlist_equals_full(full, short)
    routed = short.translate_with_routing(SOURCES[:2], beam=4, max_length=24)
    assert [r.text for r in routed] == full.translate(SOURCES[:2], beam=4, max_length=24)
    # the test can fail: a shortlist without the chosen tokens changes the translations
    tiny = dataclasses.replace(load_for_model(moe_dir), table=np.full((1000, 1), -1, np.int32),
                               always=np.array([0, 1, 2, 3, 5, 6, 7, 8, 9], np.int32))
    assert Translator(full.backend, full.tokenizer, shortlist=tiny).translate(SOURCES[:4], beam=4, max_length=24) \
        != full.translate(SOURCES[:4], beam=4, max_length=24)


def test_ct2_vmap_decode_equals_full_decode(dense_dir, tmp_path):
    from automoe.export.ctranslate2 import to_ctranslate2

    full = Translator.from_pretrained(to_ctranslate2(dense_dir, tmp_path / "full", quantize="int8"))
    folder = covering(dense_dir, [full, Translator.from_pretrained(dense_dir)], tmp_path)
    export = to_ctranslate2(folder, tmp_path / "ct2", quantize="int8")
    info = json.loads((export / "export_info.json").read_text())
    assert info["shortlist"]["vmap"] == VMAP_FILE and (export / VMAP_FILE).is_file()
    assert_shortlist_equals_full(full, Translator.from_pretrained(export, shortlist=True))


@pytest.mark.parametrize("quantize", [None, "int8", "int8-row"])
def test_onnx_shortlist_beam_graph_equals_full_decode(moe_dir, tmp_path, quantize):
    from automoe.export.onnx import to_onnx
    from automoe.export.onnx_shortlist import SHORTLIST_BEAM_FILE, width_file

    full = Translator.from_pretrained(to_onnx(moe_dir, tmp_path / "full", quantize=quantize))
    folder = covering(moe_dir, [full], tmp_path)
    export = to_onnx(folder, tmp_path / "onnx", quantize=quantize)
    entry = json.loads((export / "export_info.json").read_text())["shortlist"]
    # the widths below the vocabulary size (1,000 here)
    assert entry["beam_search"] == SHORTLIST_BEAM_FILE and entry["widths"] == {"512": width_file(512),
                                                                               "768": width_file(768)}
    # their weights live in weights.onnx.data with the other graphs' (one copy): no large tensor inline
    import onnx

    from automoe.export.onnx import _tensors

    for name in (SHORTLIST_BEAM_FILE, width_file(512)):
        graph = onnx.load(str(export / name), load_external_data=False).graph
        assert max(len(t.raw_data) for t in _tensors(graph) if t.data_location != onnx.TensorProto.EXTERNAL) < 1024
    # one sentence: the shortlist beam graph; a batch: the step graphs' logits masked to the shortlist.
    # int8 and int8-row: greedy only. The K logits are the full graph's numbers (greedy scores are
    # equal to the last bit), but this random int8 model's beams switch tokens at near-ties that the
    # shortlist's renormalised scores (shifted by ~1e-3) tip in 1-3 of 16 sentences, the same way on
    # both paths.
    beams = (1, 4) if quantize is None else (1,)
    assert_shortlist_equals_full(full, Translator.from_pretrained(export, shortlist=True), beams=beams)


@pytest.mark.parametrize("quantize", [None, "int8", "int8-row"])
def test_onnx_fixed_width_and_scattered_shortlist_graphs_decode_alike(moe_dir, tmp_path, quantize):
    """The fixed-width graph (positions mapped back to ids, padding masked) and the scattered graph
    (a shortlist longer than every width falls back to it) give the same tokens and scores; the
    engine picks the narrowest width that holds a sentence's shortlist."""
    from automoe.export.onnx import to_onnx
    from automoe.export.onnx_shortlist import SHORTLIST_BEAM_FILE, width_file

    short = Translator.from_pretrained(to_onnx(moe_dir, tmp_path / "onnx", quantize=quantize), shortlist=True)
    engine = short.backend
    sources = [short._encode([s])[0] for s in SOURCES]
    for beam in (1, 4):
        fixed = [engine.translate_ids([ids], beam=beam, max_length=24, shortlist=short.shortlist) for ids in sources]
        assert set(engine._shortlist_sessions) - {SHORTLIST_BEAM_FILE} == {width_file(512)}  # all < 512 ids
        widths, engine.shortlist_widths = engine.shortlist_widths, {}
        scattered = [engine.translate_ids([ids], beam=beam, max_length=24, shortlist=short.shortlist)
                     for ids in sources]
        engine.shortlist_widths = widths
        assert SHORTLIST_BEAM_FILE in engine._shortlist_sessions
        assert [g.tokens for g in fixed] == [g.tokens for g in scattered]
        assert np.allclose([g.scores for g in fixed], [g.scores for g in scattered], atol=1e-5)
    # a shortlist longer than 512 ids goes to the 768-wide graph
    wide = dataclasses.replace(short.shortlist, always=np.arange(600, dtype=np.int32))
    engine.translate_ids([sources[0]], beam=2, max_length=8, shortlist=wide)
    assert width_file(768) in engine._shortlist_sessions


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "dense-small-bible"


@pytest.mark.skipif(not (SHIPPED / SHORTLIST_FILE).is_file(), reason="needs models/dense-small-bible")
def test_shipped_dense_model_int8_shortlist_beam_equals_full_decode(tmp_path):
    """The int8 beam graph of the shipped (trained) dense model, greedy, over a shortlist that holds
    the tokens the full decode chose gives the full decode's translations. Under beam 4 it does not
    (6 of these 16 sentences differ: the renormalised scores shift by the mass left out, which this
    model does not make negligible; docs/shortlist.md), so beam 4 is not asserted here."""
    from automoe.export.onnx import to_onnx

    full = Translator.from_pretrained(to_onnx(SHIPPED, tmp_path / "full", quantize="int8"), threads=1)
    folder = covering(SHIPPED, [full], tmp_path, beams=(1,))
    short = Translator.from_pretrained(to_onnx(folder, tmp_path / "onnx", quantize="int8"), shortlist=True, threads=1)
    assert_shortlist_equals_full(full, short, beams=(1,))


def test_generate_refuses_a_malformed_shortlist(moe_dir):
    from automoe.generate import generate
    from automoe.modeling import MoETransformer

    model = MoETransformer.from_pretrained(moe_dir)
    src = torch.tensor([[5, 6, 3]])
    with pytest.raises(ValueError, match="eos_id=3 at the same position"):
        generate(model, src, beam=2, max_length=5, shortlist=torch.tensor([[0, 1, 2, 7, 8, 9]]))
    with pytest.raises(ValueError, match=r"int64 tensor \[batch=1, K\]"):
        generate(model, src, beam=2, max_length=5, shortlist=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="too large for a shortlist of 4 ids"):
        generate(model, src, beam=4, max_length=5, shortlist=torch.tensor([[0, 1, 2, 3]]))


def test_vmap_lines_hold_the_always_set_and_every_source_list(moe_dir):
    from automoe.data import load_tokenizer

    sl = load_for_model(moe_dir)
    sp = load_tokenizer(moe_dir / "spm.model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    lines = vmap_lines(sl, pieces)
    assert lines[0] == "\t" + " ".join(pieces[i] for i in sl.always)
    rules = dict(line.split("\t") for line in lines[1:])
    assert len(rules) == int((sl.table[:, 0] >= 0).sum())
    s = int(np.nonzero(sl.table[:, 0] >= 0)[0][0])
    assert rules[pieces[s]].split(" ") == [pieces[t] for t in sl.table[s] if t >= 0]


def _cli(*args, **kw):
    exe = shutil.which("automoe")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "automoe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def test_cli_build_and_translate_with_shortlist(dense_dir, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(dense_dir, model)
    (model / SHORTLIST_FILE).unlink()
    out = _cli("shortlist", "build", "--data", str(DATA), "--model", str(model), "--top-k", "5", "--frequent", "10")
    assert out.returncode == 0, out.stderr
    header = json.loads(out.stdout.splitlines()[0])
    assert header["top_k"] == 5 and header["stats"]["avg_size"] > 10
    again = _cli("shortlist", "build", "--data", str(DATA), "--model", str(model))
    assert again.returncode == 2 and "pass --force" in again.stderr
    out = _cli("translate", str(model), "--shortlist", "--beam", "2", "--max-length", "8", "Jesus wept.")
    assert out.returncode == 0, out.stderr
    (model / SHORTLIST_FILE).unlink()
    missing = _cli("translate", str(model), "--shortlist", "Jesus wept.")
    assert missing.returncode == 2 and f"{model / SHORTLIST_FILE} not found" in missing.stderr


def test_tune_choose_takes_the_smallest_list_within_the_cost():
    rows = [{"avg_size": 300, "cost": 0.05}, {"avg_size": 100, "cost": 0.9}, {"avg_size": 200, "cost": 0.15},
            {"avg_size": 150, "cost": 0.25}]
    assert choose(rows, 0.2) == 2
    assert choose(rows, 0.3) == 3
    assert choose(rows, 0.01) is None
    assert parse_sizes("5:10, 20:40") == [(5, 10), (20, 40)]
    for bad in ("5", "5:x", "5:10,"):
        with pytest.raises(ValueError, match="TOP_K:FREQUENT"):
            parse_sizes(bad)


@pytest.fixture(scope="module")
def self_referenced_data(moe_dir, tmp_path_factory):
    """The fixture corpus whose dev references are the tiny model's own full-vocabulary beam-4
    translations: full BLEU is 100 and a shortlist costs what it changes."""
    data = tmp_path_factory.mktemp("selfref")
    for name in ("train.src", "train.tgt"):
        shutil.copyfile(DATA / name, data / name)
    sources = (DATA / "dev.src").read_text(encoding="utf-8").splitlines()[:12]
    full = Translator.from_pretrained(moe_dir)
    targets = [full.translate([s], beam=4)[0] for s in sources]
    for side, lines in (("src", sources), ("tgt", targets)):
        (data / f"dev.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def test_tune_measures_each_size_and_keeps_the_smallest_within_the_cost(moe_dir, self_referenced_data, tmp_path):
    sizes = [(8, 20), (1, 2), (30, 200)]
    shortlist, record = tune_shortlist(self_referenced_data, moe_dir, sizes=sizes, max_cost=100.0, engine="torch",
                                       progress=False)
    rows = record["candidates"]
    assert record["full_bleu"] == 100.0 and record["sentences"] == 12 and record["split"] == "dev"
    assert [(r["top_k"], r["frequent"]) for r in rows] == [(1, 2), (8, 20), (30, 200)]  # by size per sentence
    assert rows[0]["avg_size"] < rows[1]["avg_size"] < rows[2]["avg_size"]
    assert rows[0]["cost"] > 5.0  # a random model's translations move a lot under a small list
    assert all(r["cost"] == round(100.0 - r["bleu"], 2) for r in rows)
    assert record["chosen"] == {"top_k": 1, "frequent": 2} and shortlist.header["top_k"] == 1  # all pass: smallest
    again = Shortlist.load(shortlist.save(tmp_path / SHORTLIST_FILE))
    assert again.header["tuning"] == record
    # the row's BLEU is what decoding over that list one sentence at a time gives
    tr = Translator.from_pretrained(moe_dir)
    tr.shortlist = again
    sources = (self_referenced_data / "dev.src").read_text().splitlines()
    refs = (self_referenced_data / "dev.tgt").read_text().splitlines()
    assert corpus_scores([tr.translate([s], beam=4)[0] for s in sources], refs)["bleu"] == rows[0]["bleu"]
    none, failed = tune_shortlist(self_referenced_data, moe_dir, sizes=[(1, 2)], max_cost=rows[0]["cost"] - 0.01,
                                  engine="torch", progress=False)
    assert none is None and failed["chosen"] is None and failed["candidates"] == rows[:1]
    with pytest.raises(ValueError, match="cannot tune"):
        tune_shortlist(self_referenced_data, moe_dir, engine="ctranslate2-int8")
    from automoe.export.onnx import to_onnx

    export = to_onnx(moe_dir, tmp_path / "onnx")
    with pytest.raises(ValueError, match=f"{export} is an export folder: tune the model folder"):
        tune_shortlist(self_referenced_data, export, engine="onnxruntime")


def test_cli_tune_on_onnxruntime_int8(moe_dir, self_referenced_data, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(moe_dir, model)
    before = (model / SHORTLIST_FILE).read_bytes()
    results = tmp_path / "tune.jsonl"
    args = ["shortlist", "tune", "--data", str(self_referenced_data), "--model", str(model), "--sizes", "1:2,30:200",
            "--limit", "4", "--no-progress", "--results", str(results)]
    out = _cli(*args)
    assert out.returncode == 2 and "pass --force" in out.stderr
    out = _cli(*args, "--max-cost", "100", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "onnxruntime-int8" in out.stdout and "<- chosen" in out.stdout
    assert (model / SHORTLIST_FILE).read_bytes() == before  # a dry run writes nothing
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["benchmark"] == "shortlist_tune" and record["sentences"] == 4 and record["engine"] == "onnxruntime-int8"
    assert record["chosen"] == {"top_k": 1, "frequent": 2} and record["full_bleu"] > 20  # int8 moves a few pieces
    smallest = record["candidates"][0]
    assert (smallest["top_k"], smallest["frequent"]) == (1, 2) and smallest["cost"] > 1.0
    # nothing within the bound (torch: no export needed for this path)
    out = _cli(*args[:-2], "--sizes", "1:2", "--max-cost", "0", "--engine", "torch", "--force")
    assert out.returncode == 1 and "nothing written" in out.stderr
    assert (model / SHORTLIST_FILE).read_bytes() == before
    out = _cli(*args, "--max-cost", "100", "--force")
    assert out.returncode == 0, out.stderr
    assert load_for_model(model).header["tuning"]["chosen"] == {"top_k": 1, "frequent": 2}
