"""Gradio demo: translate English -> German, compare models' speed, and look at MoE routing.

    from automoe.serve.app import launch
    launch({"automoe": "models/automoe-bible", "dense": "models/dense-bible"}, data_dir="data/bible-en-de")

Three tabs, each also a named API endpoint for `gradio_client`:
  Translate (`/translate`)  model + engine + beam (+ lexical shortlist) -> German text, measured ms,
                            a status line
  Compare   (`/compare`)    the same input through every loaded model -> a table of outputs and ms
  Routing   (`/routing`)    which expert every source and target token took in every layer, the
                            per-layer expert widths, and the raw routing as JSON

The logic lives in `automoe.serve.demo.DemoBackend` (plain Python, no gradio) so it can be tested
and reused; the Gradio layer in `build_app` only wires widgets to it. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from .demo import COMPARE_HEADERS, DemoBackend, discover_models, load_examples, model_kinds
from .routing_view import WIDTH_HEADERS

logger = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 0  # the app has no file input: Gradio's upload endpoint refuses every non-empty file


def _gradio():
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError("the demo needs gradio: pip install 'automoe[demo]'") from e
    return gr


def quiet_rejections(gr, component, label: str) -> None:
    """Make a Gradio input refuse a bad value (a Dropdown value not among its choices, a Slider
    value out of range or not a number) with its message and one log line: Gradio's own refusal
    prints a full traceback to the server log for every such request."""
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception as e:  # noqa: BLE001  whatever the component raises, the request is refused
            message = " ".join(str(getattr(e, "message", None) or e).split()) or type(e).__name__
            logger.info("rejected %s value %.80r: %s", label, payload, message)
            raise gr.Error(message, print_exception=False) from None

    component.preprocess = checked


def build_app(models, default: str | None = None, *, data_dir: str | Path | None = None,
              engines: tuple[str, ...] | None = None, threads: int | None = 1, concurrency_limit: int = 2,
              max_queue: int = 64, max_chars: int = 1000, preload: bool = True,
              backend: DemoBackend | None = None):
    """The Gradio Blocks app (queued: `concurrency_limit` requests at a time, `max_queue` waiting).

    `models`: {name: folder or Hub id} or a list of them; `default`: the model selected at start
    (default: `default_model`); `data_dir`: a dataset folder whose test split gives the examples.
    Every input refuses a bad value with one log line (`quiet_rejections`).
    """
    gr = _gradio()
    be = backend or DemoBackend(models, default, engines=engines, threads=threads, max_chars=max_chars,
                                preload=preload)
    examples = [[s] for s in load_examples(data_dir)]
    examples_label = "Examples (test set)" if data_dir else "Examples"
    names = be.model_choices()
    moe = [n for n in names if not be.arch(n).is_dense] if preload else names
    routing_default = be.default if be.default in moe else (moe[0] if moe else be.default)
    engine0 = be.engines[0]
    kinds = model_kinds({n: be.arch(n) for n in names}) if preload else {}
    summary = " · ".join(f"`{n}` ({kinds[n]})" for n in names) if preload else ", ".join(names)

    with gr.Blocks(title="automoe: fast sparse MoE translation") as demo:
        gr.Markdown("# automoe English → German\nSparse Mixture-of-Experts translation models found by "
                    f"architecture search, running on CPU. Models: {summary}.")
        with gr.Tab("Translate", id="translate"):
            with gr.Row():
                model = gr.Dropdown(names, value=be.default, label="Model", elem_id="model")
                engine = gr.Dropdown(list(be.engines), value=engine0, label="Engine", elem_id="engine")
                beam = gr.Slider(1, 8, value=be.default_beam, step=1, label="Beam size", elem_id="beam")
                shortlist = gr.Checkbox(False, label="Lexical shortlist", elem_id="shortlist",
                                        info="decode over the target pieces the source makes likely (faster; "
                                             "needs the model's shortlist.safetensors)")
            with gr.Row():
                source = gr.Textbox(label="English", lines=4, placeholder="Type an English sentence (one per line)",
                                    max_length=max_chars + 1, elem_id="en-input")
                target = gr.Textbox(label="German", lines=4, interactive=False, elem_id="de-output")
            with gr.Row():
                button = gr.Button("Translate", variant="primary", elem_id="translate-btn")
                ms = gr.Number(label="Measured time (ms)", interactive=False, elem_id="ms")
            status = gr.Markdown(elem_id="status")
            gr.Examples(examples, inputs=[source], label=examples_label)
            inputs = [source, model, engine, beam, shortlist]
            button.click(be.translate, inputs, [target, ms, status], api_name="translate")
            source.submit(be.translate, inputs, [target, ms, status],
                          api_visibility="private")

        with gr.Tab("Compare", id="compare"):
            gr.Markdown("The same input through every loaded model, one after another, with the measured time.")
            with gr.Row():
                c_source = gr.Textbox(label="English", lines=3, max_length=max_chars + 1, elem_id="compare-input",
                                      scale=3)
                with gr.Column(scale=1):
                    c_engine = gr.Dropdown(list(be.engines), value=engine0, label="Engine", elem_id="compare-engine")
                    c_beam = gr.Slider(1, 8, value=be.default_beam, step=1, label="Beam size")
            c_button = gr.Button("Compare models", variant="primary", elem_id="compare-btn")
            c_table = gr.Dataframe(headers=COMPARE_HEADERS, datatype=["str", "str", "str", "number", "str", "str"],
                                   interactive=False, wrap=True, label="Outputs and measured time",
                                   elem_id="compare-table")
            c_status = gr.Markdown()
            gr.Examples(examples, inputs=[c_source], label=examples_label)
            c_button.click(be.compare, [c_source, c_engine, c_beam], [c_table, c_status], api_name="compare")

        with gr.Tab("Routing", id="routing"):
            gr.Markdown("Which expert each source and target token took in each layer of an MoE model "
                        "(read from the PyTorch model), and the experts' FFN widths.")
            with gr.Row():
                r_source = gr.Textbox(label="English (one sentence)", lines=2, max_length=max_chars + 1,
                                      elem_id="routing-input", scale=3)
                with gr.Column(scale=1):
                    r_model = gr.Dropdown(names, value=routing_default, label="Model")
                    r_beam = gr.Slider(1, 8, value=be.default_beam, step=1, label="Beam size")
            r_button = gr.Button("Show routing", variant="primary", elem_id="routing-btn")
            r_target = gr.Textbox(label="German", interactive=False)
            r_html = gr.HTML(elem_id="routing-view")
            r_widths = gr.Dataframe(headers=WIDTH_HEADERS, datatype=["str", "number", "number", "str", "str"],
                                    interactive=False, label="Expert widths per layer")
            with gr.Accordion("Raw routing (JSON)", open=False):
                r_json = gr.JSON()
            gr.Examples(examples, inputs=[r_source], label=examples_label)
            r_button.click(be.routing, [r_source, r_model, r_beam], [r_target, r_html, r_widths, r_json],
                           api_name="routing")

    for component, label in ((model, "model"), (engine, "engine"), (beam, "beam"), (source, "English"),
                             (c_source, "English"), (c_engine, "engine"), (c_beam, "beam"), (r_source, "English"),
                             (r_model, "model"), (r_beam, "beam")):
        quiet_rejections(gr, component, label)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)
    demo.backend = be
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, for a demo launched in the background (tests, screenshots)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(models=None, host: str = "127.0.0.1", port: int = 7860, *, default: str | None = None,
           data_dir: str | Path | None = None, engines: tuple[str, ...] | None = None, threads: int | None = 1,
           concurrency_limit: int = 2, prevent_thread_lock: bool = False, quiet: bool = False):
    """Build the app and serve it on host:port (127.0.0.1 unless told otherwise); returns the app.

    `models` defaults to every model folder under ./models (folders given that are not model folders,
    such as a supernet, are skipped with a note). The app has no file input, so Gradio's upload
    endpoint refuses every file (`max_file_size=0`). With `prevent_thread_lock=True` the server runs
    in a background thread (call `.close()` on the returned app to stop it).
    """
    if models is None:
        models = discover_models()
        if not models:
            raise ValueError("no models given and none found under ./models: pass model folders or Hub ids")
    demo = build_app(models, default, data_dir=data_dir, engines=engines, threads=threads,
                     concurrency_limit=concurrency_limit)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                share=False, inbrowser=False, show_error=True, max_file_size=MAX_UPLOAD_BYTES)
    return demo
