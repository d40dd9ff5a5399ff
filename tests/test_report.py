"""`stepsift report`: the page opened in a real headless Chromium, on the score file of a real
`stepsift score` run and on a score file with every optional column (real Parquet).

The browser checks read the DOM Chromium rendered (`--dump-dom`, after the test's own probe
script has recorded each image's decoded width) and a screenshot, kept in
`test-artifacts/` at the repository root. Without a chromium binary the browser tests skip,
except under CI (CI=true), where they fail.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli
from PIL import Image

from stepsift.bench.generate import BenchmarkPaths, write_benchmark
from stepsift.report.page import SECTIONS
from stepsift.select.harmful import Policy, harmful_flags
from stepsift.select.reliability import calibrated_harmful, split_half_reliability
from stepsift.select.score_data import read_score_data

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SECTION_IDS = [sid for sid, _ in SECTIONS]
HOSTILE_TEXT = "</pre><script>document.title='pwned'</script><img src=x onerror=alert(1)>"
HOSTILE_GROUP = "<b>bold</b> $\\frac{"
EVIL_ID = 'evil"><img src=x>'
BROKEN_ID = "broken-image"


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchmarkPaths:
    return write_benchmark(tmp_path_factory.mktemp("bench"), n_pool=24, n_anchors=6, n_test=2)


@pytest.fixture(scope="module")
def real_scores(bench: BenchmarkPaths) -> Path:
    """The pool scored by the real `stepsift score` with the built-in proxy, briefly warmed up
    (a few seconds)."""
    out = bench.root / "scores.parquet"
    run = run_cli(
        "score", bench.pool, "--anchors", bench.anchors, "--out", out,
        "--warmup-min-samples", "16", "--warmup-min-steps", "30", "--optimizer", "sgd",
        "--batch-size", "8", "--quiet",
    )  # fmt: skip
    assert run.rc == 0, run.err
    return out


@dataclass
class Synthetic:
    pool: Path
    scores: Path
    utility: np.ndarray
    fold_utility: np.ndarray
    fold_sizes: list[int]
    groups: list[str]


def llava(rid: str, image: str, question: str, answer: str) -> dict:
    return {
        "id": rid,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


@pytest.fixture(scope="module")
def synthetic(bench: BenchmarkPaths) -> Synthetic:
    """The benchmark pool plus a record with hostile text and one with a broken image, and a
    score file for it with every optional column (fold and group utilities, sketches)."""
    (bench.images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    lines = bench.pool.read_text().splitlines()
    lines.append(json.dumps(llava(EVIL_ID, "images/pool-000000.png", HOSTILE_TEXT, HOSTILE_TEXT)))
    lines.append(json.dumps(llava(BROKEN_ID, "images/broken.png", "What digit?", "Answer: 3")))
    pool = bench.root / "pool-hostile.jsonl"
    pool.write_text("\n".join(lines) + "\n")
    ids = [json.loads(line)["id"] for line in lines]
    n = len(ids)
    rng = np.random.default_rng(7)
    fold_sizes = [3, 3, 2, 2]
    signal = rng.normal(0.01, 0.02, n)
    fold_utility = signal[:, None] + rng.normal(0, 0.01, (n, len(fold_sizes)))
    fold_utility[ids.index(EVIL_ID)] = -0.2  # the most harmful: its card must be shown
    fold_utility[ids.index(BROKEN_ID)] = -0.1
    w = np.array(fold_sizes) / sum(fold_sizes)
    utility = fold_utility @ w
    groups = ["count", HOSTILE_GROUP, "sum"]
    # the two bad records' losses misfit the rest too, so `select`'s default flags them
    loss = rng.uniform(1, 3, n)
    loss[[ids.index(EVIL_ID), ids.index(BROKEN_ID)]] = 9.0
    group_utility = signal[:, None] * np.array([1.0, -0.5, 2.0]) + rng.normal(0, 0.005, (n, 3))
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "utility": pa.array(utility, pa.float64()),
            "loss": pa.array(loss, pa.float64()),
            "harmful": pa.array(utility < 0),
            "tokens": pa.array(rng.integers(10, 60, n), pa.int64()),
            "truncated": pa.array(np.zeros(n, bool)),
            "fold_utility": pa.FixedSizeListArray.from_arrays(
                pa.array(fold_utility.ravel(), pa.float64()), len(fold_sizes)
            ),
            "group_utility": pa.FixedSizeListArray.from_arrays(
                pa.array(group_utility.ravel(), pa.float64()), len(groups)
            ),
            "sketch": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.normal(size=n * 8).astype(np.float32), pa.float32()), 8
            ),
        }
    )
    settings = {
        "method": "exact",
        "proxy": "builtin",
        "seed": 0,
        "n_anchors": sum(fold_sizes),
        "harmful_below": 0.0,
        "anchor_fold_sizes": fold_sizes,
        "anchor_groups": groups,
        "anchor_group_sizes": [4, 3, 3],
        "sketch_dim": 8,
        "sketch_of": "gradient",
        "note": HOSTILE_TEXT,
    }
    scores = bench.root / "scores-synthetic.parquet"
    pq.write_table(table.replace_schema_metadata({"stepsift": json.dumps(settings)}), scores)
    return Synthetic(pool, scores, utility, fold_utility, fold_sizes, groups)


# ---------------------------------------------------------------- the browser


def chromium_binary() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("no chromium binary under CI: scripts/install.sh installs Debian's chromium")
    pytest.skip("no chromium binary (install Debian's chromium; under CI=true this fails)")


PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-probe-width", String(img.complete ? img.naturalWidth : -1));
  }
  document.body.setAttribute("data-probed", "yes");
});
</script>"""


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    cmd = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={user_dir}", "--hide-scrollbars", *args,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


class Dom(HTMLParser):
    """What the tests look for in the DOM Chromium dumped."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[dict[str, str | None]] = []
        self.scripts = 0
        self.body: dict[str, str | None] = {}
        self.title = ""
        self.text: list[str] = []
        self.samples: list[dict[str, str | None]] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag == "body":
            self.body = a
        elif tag == "title":
            self._in_title = True
        elif tag == "article":
            self.samples.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text.append(data)


@dataclass
class Rendered:
    dom: Dom
    screenshot: Image.Image


def render(page: Path, artifact: str, tmp_path: Path) -> Rendered:
    """Open the page in Chromium: the DOM after load (with the probe), and a screenshot."""
    html = page.read_text(encoding="utf-8")
    head, body_end, tail = html.rpartition("</body>")
    assert body_end, "the page has no </body>"
    probe = page.with_name("probe.html")  # beside the page, as a user would open it
    probe.write_text(head + PROBE + body_end + tail, encoding="utf-8")
    dumped = chromium(
        "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), user_dir=tmp_path / "u1"
    )
    probe.unlink()
    dom = Dom()
    dom.feed(dumped.stdout)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / artifact
    shot.unlink(missing_ok=True)
    chromium(
        f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri(), user_dir=tmp_path / "u2"
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    return Rendered(dom, Image.open(shot).convert("RGB"))


def assert_rendered(r: Rendered, n_images: int) -> None:
    """Every section is in the DOM, every image decoded, and the screenshot is not blank."""
    dom = r.dom
    assert dom.body.get("data-probed") == "yes", "the page's load event never fired"
    assert {"summary", *SECTION_IDS} <= dom.ids, f"missing sections: {set(SECTION_IDS) - dom.ids}"
    assert len(dom.images) == n_images
    for img in dom.images:
        assert (img.get("src") or "").startswith("data:image/png;base64,"), img.get("alt")
        assert int(img.get("data-probe-width") or 0) > 0, f"not decoded: {img.get('alt')}"
    assert dom.scripts == 1, "the page itself must carry no script (only the test's probe)"
    gray = np.asarray(r.screenshot.convert("L"))
    assert gray.shape == (4000, 1280)
    ink = (gray < 200).mean()  # text, plots and images are dark; the background is white
    assert 0.01 < ink < 0.6, f"screenshot looks blank or broken: {ink:.3%} dark pixels"
    small = np.asarray(r.screenshot.resize((320, 1000))).reshape(-1, 3)
    colors = len(np.unique(small, axis=0))
    assert colors > 50, "screenshot has almost no colours: plots and images did not render"


def text_of(dom: Dom) -> str:
    return " ".join(dom.text)


# ---------------------------------------------------------------- tests


def test_report_of_a_real_score_run_renders_in_chromium(bench, real_scores, tmp_path) -> None:
    out = tmp_path / "report"
    run = run_cli("report", real_scores, "--candidates", bench.pool, "--out", out, "--top", "5")
    assert run.rc == 0, run.err
    assert {p.name for p in out.iterdir()} >= {
        "report.html",
        "utility_distribution.png",
        "budget_curve.png",
    }
    table = pq.read_table(real_scores)
    # the page flags what `select` flags by default
    flags, _ = harmful_flags(read_score_data(real_scores), Policy())
    n_harmful = min(5, int(flags.sum()))
    r = render(out / "report.html", "report-score.png", tmp_path)
    # one image per shown sample (one per benchmark record) plus the plots
    n_plots = 2 + ("group_utility" in table.column_names)
    assert_rendered(r, n_plots + n_harmful + 5)
    assert len(r.dom.samples) == n_harmful + 5
    text = " ".join(text_of(r.dom).split())
    settings = json.loads(table.schema.metadata[b"stepsift"])
    if "group_utility" in table.column_names:
        assert all(f"{name} " in text for name in settings["anchor_groups"])
    else:
        assert "no group_utility column" in text
    if "fold_utility" in table.column_names:
        assert "Spearman correlation between the two halves" in text
    else:
        assert "no fold_utility column" in text
    assert f"{table.num_rows} candidates" in text
    assert "fingerprint" in text and settings["fingerprint"] in text


def test_report_with_every_optional_column_renders_in_chromium(
    bench, synthetic: Synthetic, tmp_path
) -> None:
    out = tmp_path / "report"
    run = run_cli("report", synthetic.scores, "--candidates", synthetic.pool, "--out", out)
    assert run.rc == 0, run.err
    assert (out / "groups.png").is_file()
    r = render(out / "report.html", "report.png", tmp_path)
    # the page's harmful flags are `select`'s default ones: with fold utilities, below 0
    # beyond the anchors' noise and a loss that misfits its kind
    flags, _ = harmful_flags(read_score_data(synthetic.scores), Policy())
    calibrated = calibrated_harmful(
        synthetic.utility, synthetic.fold_utility, synthetic.fold_sizes
    )
    assert 2 <= flags.sum() < calibrated.sum() < (synthetic.utility < 0).sum()
    n_harmful = min(10, int(flags.sum()))
    # 3 plots, one image per shown sample except the broken one, which is named instead
    assert_rendered(r, 3 + n_harmful + 10 - 1)
    dom, text = r.dom, text_of(r.dom)
    # hostile text is shown as text and ran nothing
    assert dom.title.startswith("stepsift report") and "pwned" not in dom.title
    assert HOSTILE_TEXT in text and HOSTILE_GROUP in text
    assert [s.get("data-id") for s in dom.samples][0] == EVIL_ID
    assert f"{int(flags.sum())} flagged harmful" in text
    assert "harmful: utility below 0 beyond the anchors' noise" in text and "misfit" in text
    assert "image 1 not shown" in text and "broken.png" in text
    # the groups and the reliability figure, as the library computes it
    for name in synthetic.groups:
        assert name in text
    rel = split_half_reliability(synthetic.fold_utility, synthetic.fold_sizes, seed=0)
    assert f"{rel.full_set_reliability:.4g}" in text
    assert rel.warning and rel.warning in text  # 10 anchors: too few to trust


def test_page_is_self_contained(bench, synthetic: Synthetic, tmp_path) -> None:
    """No network reference at all; the plots embedded are the PNG files beside the page."""
    out = tmp_path / "report"
    assert run_cli("report", synthetic.scores, "--candidates", synthetic.pool, "--out", out).rc == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    dom = Dom()
    dom.feed(html)
    assert dom.scripts == 0 and "<link" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html
    embedded = {
        img["data-file"]: base64.b64decode(img["src"].split(",", 1)[1])
        for img in dom.images
        if img.get("data-file")
    }
    assert set(embedded) == {"utility_distribution.png", "budget_curve.png", "groups.png"}
    for name, data in embedded.items():
        assert data == (out / name).read_bytes()
        assert Image.open(io.BytesIO(data)).size[0] >= 400


def write_scores(path: Path, columns: dict, settings: dict | None = None) -> Path:
    table = pa.table(columns)
    if settings is not None:
        table = table.replace_schema_metadata({"stepsift": json.dumps(settings)})
    pq.write_table(table, path)
    return path


def pool_ids(bench: BenchmarkPaths) -> list[str]:
    return [json.loads(line)["id"] for line in bench.pool.read_text().splitlines()]


def test_a_minimal_score_file_says_what_is_absent(bench, tmp_path) -> None:
    """Only `id` and `utility`: harmful means utility < 0, the curve counts candidates, and
    the optional sections say plainly they are not available."""
    ids = pool_ids(bench)
    utility = np.linspace(-0.05, 0.1, len(ids))
    scores = write_scores(tmp_path / "s.parquet", {"id": ids, "utility": utility})
    run = run_cli("report", scores, "--candidates", bench.pool, "--out", tmp_path / "r")
    assert run.rc == 0, run.err
    assert "no `tokens` column" in run.out
    html = " ".join((tmp_path / "r" / "report.html").read_text().split())
    assert "x: candidates kept (no token counts: each costs 1)" in html
    assert "candidates kept</th>" in html
    assert "no <code>group_utility</code> column" in html
    assert "no <code>fold_utility</code> column" in html
    assert "records no settings" in html
    n_negative = int((utility < 0).sum())
    assert f"{n_negative} flagged harmful" in html


@pytest.mark.parametrize(
    ("columns", "settings", "message"),
    [
        ({"utility": [0.1, float("nan")]}, None, "column 'utility' has 1 row(s) with non-finite"),
        (
            {"group_utility": [[0.1, 0.2], [0.0, 0.1]]},
            {"anchor_groups": ["only-one"]},
            "'anchor_groups' should list 2 names",
        ),
        (
            {"fold_utility": [[0.1, 0.2], [0.0, 0.1]]},
            {"anchor_fold_sizes": [3]},
            "anchor_fold_sizes",
        ),
    ],
)
def test_inconsistent_score_files_exit_2_naming_the_field(
    bench, tmp_path, columns: dict, settings: dict | None, message: str
) -> None:
    ids = pool_ids(bench)[:2]
    base = {"id": ids, "utility": [0.1, -0.1]}
    scores = write_scores(tmp_path / "s.parquet", {**base, **columns}, settings)
    run = run_cli("report", scores, "--candidates", bench.pool, "--out", tmp_path / "r")
    assert run.rc == 2
    assert str(scores) in run.err and message in run.err
    assert not (tmp_path / "r").exists()


def test_scores_of_another_pool_exit_2(bench, tmp_path) -> None:
    scores = write_scores(tmp_path / "s.parquet", {"id": ["x", "y"], "utility": [0.1, 0.2]})
    run = run_cli("report", scores, "--candidates", bench.pool, "--out", tmp_path / "r")
    assert run.rc == 2 and "none of its 2 scored ids" in run.err


def test_bad_options_exit_2(bench, real_scores, tmp_path) -> None:
    run = run_cli(
        "report", real_scores, "--candidates", bench.pool, "--out", tmp_path / "r", "--top", "0"
    )
    assert run.rc == 2 and "--top 0" in run.err
    run = run_cli("report", real_scores, "--candidates", bench.pool, "--out", bench.pool)
    assert run.rc == 2 and "--out must be a folder" in run.err


def test_a_shown_record_missing_from_the_candidates_is_said_not_hidden(bench, tmp_path) -> None:
    """The best-scored record's line is broken in the candidate file: its card says so and
    the page names it in the notes; the others are shown as usual."""
    lines = bench.pool.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    lines[0] = lines[0][:-5]  # no longer JSON
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(lines) + "\n")
    shutil.copytree(bench.images, tmp_path / "images")
    utility = np.linspace(0.1, -0.1, len(ids))  # ids[0] is the best
    scores = write_scores(tmp_path / "s.parquet", {"id": ids, "utility": utility})
    run = run_cli("report", scores, "--candidates", pool, "--out", tmp_path / "r", "--top", "3")
    assert run.rc == 0, run.err
    assert "1 shown id(s) are not valid records" in run.out and ids[0] in run.out
    html = (tmp_path / "r" / "report.html").read_text()
    dom = Dom()
    dom.feed(html)
    assert [s.get("data-id") for s in dom.samples] == [*ids[::-1][:3], *ids[:3]]
    assert html.count("not a valid record of the candidate file") == 1
    assert len(dom.images) == 2 + 5  # two plots, one image on each found card


def test_a_huge_record_is_shown_in_part(bench, tmp_path) -> None:
    """A record with 40 images, 60 turns and a megabyte of text costs the page a bounded
    share: a few thumbnails, a dozen turns, the start of the text, each cut said."""
    from stepsift.report.page import MAX_TURN_CHARS, MAX_TURNS
    from stepsift.report.write import MAX_IMAGES

    turns = []
    for k in range(30):
        turns += [{"from": "human", "value": "<image>" * 40 + "q" * 10**6 if k == 0 else "q"}]
        turns += [{"from": "gpt", "value": "a"}]
    big = {"id": "big", "image": [f"images/pool-{k % 24:06d}.png" for k in range(40)],
           "conversations": turns}  # fmt: skip
    pool = bench.root / "pool-big.jsonl"
    pool.write_text(json.dumps(big) + "\n")
    scores = write_scores(tmp_path / "s.parquet", {"id": ["big"], "utility": [0.5]})
    run = run_cli("report", scores, "--candidates", pool, "--out", tmp_path / "r")
    assert run.rc == 0, run.err
    html = (tmp_path / "r" / "report.html").read_text()
    dom = Dom()
    dom.feed(html)
    assert len(dom.images) == 2 + MAX_IMAGES
    assert f"and {40 - MAX_IMAGES} more image(s)" in html
    assert f"and {60 - MAX_TURNS} more turn(s)" in html
    assert "1,000,000 characters in all" in html and "q" * (MAX_TURN_CHARS + 1) not in html
    assert len(html) < 1_000_000


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            {
                "method": "curvature",
                "audit": {"method": "exact", "n": 128, "spearman": 0.962, "top20_overlap": 0.88},
            },  # fmt: skip
            "Audit: 128 random candidates scored again with exact agree with curvature's "
            "ranking to Spearman ρ 0.962, top-20% overlap 88.0%.</p>",
        ),
        (
            {
                "method": "curvature",
                "audit": {"method": "exact", "n": 200, "spearman": 0.71, "top20_overlap": 0.5},
            },  # fmt: skip
            "That is under 0.9: the ranking is not exact's",
        ),
        ({"method": "first-order"}, "has no audit against exact"),
        ({"method": "exact"}, None),  # the definition needs no audit
    ],
)
def test_the_summary_states_the_audit_or_its_absence(bench, tmp_path, settings, said) -> None:
    ids = pool_ids(bench)
    scores = write_scores(
        tmp_path / "s.parquet", {"id": ids, "utility": np.linspace(-1, 1, len(ids))}, settings
    )
    run = run_cli("report", scores, "--candidates", bench.pool, "--out", tmp_path / "r")
    assert run.rc == 0, run.err
    html = " ".join((tmp_path / "r" / "report.html").read_text().split())
    if said is None:
        assert "Audit:" not in html and "no audit" not in html
    else:
        assert said in html
