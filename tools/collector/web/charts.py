"""Bar charts drawn on the server as SVG (no script, prints and screenshots as it shows).
Text is escaped; numbers are laid out in a fixed viewBox and scale with the page."""

from markupsafe import Markup, escape

W, H = 720, 240
PAD_L, PAD_B, PAD_T = 64, 46, 12


def bars(items, unit="", color="#2f6f9f", label_every=None):
    """items: [(label, value)] -> an <svg> Markup. Value axis from 0 to the maximum."""
    if not items:
        return Markup("")
    top = max(v for _, v in items) or 1
    n = len(items)
    plot_w = W - PAD_L - 8
    plot_h = H - PAD_B - PAD_T
    bw = min(plot_w / n, 80)
    every = label_every or max(1, n // 12)
    out = [
        '<svg class="chart" viewBox="0 0 %d %d" role="img" xmlns="http://www.w3.org/2000/svg">'
        % (W, H)
    ]
    for i in range(5):
        v = top * i / 4
        y = PAD_T + plot_h - plot_h * i / 4
        out.append(
            '<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/>' % (PAD_L, W - 8, y, y)
        )
        out.append(
            '<text x="%d" y="%.1f" class="axis" text-anchor="end">%s</text>'
            % (PAD_L - 4, y + 4, escape(_num(v)))
        )
    for i, (label, v) in enumerate(items):
        h = plot_h * v / top
        x = PAD_L + i * bw
        out.append(
            '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">'
            "<title>%s: %s %s</title></rect>"
            % (
                x + bw * 0.1,
                PAD_T + plot_h - h,
                max(bw * 0.8, 0.5),
                h,
                color,
                escape(label),
                escape(_num(v)),
                escape(unit),
            )
        )
        if i % every == 0:
            out.append(
                '<text x="%.1f" y="%d" class="axis" text-anchor="middle">%s</text>'
                % (x + bw / 2, H - PAD_B + 16, escape(label))
            )
    out.append("</svg>")
    return Markup("".join(out))


def _num(v):
    if v >= 10000:
        return "%.0f" % v
    if v == int(v):
        return "%d" % v
    return "%.2f" % v
