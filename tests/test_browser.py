"""The feature browser (hsae_utils/features/browser.py): its embedded data round-trips, and in a
real headless Chromium the page loads without errors, lists every latent, opens a latent from
the search box, shows its contexts' tokens as given, and shows HTML/JavaScript in a context as
text (no script runs, the page stays intact). The browser tests need Chromium, its driver and
Selenium (scripts/install_test_deps.sh installs them) and are skipped without them."""

from __future__ import annotations

import html
import math
import os
import random
import shutil

import pytest

from hsae_utils.features.browser import (
    browser_iframe_html,
    read_browser_data,
    render_browser,
    write_browser,
)

N_LATENTS, HOSTILE = 30, 7
# What a code corpus puts in a context: each must show as these characters, never act as markup.
HOSTILE_TOKENS = [
    "</script>",
    "<script>alert(1)</script>",
    "</div>",
    "<!--",
    " &amp;",
    "\u2028",
    "<b>bold</b>",
    "__DATA__",
    '"quoted"',
    "\n",
]
WORDS = [
    " the",
    " cat",
    " sat",
    " on",
    " mat",
    ".",
    " Paris",
    " is",
    " capital",
    ",",
    " def",
    " return",
    "(",
    ")",
    " x",
    " =",
    " 1",
    " and",
]


def fake_data(seed: int = 0) -> dict:
    """Per-latent statistics shaped like the features stage's, with a dead latent (3) and one
    whose first context is hostile markup (HOSTILE)."""
    rng = random.Random(seed)
    latents = []
    for i in range(N_LATENTS):
        dead = i == 3
        max_act = 0.0 if dead else rng.uniform(1, 20)
        density = 0.0 if dead else 10 ** rng.uniform(-4, -1)
        contexts = []
        for j in range(0 if dead else 4):
            tokens = [rng.choice(WORDS) for _ in range(8)]
            acts = [rng.choice([0.0, rng.uniform(0, max_act)]) for _ in tokens]
            contexts.append(
                {
                    "group": "top" if j < 2 else "q 50-75 %",
                    "tokens": tokens,
                    "acts": acts,
                    "center": 3,
                    "act": acts[3],
                    "row": rng.randrange(99),
                    "seq": rng.randrange(9),
                    "pos": 3,
                }
            )
        if i == HOSTILE:
            contexts[0]["tokens"] = list(HOSTILE_TOKENS)
            contexts[0]["acts"] = [float(k) for k in range(len(HOSTILE_TOKENS))]
            contexts[0]["center"] = 1
        latents.append(
            {
                "id": i,
                "density": density,
                "log10_density": None if dead else math.log10(density),
                "max_act": max_act,
                "mean_act": max_act / 3,
                "quantiles": {"0.5": max_act / 4, "0.9": max_act / 2, "0.99": max_act * 0.9},
                "hist": {
                    "edges": [max_act * k / 10 for k in range(11)],
                    "counts": [rng.randrange(100) for _ in range(10)],
                },
                "top_logits": [[rng.choice(WORDS), rng.uniform(0.1, 2)] for _ in range(5)],
                "bottom_logits": [["<script>alert(2)</script>", -1.5]]
                + [[rng.choice(WORDS), -rng.uniform(0.1, 2)] for _ in range(4)],
                "neighbours": [
                    {
                        "id": (i + 1) % N_LATENTS,
                        "cos": rng.uniform(0, 1),
                        "cofire": rng.uniform(0, 1),
                    }
                ],
                "contexts": contexts,
            }
        )
    sae = {
        "name": "test <sae> __DATA__ __JS__",
        "arch": "hierarchical",
        "d_in": 16,
        "d_sae": N_LATENTS,
        "model": "tiny",
        "hook": "blocks.0.hook_resid_post",
        "n_tokens": 1000,
        "logit_note": "W_dec @ W_U",
    }
    return {"sae": sae, "latents": latents}


def _close(a, b) -> bool:
    """Equal up to the 3 significant digits the file keeps (NaN/None as None)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=5e-3, abs_tol=1e-12)
    return a == b


# ---- pure Python --------------------------------------------------------------------------------


def test_embedded_json_round_trips(tmp_path):
    data = fake_data()
    path = write_browser(data, tmp_path / "b.html")
    assert _close(data, read_browser_data(path))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a new file (not the temporary's 0600)
    text = path.read_text(encoding="utf-8")
    # The hostile strings are in the file only as JSON escapes: two </script> (data, script).
    assert text.lower().count("</script") == 2 and "alert(1)" in text
    assert "<script>alert" not in text and "\u2028" not in text
    # show_browser's iframe holds the page, escaped into one attribute.
    frame = browser_iframe_html(path)
    srcdoc = frame[frame.index('srcdoc="') + 8 : frame.index('" sandbox=')]
    assert '"' not in srcdoc and "<" not in srcdoc and html.unescape(srcdoc) == text
    # An odd float and a numpy scalar are kept to 3 significant digits.
    np = pytest.importorskip("numpy")
    data["latents"][0]["max_act"] = np.float32(1234.5678)
    assert read_browser_data(render_browser(data))["latents"][0]["max_act"] == 1230


def test_bad_input_is_refused_before_writing(tmp_path):
    data = fake_data()
    data["latents"][1]["contexts"][0]["acts"].pop()
    with pytest.raises(ValueError, match="latent 1, context 0: 8 tokens but 7 acts"):
        write_browser(data, tmp_path / "b.html")
    with pytest.raises(ValueError, match="ending in .html"):
        write_browser(fake_data(), tmp_path / "b.json")
    data = fake_data()
    data["latents"][2]["id"] = 1
    with pytest.raises(ValueError, match="latent id 1 appears twice"):
        write_browser(data, tmp_path / "b.html")
    assert not list(tmp_path.iterdir())


# ---- in Chromium --------------------------------------------------------------------------------

INSTALL = (
    "needs Chromium, chromedriver and Selenium: run scripts/install_test_deps.sh (as root "
    "it installs Debian's chromium and chromium-driver; selenium is in "
    "requirements-test.txt)"
)
# Before any of the page's scripts: record errors and alerts instead of showing them.
RECORDER = (
    "window.__errors = []; window.__alerts = [];"
    "window.addEventListener('error', (e) => window.__errors.push(String(e.message)));"
    "window.alert = (m) => window.__alerts.push(String(m));"
)


@pytest.fixture(scope="module")
def driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(INSTALL)
    binary = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    chromedriver = shutil.which("chromedriver")
    if not binary or not chromedriver:
        pytest.skip(INSTALL)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(chromedriver), options=options)
    drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    yield drv
    drv.quit()


def _load(drv, url):
    drv.get(url)
    drv.switch_to.default_content()


def _no_errors(drv):
    severe = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    assert drv.execute_script("return window.__errors") == [] and not severe, severe
    assert drv.execute_script("return window.__alerts") == []


def _context_tokens(drv):
    return drv.execute_script(
        "return [...document.querySelector('#contexts .ctx .text').children]"
        ".map((s) => s.textContent)"
    )


def _shown(tok: str) -> str:  # the page's visible marks for line breaks and tabs
    return tok.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def test_browser_in_chromium(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    data = fake_data()
    path = write_browser(data, tmp_path / "browser.html")
    _load(driver, path.as_uri())
    _no_errors(driver)
    # The list: every latent once; the SAE's name as text.
    ids = [
        int(r.get_attribute("data-id"))
        for r in driver.find_elements(By.CSS_SELECTOR, "#list-view tbody tr")
    ]
    assert sorted(ids) == list(range(N_LATENTS))
    assert driver.find_element(By.CSS_SELECTOR, "header h1").text.endswith(
        "test <sae> __DATA__ __JS__"
    )
    # Sorting by max activation (descending first): the largest first, the dead latent last.
    driver.find_element(By.CSS_SELECTOR, "th[data-key='max_act']").click()
    order = [
        int(r.get_attribute("data-id"))
        for r in driver.find_elements(By.CSS_SELECTOR, "#list-view tbody tr")
    ]
    by_max = sorted(data["latents"], key=lambda lat: -lat["max_act"])
    assert order[0] == by_max[0]["id"] and order[-1] == 3
    # Searching an id opens its page; its first context's tokens are the data's.
    search = driver.find_element(By.ID, "search")
    search.send_keys("17", Keys.ENTER)
    assert driver.find_element(By.ID, "latent-title").text == "Latent 17"
    assert driver.execute_script("return location.hash") == "#latent-17"
    assert _context_tokens(driver) == [
        _shown(t) for t in data["latents"][17]["contexts"][0]["tokens"]
    ]
    # A neighbour is a link to its page.
    driver.find_element(By.CSS_SELECTOR, "#neighbours a[data-latent='18']").click()
    assert driver.find_element(By.ID, "latent-title").text == "Latent 18"
    # Hostile markup in a context and a logit token: shown as text, nothing runs, page intact.
    _load(driver, path.as_uri() + f"#latent-{HOSTILE}")
    assert driver.find_element(By.ID, "latent-title").text == f"Latent {HOSTILE}"
    assert _context_tokens(driver) == [_shown(t) for t in HOSTILE_TOKENS]
    hover = driver.find_elements(By.CSS_SELECTOR, "#contexts .ctx .tok")[1].get_attribute("title")
    assert hover == '"<script>alert(1)</script>": 1'  # the token and its activation
    assert len(driver.find_elements(By.CSS_SELECTOR, "#contexts .ctx")) == 4
    assert driver.execute_script("return document.scripts.length") == 2
    assert driver.execute_script("return document.querySelectorAll('#contexts b').length") == 0
    assert "<script>alert(2)</script>" in driver.find_element(By.CLASS_NAME, "logits").text
    _no_errors(driver)
    # The dead latent's page, and show_browser's iframe (srcdoc: no file server needed).
    _load(driver, path.as_uri() + "#latent-3")
    assert driver.find_element(By.ID, "latent-title").text == "Latent 3 (dead)"
    frame_page = tmp_path / "notebook.html"
    frame_page.write_text(browser_iframe_html(path, height=500), encoding="utf-8")
    _load(driver, frame_page.as_uri())
    driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#list-view tbody tr")) == N_LATENTS
    driver.find_element(By.CSS_SELECTOR, "a[data-latent='5']").click()
    assert driver.find_element(By.ID, "latent-title").text == "Latent 5"
    driver.switch_to.default_content()  # the log holds the frame's errors too
    _no_errors(driver)
