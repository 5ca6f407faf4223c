"""The corpus viewer: one self-contained page with media inlined, kept and rejected samples."""

import pandas as pd

from flows.view import load_rows, main, render_page
from tests.corpus_fixture import write_corpus


def _corpus_with_rejection(synthetic_data, tmp_path):
    out = write_corpus(synthetic_data, tmp_path / "out", n=3)
    kept = pd.read_parquet(out / "corpus" / "part-0.parquet")
    rejected = kept.iloc[:1].copy()
    rejected["id"] = "rej<1>"
    rejected["status"], rejected["stage"], rejected["reason"] = "rejected", "filter", "vision teacher chose B, answer A"
    rejected["vision_raw"], rejected["vision_answer"] = "<think>red & round</think><answer>B</answer>", "B"
    # untagged reasoning (Audio Flamingo 3): the answer text repeats it; the page shows it once
    rejected["audio_reasoning"] = "The tone is unmistakably high."
    rejected["audio_raw"] = "The tone is unmistakably high.\nAnswer: (B)"
    (out / "rejected").mkdir()
    rejected.drop(columns=["merged"]).to_parquet(out / "rejected" / "train.parquet")
    return out


def test_page_inlines_media_and_shows_reasons(synthetic_data, tmp_path):
    out = _corpus_with_rejection(synthetic_data, tmp_path)
    rows = load_rows(out)
    assert [r["stage"] for r in rows] == ["kept", "kept", "kept", "filter"]
    page = render_page(rows, out, per_page=2)
    assert page.count("<article") == 4
    assert page.count('src="data:image/jpeg;base64,') == 4 * len(rows[0]["frames"])
    assert page.count('<audio controls src="data:audio/wav;base64,') == 4
    assert "rejected at filter: vision teacher chose B, answer A" in page
    assert "rej&lt;1&gt;" in page and "red &amp; round" in page  # escaped, not injected
    assert "<answer>B</answer>" not in page
    assert page.count("<think>") == 0 and page.count("&lt;think&gt;") == 3  # the merged traces; a teacher's trace shows its text
    assert page.count("The tone is unmistakably high.") == 1


def test_cli_writes_page_and_refuses_empty_folder(synthetic_data, tmp_path, capsys):
    out = _corpus_with_rejection(synthetic_data, tmp_path)
    main([str(out), "--limit", "2"])  # the README's `python -m flows.view OUT`, on a small build output
    assert (out / "view.html").read_text().count("<article") == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        main([str(empty)])
    except SystemExit as err:
        assert err.code == 2 and "no corpus" in capsys.readouterr().err
    else:
        raise AssertionError("expected SystemExit")


def test_page_renders_in_headless_chromium(synthetic_data, tmp_path):
    """A real browser loads the page and draws a card's frames and trace (screenshot is non-blank)."""
    import shutil
    import subprocess

    import pytest
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (make install installs it)")
    out = _corpus_with_rejection(synthetic_data, tmp_path)
    main([str(out), "--per-page", "1"])
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (out / "view.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "page 1 / 4 (4 samples)" in dom  # the script ran and paginated
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1000,700", (out / "view.html").as_uri()], capture_output=True, timeout=120)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # frames drawn, not a blank page
