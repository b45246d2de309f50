"""The feature browser: one self-contained HTML file per SAE, in sae-dashboard's feature-centric
layout (a sortable, searchable list of every latent; a page per latent at `#latent-N` with its
contexts, activation histogram, logit effects and neighbours).

No server and no network: the styles, the script (browser.css, browser.js beside this file) and
the data are inline, so the file works from `file://` and inline in Jupyter or Colab
(`show_browser`). The data is embedded as JSON in a `<script type="application/json">` block with
`<`, `>`, `&` and U+2028/2029 escaped, and the script renders it with text nodes only: a context
holding `</script>` or `<div>` (the corpus has HTML and JavaScript source) shows as text.

The data (`write_browser`'s `data`, built by the per-latent statistics) is encoded in columns with
the context tokens as indices into one vocabulary and floats rounded to 3 significant digits,
which keeps 576 latents x 20 contexts of 16 tokens to a few MB (`read_browser_data` decodes it
back to the same dict).
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from hsae_utils.io import atomic_path

FORMAT = "hsae-browser/1"
SIG_DIGITS = 3
_HERE = Path(__file__).resolve().parent
_DATA_OPEN = '<script type="application/json" id="hsae-data">'
_DATA_CLOSE = "</script>"
# The escapes that keep JSON inert inside <script>: no `</script>` or `<!--` can form, and the
# two line separators that older JavaScript parsers reject in strings are written as escapes.
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SAE_KEYS = ("name", "arch", "d_in", "d_sae", "model", "hook", "n_tokens", "logit_note")
_CONTEXT_NUMBERS = ("center", "act", "row", "seq", "pos")


def write_browser(data: dict, path: str | Path) -> Path:
    """Write the feature browser of one SAE to `path` (an .html file), atomically; returns it.

    `data`: {"sae": {...}, "latents": [{"id", "density", "log10_density", "max_act", "mean_act",
    "quantiles", "hist", "top_logits", "bottom_logits", "neighbours", "contexts"}, ...]} as the
    per-latent statistics build it; only "id" is required of a latent (a missing field shows as
    "-"). Numbers may be Python or numpy scalars."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(
            f"write_browser writes one HTML file: give a path ending in .html, not {path}."
        )
    page = render_browser(data)
    body = page.encode("utf-8")
    with atomic_path(path, nbytes=len(body)) as tmp:
        tmp.write_bytes(body)
        # A page to open, serve or share: readable as a new file would be (the temporary is 0600).
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
    return path


def render_browser(data: dict) -> str:
    """The browser's HTML text for `data` (see write_browser)."""
    encoded = encode_browser_data(data)
    blob = json.dumps(encoded, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _JSON_ESCAPES.items():
        blob = blob.replace(char, escape)
    script = _asset("browser.js")
    if "</script" in script.lower():  # the inline script would end early
        raise AssertionError("browser.js must not contain '</script'.")
    title = html.escape(f"Feature browser: {encoded['sae'].get('name') or 'SAE'}")
    # The template is cut at its placeholders first, and the texts from the data (title, data)
    # go in last, so a placeholder's name inside them is never replaced.
    head, tail = _asset("browser.html").split("__DATA__")
    head = head.replace("__CSS__", _asset("browser.css")).replace("__TITLE__", title)
    return head + blob + tail.replace("__JS__", script)


def read_browser_data(path_or_html: str | Path) -> dict:
    """The data embedded in a browser file (or its HTML text), decoded to write_browser's dict
    (floats rounded to 3 significant digits)."""
    text = str(path_or_html)
    if _DATA_OPEN not in text:
        text = Path(path_or_html).read_text(encoding="utf-8")
    start = text.index(_DATA_OPEN) + len(_DATA_OPEN)
    return decode_browser_data(json.loads(text[start : text.index(_DATA_CLOSE, start)]))


def browser_iframe_html(path: str | Path, height: int = 600) -> str:
    """An <iframe> holding the browser file in `srcdoc` (escaped): shows it in a notebook without
    a file server, so in Colab too. Sandboxed: its scripts run, but cannot reach the notebook."""
    page = Path(path).read_text(encoding="utf-8")
    return (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
        f'style="width:100%;height:{int(height)}px;border:1px solid #ccc"></iframe>'
    )


def show_browser(path: str | Path, height: int = 600) -> None:
    """Display the browser file `path` inline in Jupyter or Colab (the whole file is embedded in
    the notebook's output, so it adds the file's size to a saved notebook)."""
    from IPython.display import HTML, display

    display(HTML(browser_iframe_html(path, height)))


# ---- the compact encoding ---------------------------------------------------------------------


def _round(x: Any) -> float | int | None:
    """3 significant digits; integral values as ints (`0`, not `0.0`); NaN and inf as null."""
    if x is None or x == 0:  # most of a context's activations are 0: the quick way out
        return None if x is None else 0
    x = float(x)
    if not math.isfinite(x):
        return None
    y = float(f"{x:.{SIG_DIGITS}g}")
    return int(y) if y.is_integer() and abs(y) < 1e15 else y


def _text(s: Any) -> str:
    """A token as valid UTF-8 text (a lone surrogate, which cannot be written, becomes U+FFFD)."""
    return str(s).encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class _Interner:
    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, s: Any) -> int:
        s = _text(s)
        if s not in self._index:
            self._index[s] = len(self.items)
            self.items.append(s)
        return self._index[s]


def _pairs(pairs: Any, where: str) -> list:
    try:
        return [[str(tok), float(val)] for tok, val in pairs or []]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be a list of [token, value] pairs ({err}).") from None


def encode_browser_data(data: dict) -> dict:
    """write_browser's dict in columns: per-latent fields as lists, strings interned."""
    if not isinstance(data, dict) or not isinstance(data.get("latents"), list):
        raise ValueError(
            "write_browser needs a dict with 'sae' (a dict) and 'latents' (a list "
            "of per-latent dicts)."
        )
    sae = data.get("sae") or {}
    if not isinstance(sae, dict):
        raise ValueError(
            "data['sae'] must be a dict (name, arch, d_in, d_sae, model, hook, "
            "n_tokens, logit_note)."
        )
    latents = data["latents"]
    vocab, groups = _Interner(), _Interner()
    qkeys = sorted({str(k) for lat in latents for k in (lat.get("quantiles") or {})}, key=float)
    cols: dict[str, list] = {
        k: []
        for k in (
            "id",
            "density",
            "log10_density",
            "max_act",
            "mean_act",
            "quantiles",
            "hist",
            "top_logits",
            "bottom_logits",
            "neighbours",
            "contexts",
        )
    }
    seen: set[int] = set()
    for i, lat in enumerate(latents):
        if not isinstance(lat, dict) or "id" not in lat:
            raise ValueError(f"latents[{i}] must be a dict with at least an 'id'.")
        lid = int(lat["id"])
        if lid in seen:
            raise ValueError(f"latent id {lid} appears twice in data['latents'].")
        seen.add(lid)
        where = f"latent {lid}"
        cols["id"].append(lid)
        for key in ("density", "log10_density", "max_act", "mean_act"):
            cols[key].append(_round(lat.get(key)))
        q = {str(k): v for k, v in (lat.get("quantiles") or {}).items()}
        cols["quantiles"].append([_round(q.get(k)) for k in qkeys])
        hist = lat.get("hist") or {}
        edges, counts = list(hist.get("edges", [])), [int(c) for c in hist.get("counts", [])]
        if counts and len(edges) != len(counts) + 1:
            raise ValueError(
                f"{where}: hist needs len(edges) == len(counts) + 1, got "
                f"{len(edges)} edges and {len(counts)} counts."
            )
        cols["hist"].append([[_round(e) for e in edges], counts])
        for key in ("top_logits", "bottom_logits"):
            pairs = _pairs(lat.get(key), f"{where}: {key}")
            cols[key].append([[vocab(t) for t, _ in pairs], [_round(v) for _, v in pairs]])
        nbrs = lat.get("neighbours") or []
        cols["neighbours"].append(
            [
                [int(n["id"]) for n in nbrs],
                [_round(n.get("cos")) for n in nbrs],
                [_round(n.get("cofire")) for n in nbrs],
            ]
        )
        cols["contexts"].append(
            [
                _encode_context(c, vocab, groups, f"{where}, context {j}")
                for j, c in enumerate(lat.get("contexts") or [])
            ]
        )
    return {
        "format": FORMAT,
        "sae": {k: sae[k] for k in _SAE_KEYS if k in sae}
        | {k: v for k, v in sae.items() if k not in _SAE_KEYS and _jsonable(v)},
        "vocab": vocab.items,
        "groups": groups.items,
        "quantile_keys": qkeys,
        **cols,
    }


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _encode_context(ctx: dict, vocab: _Interner, groups: _Interner, where: str) -> list:
    tokens, acts = list(ctx.get("tokens") or []), list(ctx.get("acts") or [])
    if len(tokens) != len(acts):
        raise ValueError(
            f"{where}: {len(tokens)} tokens but {len(acts)} acts; give one activation per token."
        )
    center = ctx.get("center")
    if center is not None and not 0 <= int(center) < max(len(tokens), 1):
        raise ValueError(f"{where}: center {center} is outside its {len(tokens)} tokens.")
    numbers = [
        None if ctx.get(k) is None else (_round(ctx[k]) if k == "act" else int(ctx[k]))
        for k in _CONTEXT_NUMBERS
    ]
    return [
        groups(ctx.get("group", "")),
        *numbers,
        [vocab(t) for t in tokens],
        [_round(a) for a in acts],
    ]


def decode_browser_data(enc: dict) -> dict:
    """encode_browser_data's inverse (the JavaScript in browser.js decodes the same way)."""
    if enc.get("format") != FORMAT:
        raise ValueError(
            f"not a feature browser's data (format {enc.get('format')!r}, expected {FORMAT!r})."
        )
    vocab, groups, qkeys = enc["vocab"], enc["groups"], enc["quantile_keys"]
    latents = []
    for i, lid in enumerate(enc["id"]):
        edges, counts = enc["hist"][i]
        nb_ids, nb_cos, nb_cofire = enc["neighbours"][i]
        latents.append(
            {
                "id": lid,
                **{k: enc[k][i] for k in ("density", "log10_density", "max_act", "mean_act")},
                "quantiles": {k: v for k, v in zip(qkeys, enc["quantiles"][i]) if v is not None},
                "hist": {"edges": edges, "counts": counts},
                **{
                    k: [[vocab[t], v] for t, v in zip(*enc[k][i])]
                    for k in ("top_logits", "bottom_logits")
                },
                "neighbours": [
                    {"id": n, "cos": c, "cofire": f} for n, c, f in zip(nb_ids, nb_cos, nb_cofire)
                ],
                "contexts": [
                    {
                        "group": groups[g],
                        "tokens": [vocab[t] for t in toks],
                        "acts": acts,
                        **dict(zip(_CONTEXT_NUMBERS, nums)),
                    }
                    for g, *nums, toks, acts in enc["contexts"][i]
                ],
            }
        )
    return {"sae": enc["sae"], "latents": latents}


def _asset(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")
