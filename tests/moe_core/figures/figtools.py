"""Test helpers imported by the test_*.py files next to it: hand-made snapshots for the figure builders,
and helpers to read numbers back out of a figure.

Snapshots are crafted (not trained) so every expected value in the tests is known exactly.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from moe_core.figures.palette import TEMPLATE_UNUSED_LAYOUT
from moe_core.training.snapshot import LayerView, Snapshot

WHITE = pio.templates["plotly_white"].to_plotly_json()

PROBE_TEXT = "a<b & c\n> d\te"


def crafted_view(
    E: int, K: int, *, P: int = 8, G: int = 3, grid: tuple[int, int] | None = (6, 5), capacity: int | None = 5,
    expert_choice: bool = False, language_chars: int | None = None, seed: int = 0,
) -> LayerView:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(E), size=P).astype(np.float32)  # (P, E)
    if expert_choice:  # all E experts listed, some selected: combine > 0 when kept, dropped never
        index = np.tile(np.arange(E), (P, 1))
        selected = rng.random((P, E)) < 0.4
        combine = np.where(selected, probs, 0.0).astype(np.float32)
        dropped = np.zeros((P, E), dtype=bool)
    else:
        index = np.argsort(-probs, axis=1, kind="stable")[:, :K]
        combine = np.take_along_axis(probs, index, 1)
        combine = combine / combine.sum(1, keepdims=True)
        dropped = np.zeros((P, K), dtype=bool)
        if capacity is not None:
            dropped[1, 0] = True
            dropped[P - 1, K - 1] = True
            combine[dropped] = 0.0
    tokens = rng.integers(0, 12, size=E).astype(np.int64)
    tokens[0] = 9
    kept = tokens if capacity is None else np.minimum(tokens, capacity)
    co = rng.random((E, E)).astype(np.float32)
    np.fill_diagonal(co, 0.0)
    view = LayerView(
        tokens_per_expert=tokens, kept_per_expert=kept, capacity=capacity, probe_probs=probs,
        probe_expert_index=index, probe_combine=combine, probe_dropped=dropped,
        group_expert_counts=rng.integers(0, 20, size=(G, E)).astype(np.int64), co_activation=co,
        mutual_information=0.1234,
    )
    if grid is not None:
        Gy, Gx = grid
        logits = rng.normal(size=(Gy, Gx, E)) * 2.0
        gp = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        gp[0, 0] = 1.0 / E  # no preference: faintest cell
        if E > 1:
            gp[0, 1] = np.eye(E)[E - 1]  # certain: full colour, last expert
        view.grid_probs = gp.astype(np.float32)
        view.grid_top2 = np.argsort(-gp, axis=-1)[..., : min(2, E)]
    if language_chars is not None:
        view.probe_text_experts = rng.integers(0, E, size=language_chars)
        view.top_tokens = [[(" ", 9), ("\n", 4), ("<", 2)] if e == 0 else [("a", 3)] for e in range(E)]
    return view


def crafted_snapshot(
    E: int = 4, k: int = 2, *, task: str = "classification", capacity: int | None = 5, one_d: bool = False,
    n_layers: int = 1, router: str = "softmax_topk", n_points: int = 30, G: int = 3, P: int = 8,
) -> Snapshot:
    rng = np.random.default_rng(1)
    language = task == "language"
    Gy, Gx = (1, 7) if one_d else (6, 5)
    expert_choice = router == "expert_choice"
    K = E if router in ("expert_choice", "dense", "soft") else k
    layers = [crafted_view(E, K, P=P, G=G, grid=None if language else (Gy, Gx), capacity=capacity,
                           expert_choice=expert_choice, language_chars=len(PROBE_TEXT) if language else None,
                           seed=i) for i in range(n_layers)]
    snap = Snapshot(
        step=42, task=task, router=router, n_experts=E, top_k=k, batch_tokens=20, layers=layers, test_loss=0.5,
        test_quality=0.9, step_ms=12.5,
        parameters={"experts": 1000 * E, "shared": 0, "router": 10 * E, "total": 1010 * E, "active": 1000 * k + 10 * E,
                    "dense_equivalent": 1000 * k},
        flops={"router": 20.0 * E, "experts": 2000.0 * k, "shared": 0.0, "total": 2000.0 * k + 20 * E,
               "dense_equivalent": 2000.0 * k, "ratio_to_dense": (2000.0 * k + 20 * E) / (2000.0 * k)},
        group_names={"classification": [f"class {g}" for g in range(G)],
                     "regression": [f"regime {g}" for g in range(G)],
                     "language": ["arithmetic", "words", "code", "dates"][:G]}[task],
    )
    if language:
        snap.probe_text = PROBE_TEXT
        snap.probe_text_domains = rng.integers(0, G, size=len(PROBE_TEXT))
        return snap
    snap.grid_x = np.linspace(-1.2, 1.2, Gx, dtype=np.float32)
    snap.grid_y = np.zeros(1, dtype=np.float32) if one_d else np.linspace(-1.2, 1.2, Gy, dtype=np.float32)
    D = 1 if one_d else 2
    snap.points_x = rng.uniform(-1, 1, size=(n_points, D)).astype(np.float32)
    snap.probe_x = snap.points_x[:P]
    snap.probe_group = rng.integers(0, G, size=P)
    if task == "classification":
        snap.grid_prediction = rng.integers(0, G, size=(Gy, Gx))
        snap.points_y = rng.integers(0, G, size=n_points)
    else:
        snap.grid_prediction = rng.normal(size=(Gy, Gx)).astype(np.float32)
        snap.points_y = rng.normal(size=n_points).astype(np.float32)
    return snap


# -- reading figures ------------------------------------------------------------------------------------------
def arr(value) -> np.ndarray:
    """A figure property as a numpy array (also decodes plotly's {"dtype", "bdata", "shape"} form)."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return out.reshape([int(s) for s in str(value["shape"]).split(",")]) if "shape" in value else out
    return np.asarray(value)


def traces(fig: go.Figure, type_: str | None = None, name: str | None = None) -> list:
    return [t for t in fig.data if (type_ is None or t.type == type_) and (name is None or t.name == name)]


def one(fig: go.Figure, type_: str | None = None, name: str | None = None):
    found = traces(fig, type_, name)
    assert len(found) == 1, f"expected one {type_} trace named {name!r}, found {[t.name for t in found]}"
    return found[0]


def in_group(fig: go.Figure, group: str) -> list:
    """Traces of one legend group (image traces have no legendgroup)."""
    return [t for t in fig.data if getattr(t, "legendgroup", None) == group]


def assert_valid(fig: go.Figure) -> None:
    """Re-build the figure WITH plotly.py's validation (the builders skip it) and serialize it.

    The template (plotly's own "plotly_white", the same in every figure) is left out to keep this fast;
    test_palette validates it once.
    """
    spec = fig.to_plotly_json()
    spec["layout"] = {k: v for k, v in spec["layout"].items() if k != "template"}
    go.Figure(spec)
    fig.to_json()
    # the trimmed template (palette.TEMPLATE_TRACES) holds plotly_white's defaults for every trace type drawn
    template = fig.layout.template.to_plotly_json() if fig.layout.template else {}
    for trace in spec["data"]:
        if trace["type"] in WHITE["data"]:
            assert template["data"][trace["type"]] == WHITE["data"][trace["type"]], trace["type"]
    assert not set(spec["layout"]) & set(TEMPLATE_UNUSED_LAYOUT), "a subplot kind the trimmed template lacks"


def tick_colors(ticktext) -> list[str]:
    """The colour of the ■ in each HTML tick label."""
    return [re.search(r"color:(#[0-9A-Fa-f]{6})", t).group(1) for t in ticktext]


def all_text(fig: go.Figure) -> str:
    """Title, subtitle, annotations and trace names, to search for words."""
    layout = fig.layout
    parts = [layout.title.text or "", layout.title.subtitle.text or ""]
    parts += [a.text or "" for a in layout.annotations]
    parts += [t.name or "" for t in fig.data]
    return " | ".join(parts)


# -- will it fit? (estimates: Plotly never wraps text, it cuts it at the figure's edge or lets it overlap) ------
HALF_WIDTH_PX = 620  # one of two charts per row at a 1400 px window
CHAR_EM = 0.55  # average character width in em of the fonts Plotly falls back to (generous for lowercase)


def text_px(text: str, size: float) -> float:
    """Estimated width in px of a Plotly text at font size `size`."""
    from moe_core.figures.palette import visible_length

    return CHAR_EM * size * visible_length(text)


def plot_px(fig: go.Figure, width: float = HALF_WIDTH_PX) -> tuple[float, float]:
    """(left, right) in px of the plot area of a `width`-px figure: margins, and a vertical legend on the right."""
    layout = fig.layout
    left, right = layout.margin.l or 0, width - (layout.margin.r or 0)
    if layout.showlegend is not False and layout.legend.orientation != "h":
        names = [t.name or "" for t in fig.data if t.showlegend is not False and t.name]
        if names:
            right -= 40 + max(text_px(n, layout.legend.font.size or 14) for n in names)
    return left, right


def panel_title_spans(fig: go.Figure, width: float = HALF_WIDTH_PX) -> list[tuple[float, float, str]]:
    """(left px, right px, text) of each panel title (a paper-referenced annotation centred above a panel)."""
    left, right = plot_px(fig, width)
    spans = []
    for a in fig.layout.annotations:
        if a.xref == "paper" and a.xanchor == "center" and a.yanchor == "bottom":
            centre = left + a.x * (right - left)
            half = text_px(a.text, a.font.size or 14) / 2
            spans.append((centre - half, centre + half, a.text))
    return spans


def assert_panel_titles_fit(fig: go.Figure, width: float = HALF_WIDTH_PX) -> None:
    spans = sorted(panel_title_spans(fig, width))
    assert spans, "no panel titles"
    assert spans[0][0] >= 0 and spans[-1][1] <= width, f"a panel title leaves a {width} px figure: {spans}"
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end + 8 <= start, f"panel titles {a!r} and {b!r} overlap at {width} px"
