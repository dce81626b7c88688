"""Draw the web page's three example photos (procedural scenes, no photograph involved).

    python inference/examples/generate.py        # rewrites balloon.jpg, lighthouse.jpg, fruit.jpg here

Each scene is drawn at twice its size with Pillow and shrunk (antialiased edges), with a little fixed-seed
noise so it compresses like a photo; the output is the same on every run with the same Pillow. The images are
this project's own work, dedicated to the public domain (CC0 1.0): see LICENSE.md beside this file.
"""

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
SUPERSAMPLE = 2


def _vertical_gradient(width, height, top, bottom):
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    column = (1 - t) * np.asarray(top, np.float64) + t * np.asarray(bottom, np.float64)
    return np.broadcast_to(column, (height, width, 3)).copy()


def _finish(canvas, size, seed, noise=3.0):
    """Shrink the supersampled canvas to `size` (W, H), soften it a touch and add fixed grain: uint8 RGB."""
    image = canvas.resize(size, Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.4))
    pixels = np.asarray(image, np.float64)
    pixels += np.random.default_rng(seed).normal(0.0, noise, pixels.shape)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def balloon(width=640, height=427):
    """A red hot-air balloon over green hills, off-centre, in a blue sky (landscape, 3:2)."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    canvas = Image.fromarray(_vertical_gradient(w, h, (70, 130, 200), (190, 220, 240)).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for cx, cy, rx, ry in ((0.15, 0.25, 0.09, 0.03), (0.55, 0.15, 0.12, 0.035), (0.85, 0.32, 0.08, 0.025)):
        draw.ellipse([(cx - rx) * w, (cy - ry) * h, (cx + rx) * w, (cy + ry) * h], fill=(245, 248, 252))
    for offset, colour in ((0.62, (110, 160, 80)), (0.72, (80, 135, 60)), (0.84, (60, 110, 45))):
        xs = np.linspace(0, w, 64)
        ys = h * (offset + 0.05 * np.sin(xs / w * 2 * np.pi * (1.3 + offset) + offset * 7))
        draw.polygon([(0, h)] + list(zip(xs, ys)) + [(w, h)], fill=colour)
    # The balloon: an envelope with stripes, ropes and a basket.
    cx, cy, r = 0.68 * w, 0.34 * h, 0.11 * h
    draw.ellipse([cx - r, cy - 1.15 * r, cx + r, cy + 1.05 * r], fill=(200, 35, 40))
    for dx in (-0.55, 0.0, 0.55):
        draw.ellipse([cx + dx * r - 0.12 * r, cy - 1.12 * r, cx + dx * r + 0.12 * r, cy + 1.0 * r],
                     fill=(240, 200, 40))
    basket_top = cy + 1.45 * r
    for side in (-1, 1):
        draw.line([cx + side * 0.62 * r, cy + 0.75 * r, cx + side * 0.22 * r, basket_top],
                  fill=(60, 40, 30), width=SUPERSAMPLE * 2)
    draw.rectangle([cx - 0.24 * r, basket_top, cx + 0.24 * r, basket_top + 0.35 * r], fill=(120, 80, 40))
    return _finish(canvas, (width, height), seed=1)


def lighthouse(width=427, height=640):
    """A striped lighthouse on a rock by the sea, at dusk (portrait, 2:3)."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    sky = _vertical_gradient(w, h, (40, 50, 110), (245, 160, 110))
    sea = _vertical_gradient(w, h, (30, 70, 110), (15, 40, 70))
    horizon = int(0.62 * h)
    canvas = Image.fromarray(sky.astype(np.uint8))
    ImageDraw.Draw(canvas).ellipse([0.62 * w, 0.5 * h, 0.9 * w, 0.68 * h], fill=(255, 200, 120))  # setting sun
    canvas.paste(Image.fromarray(sea[horizon:].astype(np.uint8)), (0, horizon))  # the sea hides its lower half
    draw = ImageDraw.Draw(canvas)
    for i in range(12):  # glints on the water
        y = horizon + (i + 1) * 0.028 * h
        draw.line([0.68 * w - i * 4, y, 0.84 * w + i * 4, y], fill=(220, 150, 100), width=SUPERSAMPLE)
    draw.polygon([(0.05 * w, h), (0.12 * w, 0.7 * h), (0.32 * w, 0.66 * h), (0.5 * w, 0.74 * h), (0.58 * w, h)],
                 fill=(50, 45, 45))
    base, top, x0, x1 = 0.69 * h, 0.27 * h, 0.22 * w, 0.36 * w
    stripes = 6
    for i in range(stripes):
        y_hi = base - (i + 1) * (base - top) / stripes
        y_lo = base - i * (base - top) / stripes
        shrink = lambda y: 0.035 * w * (base - y) / (base - top)  # noqa: E731  (the tower tapers)
        draw.polygon([(x0 + shrink(y_lo), y_lo), (x1 - shrink(y_lo), y_lo), (x1 - shrink(y_hi), y_hi),
                      (x0 + shrink(y_hi), y_hi)], fill=(235, 235, 230) if i % 2 == 0 else (190, 30, 35))
    lamp_x = (x0 + x1) / 2
    draw.rectangle([lamp_x - 0.05 * w, top - 0.05 * h, lamp_x + 0.05 * w, top], fill=(255, 240, 170))
    draw.polygon([(lamp_x - 0.07 * w, top - 0.05 * h), (lamp_x + 0.07 * w, top - 0.05 * h),
                  (lamp_x, top - 0.09 * h)], fill=(40, 40, 45))
    draw.polygon([(lamp_x, top - 0.03 * h), (w, top - 0.12 * h), (w, top + 0.04 * h)], fill=(255, 235, 170))
    return _finish(canvas, (width, height), seed=2)


def fruit(width=800, height=400):
    """A bowl of fruit on a wooden table against a dark wall (wide, 2:1)."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    pixels = _vertical_gradient(w, h, (45, 45, 55), (70, 65, 70))
    table = int(0.6 * h)
    wood = _vertical_gradient(w, h - table, (150, 100, 60), (110, 70, 40))
    grain = 8 * np.sin(np.arange(h - table)[:, None] * 0.35 + 3 * np.sin(np.arange(w)[None] / 90.0))
    pixels[table:] = wood + grain[..., None]
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    bowl_cx, bowl_top, bowl_w = 0.36 * w, 0.58 * h, 0.2 * w
    items = [(-0.55, -0.55, 0.08, (200, 40, 35)), (0.05, -0.75, 0.085, (240, 170, 30)),
             (0.6, -0.5, 0.075, (110, 170, 50)), (-0.2, -0.25, 0.08, (230, 120, 30)),
             (0.35, -0.2, 0.07, (150, 30, 90))]
    for dx, dy, r, colour in items:
        x, y, r = bowl_cx + dx * bowl_w, bowl_top + dy * 0.25 * h, r * h
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        highlight = tuple(min(255, c + 70) for c in colour)
        draw.ellipse([x - 0.55 * r, y - 0.6 * r, x - 0.15 * r, y - 0.25 * r], fill=highlight)
    draw.chord([bowl_cx - bowl_w, bowl_top - 0.16 * h, bowl_cx + bowl_w, bowl_top + 0.2 * h], 0, 180,
               fill=(210, 215, 225))
    draw.ellipse([bowl_cx - 0.3 * bowl_w, bowl_top + 0.17 * h, bowl_cx + 0.3 * bowl_w, bowl_top + 0.23 * h],
                 fill=(170, 175, 185))
    # A candle on the right, the only other thing on the table.
    cx = 0.8 * w
    draw.rectangle([cx - 0.02 * w, 0.42 * h, cx + 0.02 * w, 0.66 * h], fill=(240, 235, 215))
    draw.ellipse([cx - 0.008 * w, 0.36 * h, cx + 0.008 * w, 0.415 * h], fill=(255, 210, 90))
    return _finish(canvas, (width, height), seed=3)


SCENES = {"balloon": balloon, "lighthouse": lighthouse, "fruit": fruit}


def main():
    for name, draw_scene in SCENES.items():
        path = os.path.join(HERE, f"{name}.jpg")
        draw_scene().save(path, quality=88, optimize=True)
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
