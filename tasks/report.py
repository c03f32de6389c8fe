"""DIR/report.html: a self-contained page to look at a dataset (a registered exporter): the funnel from
speech found to segments kept with every drop reason, a table per video, distributions as inline SVG
charts, a contact sheet of midpoint frames with the speaker's face box, and a sample of segments with
players of their clips. Inline CSS and SVG only (no script, no CDN): it reads offline and links the
dataset's media by relative path. Every string from the records is escaped. Like the dataset card it
holds nothing that changes from run to run, so it is rewritten only when the records change.
"""
from __future__ import annotations

import html
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

from modalink.exports import DatasetRecords, LabelledExporter, register_exporter

REPORT = "report.html"
SAMPLE = 12  # segments with players
SHEET = 60  # frames on the contact sheet

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2430;background:#fafbfc;max-width:1400px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
.wide{overflow-x:auto;max-width:100%}table.videos{width:100%}table.videos td.w{overflow-wrap:anywhere}.muted{color:#5b6675;font-size:13px}table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #d8dee6;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef2f6}
td.n{text-align:right;font-variant-numeric:tabular-nums}.err{color:#b42318}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{background:#fff;border:1px solid #d8dee6;padding:8px}
.chart h3{font-size:14px;margin:0 0 4px}
.sheet{display:flex;flex-wrap:wrap;gap:8px}.thumb{width:180px;font-size:11px;background:#fff;border:1px solid #d8dee6}
.frame{position:relative;line-height:0}.frame img{width:100%;display:block}
.box{position:absolute;border:2px solid #f5a700;box-sizing:border-box}
.thumb .cap{padding:3px 4px;overflow-wrap:anywhere}
.samples{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.sample{background:#fff;border:1px solid #d8dee6;padding:8px;font-size:13px}.sample video{width:100%;max-height:240px;background:#000}
.sample audio{width:100%;height:32px}.transcript{font-size:15px;margin:6px 0}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def funnel(videos: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
    """(step, count) from speech found to segments kept, with every drop reason, summed over videos."""
    videos = list(videos)
    dropped: Counter[str] = Counter()
    for video in videos:
        dropped.update({reason: int(n or 0) for reason, n in (video.get("segments_dropped") or {}).items()})
    return [("speech segments (VAD)", sum(int(v.get("speech_segments") or 0) for v in videos)),
            ("segments found (speaker split)", sum(int(v.get("segments_found") or 0) for v in videos)),
            *((f"dropped: {reason}", count) for reason, count in sorted(dropped.items())),
            ("segments kept", sum(int(v.get("segments_kept") or 0) for v in videos))]


def bins(values: Sequence[float], count: int = 10) -> list[tuple[float, float, int]]:
    """(low, high, n) over `count` equal bins from the smallest to the largest value."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [(low, high, len(values))]
    width = (high - low) / count
    found = [0] * count
    for value in values:
        found[min(int((value - low) / width), count - 1)] += 1
    return [(low + k * width, low + (k + 1) * width, n) for k, n in enumerate(found)]


def bar_chart(title: str, bars: Sequence[tuple[str, int]], width: int = 420, height: int = 200) -> str:
    """An inline SVG bar chart of (label, count), with the counts over the bars."""
    if not bars:
        return f'<div class="chart"><h3>{esc(title)}</h3><p class="muted">no data</p></div>'
    top = max(n for _, n in bars) or 1
    left, bottom, pad = 8, 40, 16
    step = (width - 2 * left) / len(bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" stroke="#8a94a3"/>']
    for k, (label, n) in enumerate(bars):
        h = (height - bottom - pad) * n / top
        x = left + k * step
        parts.append(f'<rect x="{x + step * 0.1:.1f}" y="{height - bottom - h:.1f}" width="{step * 0.8:.1f}" '
                     f'height="{h:.1f}" fill="#3b6ea8"><title>{esc(label)}: {n}</title></rect>')
        parts.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom - h - 3:.1f}" font-size="11" '
                     f'text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 14:.1f}" font-size="10" '
                     f'text-anchor="middle" fill="#5b6675">{esc(label)}</text>')
    parts.append("</svg>")
    return f'<div class="chart"><h3>{esc(title)}</h3>{"".join(parts)}</div>'


def histogram(title: str, values: Sequence[float], unit: str = "", count: int = 10, digits: int = 1) -> str:
    if values and all(float(v).is_integer() for v in values) and max(values) - min(values) < count:
        found = Counter(int(v) for v in values)  # whole numbers: one bar per value
        bars = [(str(k), found[k]) for k in range(int(min(values)), int(max(values)) + 1)]
        digits = 0
    else:
        bars = [(f"{low:.{digits}f}", n) for low, _, n in bins(values, count)]
    span = f" ({min(values):.{digits}f}-{max(values):.{digits}f} {unit}, n={len(values)})" if values else ""
    return bar_chart(title + span, bars)


def counts_chart(title: str, values: Iterable[Any], most: int = 10) -> str:
    return bar_chart(title, [(str(k), n) for k, n in Counter(v for v in values if v is not None).most_common(most)])


def face_share(segment: dict[str, Any], video: dict[str, Any] | None) -> float | None:
    """The active face's area as a share of the frame (percent), None without a face or frame size."""
    face = segment.get("active_face") or {}
    if not face or not video or not video.get("width") or not video.get("height"):
        return None
    return 100.0 * float(face["w"]) * float(face["h"]) / (float(video["width"]) * float(video["height"]))


def box_style(face: dict[str, Any], video: dict[str, Any]) -> str:
    """The face box over the frame, in percent of the frame (the JPEG is the source size)."""
    width, height = float(video["width"]), float(video["height"])
    return (f"left:{100 * float(face['x']) / width:.2f}%;top:{100 * float(face['y']) / height:.2f}%;"
            f"width:{100 * float(face['w']) / width:.2f}%;height:{100 * float(face['h']) / height:.2f}%")


def words(text: Any) -> int:
    return len(str(text or "").split())


def prelabel(segment: dict[str, Any]) -> Any:
    return ((segment.get("custom") or {}).get("expressions") or {}).get("top")


def spread(segments: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Up to `count` segments taken in turn from each video, so every video shows before any repeats."""
    per_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for segment in segments:
        per_video[segment["video_id"]].append(segment)
    queues = list(per_video.values())
    chosen: list[dict[str, Any]] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def video_table(records: DatasetRecords) -> str:
    reasons = sorted({r for v in records.videos for r in (v.get("segments_dropped") or {})})
    head = ["video", "status", "duration (s)", "speech", "found", "kept", "dropped (by reason)",
            "transcripts failed", "transcripts suspect", "licence", "source", "error"]
    rows = []
    for v in records.videos:
        source = v.get("url") or v.get("source")
        link = (f'<a href="{esc(source)}">{esc(source)}</a>' if str(source or "").startswith(("http://", "https://"))
                else esc(source))
        dropped = v.get("segments_dropped") or {}
        numbers = [v.get("speech_segments"), v.get("segments_found"), v.get("segments_kept"),
                   v.get("transcription_failed"), v.get("transcript_suspect")]
        why = ", ".join(f"{r} {dropped[r]}" for r in reasons if dropped.get(r)) or "0"
        rows.append("<tr>" + f"<td class=\"w\">{esc(v['video_id'])}</td>"
                    + f'<td class="{"err" if v.get("status") == "failed" else ""}">{esc(v.get("status"))}</td>'
                    + f'<td class="n">{esc(v.get("duration"))}</td>'
                    + "".join(f'<td class="n">{esc(n)}</td>' for n in numbers[:3]) + f"<td>{esc(why)}</td>"
                    + "".join(f'<td class="n">{esc(n)}</td>' for n in numbers[3:])
                    + f"<td>{esc(v.get('license') or 'unknown')}</td><td class=\"w\">{link}</td>"
                    + f'<td class="err w">{esc(v.get("error"))}</td></tr>')
    return ('<div class="wide"><table class="videos"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def contact_sheet(segments: list[dict[str, Any]], videos: dict[str, dict[str, Any]]) -> str:
    cells = []
    for s in spread(segments, SHEET):
        if not s.get("frame"):
            continue
        video = videos.get(s["video_id"]) or {}
        face = s.get("active_face")
        box = (f'<div class="box" style="{box_style(face, video)}"></div>'
               if face and video.get("width") and video.get("height") else "")
        cells.append(f'<div class="thumb"><div class="frame"><img src="{esc(s["frame"])}" alt="{esc(s["segment_id"])}" '
                     f'loading="eager">{box}</div><div class="cap">{esc(s["segment_id"])} '
                     f'({float(s.get("duration") or 0):.1f} s) {esc(prelabel(s) or "")}</div></div>')
    return f'<div class="sheet">{"".join(cells)}</div>' if cells else '<p class="muted">no frames</p>'


def sample_cards(segments: list[dict[str, Any]]) -> str:
    cards = []
    for s in spread(segments, SAMPLE):
        rtl = ' dir="rtl"' if str(s.get("language") or "").lower().startswith("ar") else ""
        expressions = (s.get("custom") or {}).get("expressions") or {}
        pre = (f"{esc(expressions.get('top'))} (margin {float(expressions.get('margin') or 0):.2f})"
               if expressions.get("top") else "none")
        labels = s.get("labels") or []
        label_text = (f"{esc(s.get('label'))} (agreement {float(s.get('label_agreement') or 0):.2f}; "
                      + ", ".join(esc(l.get("emotion")) for l in labels) + ")") if labels else "not labelled"
        suspect = s.get("transcript_suspect") or []
        cards.append(
            f'<div class="sample"><b>{esc(s["segment_id"])}</b> <span class="muted">{float(s["start"]):.2f}-'
            f'{float(s["end"]):.2f} s</span>'
            + (f'<video controls preload="metadata" src="{esc(s["video_clip"])}"'
               + (f' poster="{esc(s["frame"])}"' if s.get("frame") else "") + "></video>" if s.get("video_clip") else "")
            + (f'<audio controls preload="metadata" src="{esc(s["audio_clip"])}"></audio>' if s.get("audio_clip") else "")
            + f'<div class="transcript"{rtl} lang="{esc(s.get("language"))}">{esc(s.get("transcript"))}</div>'
            + f'<div class="muted">transcript: {esc(s.get("transcript_status"))}'
            + (f' <span class="err">suspect: {esc(", ".join(suspect))}</span>' if suspect else "") + "</div>"
            + f"<div>pre-label: {pre}</div><div>label: {label_text}</div></div>")
    return f'<div class="samples">{"".join(cards)}</div>' if cards else '<p class="muted">no segments</p>'


def render_report(records: DatasetRecords, segments: list[dict[str, Any]] | None = None) -> str:
    """The page; `segments`: the records with labels merged in (default: records.segments)."""
    segments = records.segments if segments is None else segments
    videos = {v["video_id"]: v for v in records.videos}
    steps = funnel(records.videos)
    first = steps[0][1] or 1
    funnel_rows = "".join(
        f'<tr><td>{esc(step)}</td><td class="n">{n}</td><td class="n">{100 * n / first:.0f}%</td>'
        f'<td><svg width="300" height="14"><rect width="{300 * n / first:.1f}" height="14" '
        f'fill="{"#b42318" if step.startswith("dropped") else "#3b6ea8"}"/></svg></td></tr>' for step, n in steps)
    shares = [x for s in segments if (x := face_share(s, videos.get(s["video_id"]))) is not None]
    heights = [float(s["active_face"]["h"]) for s in segments if s.get("active_face")]
    labelled = [s for s in segments if s.get("labels")]
    minutes = sum(float(s.get("duration") or 0) for s in segments) / 60
    failed = sum(1 for v in records.videos if v.get("status") == "failed")
    charts = [histogram("Segment duration", [float(s["duration"]) for s in segments], "s"),
              histogram("Face area, share of the frame", shares, "%"),
              histogram("Face height", heights, "px", digits=0),
              histogram("Transcript length", [words(s.get("transcript")) for s in segments], "words", digits=0),
              counts_chart("Pre-label (top expression)", (prelabel(s) for s in segments))]
    if labelled:
        charts += [counts_chart("Label (majority)", (s.get("label") or "tie" for s in labelled)),
                   histogram("Label agreement", [float(s.get("label_agreement") or 0) for s in labelled], "", 5, 2)]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>MODALINK dataset report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>MODALINK dataset report</h1>",
        f'<p class="muted">{len(segments)} segments ({minutes:.1f} minutes) from '
        f'{len({s["video_id"] for s in segments})} of {len(records.videos)} videos ({failed} failed); '
        f'{len(labelled)} labelled. Media are linked from this folder.</p>',
        "<h2>Funnel: speech found to segments kept</h2>",
        f'<table><thead><tr><th>step</th><th>segments</th><th>of speech</th><th></th></tr></thead>'
        f"<tbody>{funnel_rows}</tbody></table>",
        "<h2>Videos</h2>", video_table(records),
        "<h2>Distributions</h2>", f'<div class="charts">{"".join(charts)}</div>',
        f"<h2>Contact sheet (midpoint frames, speaker's face boxed; up to {SHEET})</h2>",
        contact_sheet(segments, videos),
        f"<h2>Sample of segments (up to {SAMPLE}, spread over the videos)</h2>", sample_cards(segments),
        "</body></html>", ""])


@register_exporter
class ReportExport(LabelledExporter):
    """report.html, from the segments with the labels of labels.jsonl merged in."""

    name, order = REPORT, 950

    def render(self, records: DatasetRecords, labels: str | None = None) -> dict[str, str]:
        from modalink.annotate import merge_labels

        return {REPORT: render_report(records, merge_labels(records.segments, labels))}
