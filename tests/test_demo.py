"""The Gradio demo on 127.0.0.1 with two tiny random models: API endpoints through gradio_client,
and a browser test (Playwright + Debian chromium) that types, clicks and reads the German output."""

import logging
import os
from pathlib import Path

import pytest
import torch

from automoe.modeling import MoETransformer
from automoe.random_model import save_random_model
from automoe.serve import Translator

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]  # gradio's pandas calls

DATA = Path(__file__).parent / "data" / "bible-en-de"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
SENTENCE = "In the beginning God created the heavens and the earth."
TOO_LONG = "and the word was with God " * 12  # > 24 tokens: over the tiny models' limit


def _tiny(path: Path, seed: int, moe: bool) -> Path:
    from automoe.config import SearchSpace

    arch = SearchSpace.preset("tiny").largest().replace(vocab_size=1000, max_positions=24)
    if moe:  # heterogeneous experts: a dense layer among MoE layers of different widths
        arch = arch.replace(encoder_ffn=((40, 8), (24,), (8, 40, 24)), decoder_ffn=((24, 8), (40,), (8, 40)))
    return save_random_model(arch, path, seed=seed, tokenizer_file=DATA / "spm.model")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-models")
    from automoe.shortlist import SHORTLIST_FILE, build_shortlist

    out = {"dense-tiny": _tiny(root / "dense-tiny", 0, moe=False),
           "automoe-tiny": _tiny(root / "automoe-tiny", 1, moe=True)}
    build_shortlist(DATA, out["automoe-tiny"], top_k=8, frequent=20).save(out["automoe-tiny"] / SHORTLIST_FILE)
    return out


@pytest.fixture(scope="module")
def app(models):
    from automoe.serve.app import free_port, launch

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    port = free_port()
    demo = launch(models, port=port, data_dir=DATA, concurrency_limit=2, prevent_thread_lock=True, quiet=True)
    assert demo.server_name == "127.0.0.1" and demo.server_port == port  # loopback unless told otherwise
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def _rows(table) -> list[list]:
    """gradio_client returns a Dataframe as {"headers": [...], "data": [[...]]}."""
    return table["data"] if isinstance(table, dict) else table


def test_app_config(app, models):
    demo, url = app
    assert url.startswith("http://127.0.0.1:")
    be = demo.backend
    # the demo opens on the AutoMoE model when one is shipped
    assert be.model_choices() == ["dense-tiny", "automoe-tiny"] and be.default == "automoe-tiny"
    assert be.moe_models() == ["automoe-tiny"]
    from automoe.bench import ENGINES

    assert be.engines[0] == "torch" and set(be.engines) <= set(ENGINES) and be.threads == 1
    from automoe.serve.demo import load_examples, model_kind

    assert load_examples(DATA)[0].startswith("The first book I wrote, Theophilus")
    assert load_examples(None)[0] == "In the beginning God created the heavens and the earth."
    assert model_kind(be.arch("dense-tiny")) == "dense" and model_kind(be.arch("automoe-tiny")) == "AutoMoE"
    from automoe.config import SearchSpace

    assert model_kind(SearchSpace.preset("tiny").switch_baseline(3)) == "Switch (3 experts)"
    from automoe.serve.demo import model_kinds

    tiny = SearchSpace.preset("tiny")  # the largest dense model is the reference; a smaller dense one was searched
    assert model_kinds({"hat": tiny.smallest(), "big": tiny.largest(), "sw": tiny.switch_baseline(3)}) == {
        "hat": "HAT-style dense", "big": "dense", "sw": "Switch (3 experts)"}


def test_translate_endpoint(client, models):
    german, ms, status = client.predict(SENTENCE, "automoe-tiny", "torch", 2, api_name="/translate")
    expected = Translator.from_pretrained(models["automoe-tiny"]).translate([SENTENCE], beam=2)[0]
    assert german == expected and german.strip()
    assert ms > 0 and f"{ms:.1f} ms" in status and "automoe-tiny" in status and "beam 2" in status

    german, ms, status = client.predict(f"{SENTENCE}\nJesus wept.", "dense-tiny", "torch", 1, api_name="/translate")
    assert len(german.split("\n")) == 2 and "per sentence" in status

    german, ms, status = client.predict("   ", "dense-tiny", "torch", 4, api_name="/translate")
    assert german.startswith("Type an English sentence") and ms is None

    german, ms, status = client.predict(TOO_LONG, "dense-tiny", "torch", 4, api_name="/translate")
    assert "too long" in german and "reads at most 24 tokens" in german and ms is None

    german, ms, _ = client.predict("x" * 1200, "dense-tiny", "torch", 4, api_name="/translate")
    assert "1200 characters long" in german and ms is None


def test_translate_on_the_int8_export(client, models, tmp_path, monkeypatch):
    """The int8 engines the package ships for CPU are choices of the demo, named as the bench names them."""
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path / "cache"))
    german, ms, status = client.predict(SENTENCE, "automoe-tiny", "onnxruntime-int8", 2, api_name="/translate")
    expected = Translator.from_pretrained(models["automoe-tiny"], engine="onnxruntime", quantize="int8").translate(
        [SENTENCE], beam=2)[0]
    assert german == expected and ms > 0 and "onnxruntime-int8" in status


def test_translate_with_shortlist(client, models):
    """The shortlist option decodes over the model's shortlist; a model without one says so."""
    german, ms, status = client.predict(SENTENCE, "automoe-tiny", "torch", 2, True, api_name="/translate")
    expected = Translator.from_pretrained(models["automoe-tiny"], shortlist=True).translate([SENTENCE], beam=2)[0]
    assert german == expected and ms > 0 and "lexical shortlist" in status
    german, ms, status = client.predict(SENTENCE, "dense-tiny", "torch", 2, True, api_name="/translate")
    assert ms is None and "lexical shortlist" in german and "automoe shortlist build" in german


def test_compare_endpoint(client):
    table, status = client.predict(SENTENCE, "torch", 2, api_name="/compare")
    rows = _rows(table)
    assert [r[0] for r in rows] == ["dense-tiny", "automoe-tiny"]
    assert [r[1] for r in rows] == ["dense", "AutoMoE"]
    assert rows[1][2] == "2 1 3 | 2 1 2"
    assert all(float(r[3]) > 0 for r in rows) and rows[0][4] == "1.00x" and rows[1][4].endswith("x")
    assert all(r[5].strip() for r in rows) and "2 of 2 models" in status

    table, status = client.predict("", "torch", 2, api_name="/compare")
    assert not _rows(table) and "Type an English sentence" in status

    table, status = client.predict(TOO_LONG, "torch", 2, api_name="/compare")
    rows = _rows(table)
    assert len(rows) == 2 and all("too long" in r[5] for r in rows) and "0 of 2 models" in status


def test_routing_endpoint(client):
    german, view, widths, raw = client.predict(SENTENCE, "automoe-tiny", 2, api_name="/routing")
    assert german.strip() and "Encoder (source tokens)" in view and "expert 2" in view
    rows = _rows(widths)
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == [
        ("encoder", 0, 2), ("encoder", 1, 1), ("encoder", 2, 3), ("decoder", 0, 2), ("decoder", 1, 1),
        ("decoder", 2, 2)]
    assert rows[1][3] == "dense (24)" and rows[1][4] == "dense" and rows[2][3] == "E0: 8 · E1: 40 · E2: 24"
    n_source = len(raw["source_pieces"])
    counts = [int(c.split(": ")[1]) for c in rows[0][4].split(" · ")]
    assert sum(counts) == n_source  # every source token went to exactly one expert of layer 0
    assert len(raw["encoder_routing"]) == n_source and all(len(r) == 3 for r in raw["encoder_routing"])
    assert all(r[2] in (0, 1, 2) and r[0] in (0, 1) for r in raw["encoder_routing"])
    assert raw["target_pieces"][0] == "<s>" and len(raw["decoder_routing"]) <= len(raw["target_pieces"])

    german, view, widths, raw = client.predict(SENTENCE, "dense-tiny", 2, api_name="/routing")
    assert all(r[4] == "dense" for r in _rows(widths)) and "expert 0" not in view

    german, view, widths, raw = client.predict("", "automoe-tiny", 2, api_name="/routing")
    assert "Type an English sentence" in german and not _rows(widths) and not raw
    german, view, widths, raw = client.predict(TOO_LONG, "automoe-tiny", 2, api_name="/routing")
    assert "too long" in german and "too long" in view


def _playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs Debian chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test needs the playwright Python package (pip install playwright); "
                    "no browser download is needed, it drives /usr/bin/chromium")
    return sync_playwright


def test_browser_translate_and_screenshot(app):
    sync_playwright = _playwright()
    _, url = app
    ARTIFACTS.mkdir(exist_ok=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url, wait_until="domcontentloaded", timeout=30_000)
            box = page.locator("#en-input textarea")
            box.wait_for(timeout=30_000)
            box.fill(SENTENCE)
            page.locator("#translate-btn").click()
            out = page.locator("#de-output textarea")
            page.wait_for_function("() => { const t = document.querySelector('#de-output textarea');"
                                   " return t && t.value.trim().length > 0; }", timeout=30_000)
            german = out.input_value()
            page.wait_for_timeout(300)  # let the status line render
            page.screenshot(path=str(ARTIFACTS / "demo_translate.png"), full_page=True)
            assert german.strip() and "Type an English" not in german
            assert "ms" in page.locator("#status").inner_text()

            page.get_by_role("tab", name="Routing").click()
            page.locator("#routing-input textarea").fill("Jesus wept.")
            page.locator("#routing-btn").click()
            page.locator("#routing-view table.routing").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "demo_routing.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "demo_translate.png").stat().st_size > 10_000


def test_default_model_prefers_automoe_then_best_bleu(tmp_path):

    from automoe.config import SearchSpace
    from automoe.serve.demo import default_model

    dense = SearchSpace.preset("tiny").largest().replace(vocab_size=1000)
    for name, bleu in (("a", 3.0), ("b", 7.5), ("c", None)):
        MoETransformer(dense).save_pretrained(tmp_path / name, training={"eval": {"bleu": bleu}} if bleu else {})
    folders = {n: str(tmp_path / n) for n in ("a", "b", "c")}
    assert default_model(folders) == "b"
    moe = dense.replace(decoder_ffn=((40, 8), (24,), (8,)))
    torch.manual_seed(0)
    MoETransformer(moe).save_pretrained(tmp_path / "automoe-x")
    assert default_model({**folders, "automoe-x": str(tmp_path / "automoe-x")}) == "automoe-x"


def test_upload_endpoint_refuses_files(app):
    """The app has no file input: Gradio's upload endpoint refuses any file (max_file_size=0)."""
    import httpx

    _, url = app
    files = {"files": ("big.bin", b"\0" * (20 << 20), "application/octet-stream")}
    response = httpx.post(f"{url}gradio_api/upload", files=files, timeout=60)
    assert response.status_code == 413, (response.status_code, response.text[:200])


def test_rejected_values_log_one_line(client, app, caplog, capfd):
    from gradio_client.exceptions import AppError

    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="automoe.serve"):  # the app and its backend (serve.demo)
        with pytest.raises(AppError, match="not in the list of choices"):
            client.predict(SENTENCE, "no-such-model", "torch", 2, api_name="/translate")
        with pytest.raises(AppError, match="greater than maximum value 8"):
            client.predict(SENTENCE, "dense-tiny", "torch", 1000, api_name="/translate")
        # JSON may carry a lone surrogate ("\\ud800"); gradio_client cannot encode one, so the backend gets it
        german, ms, _ = app[0].backend.translate("bad \ud800 text", "dense-tiny", "torch", 2)
        assert "lone surrogate" in german and ms is None
        german, ms, _ = client.predict("\x00\u200b\n\ufeff", "dense-tiny", "torch", 2, api_name="/translate")
        assert german.startswith("Type an English sentence") and ms is None
    rejected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected")]
    assert len(rejected) == 4 and all("\n" not in m for m in rejected), rejected
    assert "rejected model value 'no-such-model'" in rejected[0] and "rejected beam value 1000" in rejected[1]
    assert "Traceback" not in capfd.readouterr().err


def test_serve_skips_folders_that_are_not_models(models, tmp_path, caplog):
    from automoe.serve.demo import DemoBackend

    supernet = tmp_path / "supernet-x"
    supernet.mkdir()
    (supernet / "supernet.safetensors").write_bytes(b"")
    (tmp_path / "README.md").write_text("# models\n")
    given = [str(models["dense-tiny"]), str(supernet), str(tmp_path / "README.md")]
    with caplog.at_level(logging.WARNING):
        be = DemoBackend(given, preload=False)
    assert be.model_choices() == ["dense-tiny"]
    assert "skipping " + str(supernet) + ": a supernet folder" in caplog.text and "automoe extract" in caplog.text
    with pytest.raises(ValueError, match="is a model or export folder"):
        DemoBackend([str(supernet)], preload=False)


def test_serve_help_says_how_the_default_is_chosen():
    from automoe.cli import build_parser

    parser = build_parser()
    serve = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog == "automoe serve")
    text = serve.format_help()
    assert "fastest AutoMoE model" in " ".join(text.split()) and "skipped with a note" in " ".join(text.split())


def test_compare_times_against_the_reference_dense_model_not_a_searched_one(models, tmp_path):
    """A searched (HAT-style) dense model listed first is labelled as such, and "vs dense" divides
    the reference dense model's time (the dense one with the most parameters)."""
    from automoe.config import SearchSpace
    from automoe.serve.demo import DemoBackend

    small = SearchSpace.preset("tiny").smallest().replace(vocab_size=1000, max_positions=24)
    hat = save_random_model(small, tmp_path / "a-hat-tiny", seed=2, tokenizer_file=DATA / "spm.model")
    be = DemoBackend({"a-hat-tiny": hat, "dense-tiny": models["dense-tiny"]}, engines=("torch",))
    rows, status = be.compare(SENTENCE, "torch", 2)
    assert [(r[0], r[1]) for r in rows] == [("a-hat-tiny", "HAT-style dense"), ("dense-tiny", "dense")]
    assert rows[1][4] == "1.00x" and rows[0][4] == f"{rows[1][3] / rows[0][3]:.2f}x" and "2 of 2 models" in status
