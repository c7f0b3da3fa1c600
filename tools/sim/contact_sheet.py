"""An overview sheet of a run's display frames: every frame, in order, in one PNG, each under a
caption (its tap number, card and outcome), so a reader sees the run at a glance instead of
opening the frames one by one. `make sim` writes it as overview.png beside report.json."""

from pathlib import Path

COLUMNS = 4
PAD = 8
CAPTION_H = 14
BACKGROUND = (32, 32, 40)
TEXT = (230, 230, 230)


def caption(path):
    """'003-bob-OK_LOW.png' -> '3 bob OK_LOW' (the bench's frame names)."""
    parts = Path(path).stem.split("-")
    if parts and parts[0].isdigit():
        parts[0] = str(int(parts[0]))
    return " ".join(parts)


def make_sheet(frames, out, columns=COLUMNS, scale=0.5):
    """Write the frames (PNG paths, in order) as one sheet to `out`; returns the path, or None
    when there are no frames. A frame that cannot be read is shown as an empty box with its
    name and 'unreadable' (the sheet is still written)."""
    from PIL import Image, ImageDraw, UnidentifiedImageError

    frames = [Path(p) for p in frames]
    if not frames:
        return None
    thumbs = []
    for p in frames:
        try:
            with Image.open(p) as img:
                img = img.convert("RGB")
                w, h = max(1, int(img.width * scale)), max(1, int(img.height * scale))
                thumbs.append((img.resize((w, h), Image.NEAREST), caption(p)))
        except (OSError, UnidentifiedImageError):
            thumbs.append((None, caption(p) + " (unreadable)"))
    w = max((t.width for t, _ in thumbs if t is not None), default=192)
    h = max((t.height for t, _ in thumbs if t is not None), default=96)
    cols = min(columns, len(thumbs))
    rows = (len(thumbs) + cols - 1) // cols
    sheet = Image.new(
        "RGB",
        (cols * (w + PAD) + PAD, rows * (h + CAPTION_H + PAD) + PAD),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, text) in enumerate(thumbs):
        x = PAD + (i % cols) * (w + PAD)
        y = PAD + (i // cols) * (h + CAPTION_H + PAD)
        draw.text((x, y), text[: w // 6], fill=TEXT)
        if thumb is None:
            draw.rectangle((x, y + CAPTION_H, x + w - 1, y + CAPTION_H + h - 1), outline=TEXT)
        else:
            sheet.paste(thumb, (x, y + CAPTION_H))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
