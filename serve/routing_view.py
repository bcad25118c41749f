"""The demo's routing view: which expert every token took in every layer, as coloured HTML tables
and as per-layer rows of expert widths and token counts (plain Python, no gradio)."""

from __future__ import annotations

import html
from collections import Counter

EXPERT_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]
DENSE_COLOUR = "#e5e7eb"
WIDTH_HEADERS = ["stack", "layer", "experts", "expert widths", "tokens per expert (this input)"]


def width_rows(routed, arch) -> list[list]:
    """One row per layer: stack, layer, experts, widths ('dense' for one expert), tokens per expert."""
    rows = []
    for stack, ffn, routes in (("encoder", arch.encoder_ffn, routed.encoder_routing),
                               ("decoder", arch.decoder_ffn, routed.decoder_routing)):
        for layer, widths in enumerate(ffn):
            if len(widths) == 1:
                rows.append([stack, layer, 1, f"dense ({widths[0]})", "dense"])
                continue
            counts = Counter(r[layer] for r in routes if layer < len(r))
            rows.append([stack, layer, len(widths), " · ".join(f"E{i}: {w}" for i, w in enumerate(widths)),
                         " · ".join(f"E{i}: {counts.get(i, 0)}" for i in range(len(widths)))])
    return rows


def _piece(p: str) -> str:
    return html.escape(p.replace("\u2581", "\u00b7") if p != "\u2581" else "\u00b7")


def _stack_table(title: str, pieces: list[str], routes: list[list[int]], ffn) -> str:
    head = "".join(f"<th class='tok'>{_piece(p)}</th>" for p in pieces)
    body = []
    for layer, widths in enumerate(ffn):
        dense = len(widths) == 1
        label = (f"L{layer} <span class='w'>dense {widths[0]}</span>" if dense
                 else f"L{layer} <span class='w'>{' '.join(str(w) for w in widths)}</span>")
        cells = []
        for t, p in enumerate(pieces):
            if t >= len(routes) or layer >= len(routes[t]):
                cells.append("<td class='cell' title='not fed back to the decoder'>–</td>")
            elif dense:
                cells.append(f"<td class='cell' style='background:{DENSE_COLOUR}' "
                             f"title='{_piece(p)}: dense FFN, width {widths[0]}'>·</td>")
            else:
                e = routes[t][layer]
                colour = EXPERT_COLOURS[e % len(EXPERT_COLOURS)]
                width = widths[e] if e < len(widths) else "?"
                cells.append(f"<td class='cell' style='background:{colour}' "
                             f"title='{_piece(p)}: layer {layer} expert {e} (width {width})'>{e}</td>")
        body.append(f"<tr><th class='layer'>{label}</th>{''.join(cells)}</tr>")
    return (f"<h4>{title}</h4><div class='scroll'><table class='routing'><tr><th></th>{head}</tr>"
            f"{''.join(body)}</table></div>")


def routing_html(routed, arch, model: str, kind: str) -> str:
    """Coloured-token tables: one row per layer, one column per token, cell = expert id; `kind`
    describes the model in the intro line (e.g. "AutoMoE (heterogeneous experts)")."""
    n_max = max(len(w) for w in tuple(arch.encoder_ffn) + tuple(arch.decoder_ffn))
    legend = " ".join(f"<span class='chip' style='background:{EXPERT_COLOURS[i % len(EXPERT_COLOURS)]}'>"
                      f"expert {i}</span>" for i in range(n_max) if n_max > 1)
    legend += f" <span class='chip' style='background:{DENSE_COLOUR}'>dense layer</span>"
    style = ("<style>.routing{border-collapse:collapse;font-size:13px}.routing th,.routing td{border:1px solid #fff;"
             "padding:2px 5px;text-align:center;color:#111}.routing th.tok{font-weight:normal;background:#f3f4f6}"
             ".routing th.layer{text-align:left;white-space:nowrap;background:#f9fafb}.routing .w{color:#6b7280;"
             "font-size:11px}.scroll{overflow-x:auto}.chip{padding:1px 6px;border-radius:4px;color:#111;"
             "font-size:12px}</style>")
    intro = (f"<p>Model <b>{html.escape(model)}</b> ({html.escape(kind)}). Each cell is the expert a token was "
             f"routed to in that layer (top-1); the layer label lists the expert widths.</p><p>{legend}</p>")
    encoder = _stack_table("Encoder (source tokens)", routed.source_pieces, routed.encoder_routing, arch.encoder_ffn)
    decoder = _stack_table("Decoder (target tokens, as fed back)", routed.target_pieces, routed.decoder_routing,
                           arch.decoder_ffn)
    return f"{style}<div class='routing-view'>{intro}{encoder}{decoder}</div>"
