"""A self-contained static HTML page to browse a build-avrt corpus, kept and rejected samples.

``python -m flows.view OUT [--html PATH] [--per-page 20] [--limit N]`` reads ``OUT/corpus/*.parquet``
and ``OUT/rejected/*.parquet`` and writes one HTML file (default ``OUT/view.html``) with the media
inlined (frames as JPEG data URIs, audio as a WAV data URI), so it opens anywhere without a server.
Each card shows the frames, an audio player, the question and options (answer marked), both teacher
traces with their parsed answers, the merged trace, and kept/rejected with stage and reason. Cards are
paginated and filterable by stage in the page (a few lines of inline JavaScript).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable

from configs import UserError, user_errors
from corpus.store import read_rows
from teachers.reasoning import trace_text

MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".wav": "audio/wav"}


def load_rows(outdir: Path) -> list[dict[str, Any]]:
    """Kept rows (``stage="kept"``) then rejected rows, as dicts, from the corpus folders."""
    return read_rows(outdir)


def data_uri(path: Path) -> str | None:
    """The file as a ``data:`` URI, or None when it is missing."""
    if not path.is_file():
        return None
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def render_card(row: dict[str, Any], outdir: Path) -> str:
    """One sample as an HTML ``<article>`` (pure apart from reading its media files)."""
    e = lambda v: html.escape(_text(v))  # noqa: E731
    frames = [data_uri(outdir / p) for p in list(row.get("frames") if row.get("frames") is not None else [])]
    imgs = "".join(f'<img src="{u}" alt="frame">' if u else '<span class="missing">frame missing</span>'
                   for u in frames)
    audio_uri = data_uri(outdir / row["audio"]) if _text(row.get("audio")) else None
    audio = f'<audio controls src="{audio_uri}"></audio>' if audio_uri else '<span class="missing">no audio</span>'
    choices = "".join(f'<li class="{"answer" if "ABCD"[i] == row.get("answer") else ""}">{"ABCD"[i]}. {e(c)}</li>'
                      for i, c in enumerate(list(row.get("choices") if row.get("choices") is not None else [])))
    traces = ""
    for role in ("vision", "audio"):
        trace = trace_text(_text(row.get(f"{role}_reasoning")), _text(row.get(f"{role}_raw")))  # as the merger read it
        if trace or role + "_answer" in row:
            traces += (f'<div class="trace"><h4>{role} teacher: answer {e(row.get(f"{role}_answer")) or "none"}'
                       f' {e(row.get(f"{role}_parse"))}</h4><pre>{e(trace)}</pre></div>')
    merged = f'<div class="trace merged"><h4>merged</h4><pre>{e(row.get("merged"))}</pre></div>' if _text(row.get("merged")) else ""
    status = _text(row.get("status")) or "kept"
    verdict = status if status == "kept" else f'rejected at {e(row.get("stage"))}: {e(row.get("reason"))}'
    return (f'<article class="card {e(status)}" data-stage="{e(row.get("stage"))}">'
            f'<h3>{e(row.get("id"))} <small>{e(row.get("split"))}</small> <span class="verdict">{verdict}</span></h3>'
            f'<div class="frames">{imgs}</div>{audio}<p class="q">{e(row.get("question"))}</p><ul class="choices">{choices}</ul>'
            f'{traces}{merged}</article>')


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:sans-serif;margin:1em;background:#fafafa}} .card{{background:#fff;border:1px solid #ccc;margin:1em 0;padding:.8em}}
.card.rejected{{border-left:6px solid #c33}} .card.kept{{border-left:6px solid #3a3}} .frames img{{width:120px;margin:2px}}
pre{{white-space:pre-wrap;background:#f3f3f3;padding:.5em}} li.answer{{font-weight:bold}} ul.choices{{list-style:none}} .missing{{color:#c33}}
</style></head><body><h1>{title}</h1><p>{summary}</p>
<label>stage <select id="stage"><option value="">all</option>{options}</select></label>
<button id="prev">previous</button> <span id="page"></span> <button id="next">next</button>
<div id="cards">{cards}</div><script>
const per={per_page};let page=0;const cards=[...document.querySelectorAll('.card')];
function show(){{const s=document.getElementById('stage').value;const m=cards.filter(c=>!s||c.dataset.stage===s);
const pages=Math.max(1,Math.ceil(m.length/per));page=Math.min(page,pages-1);cards.forEach(c=>c.style.display='none');
m.slice(page*per,(page+1)*per).forEach(c=>c.style.display='');document.getElementById('page').textContent=`page ${{page+1}} / ${{pages}} (${{m.length}} samples)`;}}
document.getElementById('stage').onchange=()=>{{page=0;show();}};
document.getElementById('prev').onclick=()=>{{page=Math.max(0,page-1);show();}};
document.getElementById('next').onclick=()=>{{page+=1;show();}};show();
</script></body></html>"""


def render_page(rows: Iterable[dict[str, Any]], outdir: Path, per_page: int = 20, title: str = "AVRT corpus") -> str:
    """The whole page: summary counts per stage, stage filter, paginated cards."""
    rows = list(rows)
    stages: dict[str, int] = {}
    for row in rows:
        stages[_text(row.get("stage"))] = stages.get(_text(row.get("stage")), 0) + 1
    summary = ", ".join(f"{html.escape(s)}: {n}" for s, n in stages.items()) or "no samples"
    options = "".join(f'<option value="{html.escape(s)}">{html.escape(s)} ({n})</option>' for s, n in stages.items())
    return PAGE.format(title=html.escape(title), summary=summary, options=options, per_page=int(per_page),
                       cards="".join(render_card(r, outdir) for r in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.view", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="build-avrt output folder (with corpus/ and rejected/)")
    parser.add_argument("--html", type=Path, default=None, help="page to write (default OUT/view.html)")
    parser.add_argument("--per-page", type=int, default=20, help="cards per page")
    parser.add_argument("--limit", type=int, default=None, help="show at most this many samples")
    args = parser.parse_args(argv)
    rows = load_rows(args.out)[: args.limit]
    with user_errors():
        if not rows:
            raise UserError(f"no corpus or rejected parquet files under {args.out} (give a build-avrt --out folder)")
    target = args.html or args.out / "view.html"
    target.write_text(render_page(rows, args.out, args.per_page, title=f"AVRT corpus: {args.out}"))
    print(json.dumps({"html": str(target), "samples": len(rows)}))


if __name__ == "__main__":
    main()
