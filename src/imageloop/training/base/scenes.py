"""Scene attributes and the deterministic compositing of a subject into a 64x64 scene.

Each attribute is drawn so that it stays recognisable at 64x64 together with all the others, and in particular
after the colour mode has removed hue: place is a silhouette (skyline, conifers, sea line, peaks), time is the
sky's brightness plus stars and moon, lighting is a direction of light (warm from the left, cold from the right)
or letterbox bars with a rim light (cinematic), mood is a tone curve plus texture (bleak: dark and flat,
cheerful: bright and punchy, dreamy: bloom and bokeh), weather is streaks, flakes or a low mist.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

import numpy as np
from PIL import Image, ImageFilter

from imageloop.training.base.sprites import SUBJECT_KEYS, render_sprite

IMAGE_SIZE = 64


@dataclass(frozen=True)
class AttributeValue:
    """One value of an attribute with its English and Chinese phrasings (first = canonical)."""

    key: str
    en: tuple[str, ...]
    zh: tuple[str, ...]


def _v(key: str, en: tuple[str, ...], zh: tuple[str, ...]) -> AttributeValue:
    return AttributeValue(key, en, zh)


SCENE_ATTRIBUTES: dict[str, tuple[AttributeValue, ...]] = {
    "place": (
        _v("street", ("city street", "street", "city"), ("城市街道", "街道", "城市")),
        _v("forest", ("forest", "pine forest", "woods"), ("森林", "松树林", "树林")),
        _v("beach", ("beach", "seaside", "sea shore"), ("海滩", "海边", "沙滩")),
        _v("mountains", ("mountains", "snowy peaks", "mountain range"), ("山脉", "群山", "雪山")),
    ),
    "weather": (
        _v("clear", ("clear weather", "clear sky", "fine weather"), ("晴朗", "天气晴朗", "晴天")),
        _v("rain", ("rain", "raining", "rainy"), ("下雨", "雨天", "大雨")),
        _v("snow", ("snow", "snowing", "snowfall"), ("下雪", "雪天", "飘雪")),
        _v("fog", ("fog", "foggy", "misty"), ("雾", "大雾", "雾天")),
    ),
    "time": (
        _v("day", ("day", "daytime", "midday"), ("白天", "白昼", "中午")),
        _v("dusk", ("dusk", "sunset", "twilight"), ("黄昏", "日落", "傍晚")),
        _v("night", ("night", "at night", "night time"), ("夜晚", "夜里", "深夜")),
    ),
    "lighting": (
        _v("warm", ("warm lighting", "warm light", "warm glow"), ("暖光", "温暖的光线", "暖色灯光")),
        _v("cold", ("cold lighting", "cold light", "cool blue light"), ("冷光", "冰冷的光线", "冷色灯光")),
        _v("cinematic", ("cinematic lighting", "rim light", "cinematic"), ("电影感光线", "轮廓光", "电影感")),
    ),
    "colour": (
        _v("colour", ("full colour", "colorful", "color photo"), ("彩色", "全彩", "彩色照片")),
        _v("monochrome", ("monochrome", "black and white", "grayscale"), ("黑白", "单色", "黑白照片")),
        _v("sepia", ("sepia", "sepia tone", "vintage sepia"), ("棕褐色", "怀旧色调", "复古棕色")),
    ),
    "mood": (
        _v("bleak", ("bleak", "gloomy", "desolate"), ("荒凉", "阴郁", "凄凉")),
        _v("cheerful", ("cheerful", "joyful", "bright and happy"), ("欢快", "快乐", "明快")),
        _v("dreamy", ("dreamy", "dreamlike", "soft and dreamy"), ("梦幻", "如梦似幻", "朦胧梦幻")),
    ),
    "composition": (
        _v("closeup", ("close-up", "closeup", "close up shot"), ("特写", "近景特写", "大特写")),
        _v("wide", ("wide shot", "wide angle", "far away"), ("远景", "广角", "远处")),
        _v("left", ("on the left", "left side", "to the left"), ("在左边", "左侧", "位于左边")),
        _v("right", ("on the right", "right side", "to the right"), ("在右边", "右侧", "位于右边")),
    ),
}
ATTRIBUTE_KEYS: dict[str, tuple[str, ...]] = {
    "subject": SUBJECT_KEYS,
    **{name: tuple(v.key for v in values) for name, values in SCENE_ATTRIBUTES.items()},
}


@dataclass(frozen=True)
class SceneSpec:
    """What one image shows: a subject and one value of every scene attribute (all keys of ATTRIBUTE_KEYS)."""

    subject: str
    place: str
    weather: str
    time: str
    lighting: str
    colour: str
    mood: str
    composition: str

    def as_tuple(self) -> tuple[str, ...]:
        """The values in ATTRIBUTE_KEYS order."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def indices(self) -> tuple[int, ...]:
        """Each value's index in its attribute's ATTRIBUTE_KEYS tuple (the judge's class labels)."""
        return tuple(ATTRIBUTE_KEYS[f.name].index(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def from_indices(cls, idx: tuple[int, ...] | list[int]) -> SceneSpec:
        """Inverse of :meth:`indices`."""
        names = list(ATTRIBUTE_KEYS)
        return cls(**{n: ATTRIBUTE_KEYS[n][int(i)] for n, i in zip(names, idx, strict=True)})


ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SceneSpec))
assert tuple(ATTRIBUTE_KEYS) == ATTRIBUTE_NAMES

_SKY = {  # (top colour, bottom colour)
    "day": ((0.33, 0.58, 0.95), (0.72, 0.86, 1.0)),
    "dusk": ((0.30, 0.18, 0.48), (1.0, 0.55, 0.22)),
    "night": ((0.01, 0.02, 0.08), (0.06, 0.08, 0.22)),
}
_TIME_LIGHT = {"day": (1.0, 1.0, 1.0), "dusk": (0.95, 0.68, 0.55), "night": (0.28, 0.32, 0.48)}
_SUBJECT_LIGHT = {"day": (1.0, 1.0, 1.0), "dusk": (1.0, 0.82, 0.7), "night": (0.72, 0.74, 0.88)}
_LAYOUT = {  # composition -> (sprite max side, centre x, centre y)
    "closeup": (48, 32, 34),
    "wide": (20, 32, 44),
    "left": (30, 17, 38),
    "right": (30, 47, 38),
}


@cache
def _sprite_array(key: str, size: int) -> np.ndarray:
    sprite = render_sprite(key).copy()
    sprite.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(sprite, dtype=np.float32) / 255.0


def _vertical_gradient(top: tuple[float, ...], bottom: tuple[float, ...]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, IMAGE_SIZE, dtype=np.float32)[:, None, None]
    grad = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.broadcast_to(grad, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()


def _sky(time: str, rng: np.random.Generator) -> np.ndarray:
    img = _vertical_gradient(*_SKY[time])
    if time == "night":
        for _ in range(int(rng.integers(10, 18))):
            y, x = int(rng.integers(0, 28)), int(rng.integers(0, IMAGE_SIZE))
            img[y, x] = 0.95
        cx, cy = int(rng.integers(6, 58)), int(rng.integers(4, 12))
        yy, xx = np.ogrid[:IMAGE_SIZE, :IMAGE_SIZE]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = (0.98, 0.96, 0.82)
    return img


def _draw_place(img: np.ndarray, place: str, time: str, rng: np.random.Generator) -> None:
    horizon = int(rng.integers(38, 43))
    light = np.asarray(_TIME_LIGHT[time], np.float32)
    if place == "street":
        img[horizon:] = np.asarray((0.42, 0.42, 0.44)) * light
        img[horizon + 10 : horizon + 12, ::6] = np.asarray((0.95, 0.95, 0.9)) * light
        x = int(rng.integers(-4, 2))
        while x < IMAGE_SIZE:
            w, h = int(rng.integers(7, 13)), int(rng.integers(12, 30))
            shade = rng.uniform(0.35, 0.6)
            img[horizon - h : horizon, max(x, 0) : x + w] = np.asarray((shade * 1.1, shade * 0.85, shade * 0.8)) * light
            win = (1.0, 0.85, 0.35) if time != "day" else (0.75, 0.85, 0.95)
            img[horizon - h + 2 : horizon - 1 : 4, max(x + 2, 0) : x + w - 1 : 3] = win
            x += w + int(rng.integers(0, 3))
    elif place == "forest":
        img[horizon:] = np.asarray((0.2, 0.5, 0.18)) * light
        yy, xx = np.ogrid[:IMAGE_SIZE, :IMAGE_SIZE]
        for cx in range(int(rng.integers(-3, 3)), IMAGE_SIZE + 4, 7):
            h = int(rng.integers(14, 24))
            top = horizon - h
            tri = (yy >= top) & (yy <= horizon) & (np.abs(xx - cx) <= (yy - top) * 0.33)
            img[tri] = np.asarray((0.05, 0.3, 0.1)) * light
    elif place == "beach":
        shore = horizon + int(rng.integers(7, 11))
        img[horizon:shore] = np.asarray((0.1, 0.38, 0.7)) * light
        img[horizon:shore:3] *= 1.25
        img[shore:] = np.asarray((0.93, 0.82, 0.55)) * light
    else:  # mountains
        img[horizon:] = np.asarray((0.35, 0.45, 0.3)) * light
        yy, xx = np.ogrid[:IMAGE_SIZE, :IMAGE_SIZE]
        for cx in (int(rng.integers(4, 20)), int(rng.integers(26, 40)), int(rng.integers(46, 62))):
            top = int(rng.integers(8, 20))
            mount = (yy >= top) & (yy <= horizon) & (np.abs(xx - cx) <= (yy - top) * 1.1)
            img[mount] = np.asarray((0.38, 0.4, 0.5)) * light
            cap = mount & (yy <= top + 5)
            img[cap] = np.asarray((0.97, 0.97, 1.0)) * light
    np.clip(img, 0.0, 1.0, out=img)


def _place_subject(img: np.ndarray, spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """Composite the subject; return its alpha mask (H, W)."""
    size, cx, cy = _LAYOUT[spec.composition]
    size = int(size * rng.uniform(0.92, 1.08))
    sprite = _sprite_array(spec.subject, size)
    h, w = sprite.shape[:2]
    cx += int(rng.integers(-2, 3))
    cy += int(rng.integers(-2, 3))
    y0, x0 = cy - h // 2, cx - w // 2
    ys, xs = slice(max(y0, 0), min(y0 + h, IMAGE_SIZE)), slice(max(x0, 0), min(x0 + w, IMAGE_SIZE))
    part = sprite[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    alpha = part[..., 3:4]
    rgb = part[..., :3] * np.asarray(_SUBJECT_LIGHT[spec.time], np.float32)
    img[ys, xs] = img[ys, xs] * (1 - alpha) + rgb * alpha
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    mask[ys, xs] = alpha[..., 0]
    return mask


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out = np.maximum(out, np.roll(np.roll(mask, dy, 0), dx, 1))
    return out


def _apply_lighting(img: np.ndarray, lighting: str, mask: np.ndarray) -> np.ndarray:
    ramp = np.linspace(1.0, 0.0, IMAGE_SIZE, dtype=np.float32)[None, :, None]
    if lighting == "warm":  # light from the left, orange
        return np.asarray(img * (0.55 + 0.75 * ramp) * np.asarray((1.15, 0.95, 0.7), np.float32))
    if lighting == "cold":  # light from the right, blue
        return np.asarray(img * (0.55 + 0.75 * ramp[:, ::-1]) * np.asarray((0.72, 0.92, 1.2), np.float32))
    # cinematic: dark surroundings, a bright rim around the subject, vignette
    rim = np.clip(_dilate(mask, 1) - mask, 0.0, 1.0)[..., None]
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(np.float32) / (IMAGE_SIZE - 1) - 0.5
    vignette = (1.0 - 1.6 * (yy**2 + xx**2))[..., None]
    img = img * 0.8 * np.clip(vignette, 0.25, 1.0)
    return np.asarray(img * (1 - rim) + np.asarray((1.0, 0.98, 0.9), np.float32) * rim)


def _luma(img: np.ndarray) -> np.ndarray:
    return np.asarray(img @ np.asarray((0.299, 0.587, 0.114), np.float32))[..., None]


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pil.filter(ImageFilter.BoxBlur(r)), np.float32) / 255.0


def _apply_mood(img: np.ndarray, mood: str, rng: np.random.Generator) -> np.ndarray:
    lum = _luma(img)
    if mood == "bleak":  # dark, flat, drained
        img = lum * 0.7 + img * 0.3
        return (img - 0.5) * 0.65 + 0.5 - 0.12
    if mood == "cheerful":  # bright, saturated, punchy
        img = lum + (img - lum) * 1.7
        return (img - 0.5) * 1.25 + 0.5 + 0.1
    # dreamy: bloom, pastel haze, soft bokeh discs
    img = 0.45 * img + 0.55 * _box_blur(img, 2)
    img = 1 - (1 - img) * (1 - 0.3 * np.asarray((1.0, 0.8, 0.95), np.float32))
    yy, xx = np.ogrid[:IMAGE_SIZE, :IMAGE_SIZE]
    for _ in range(int(rng.integers(4, 7))):
        cx, cy, r = int(rng.integers(0, 64)), int(rng.integers(0, 64)), int(rng.integers(3, 6))
        disc = np.clip(1.0 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r, 0.0, 1.0)[..., None]
        img = img + (1.0 - img) * disc * 0.55
    return img


def _apply_weather(img: np.ndarray, weather: str, rng: np.random.Generator) -> np.ndarray:
    if weather == "rain":
        img = img * 0.85
        streak = np.asarray((0.75, 0.8, 0.9), np.float32)
        for _ in range(45):
            x, y = int(rng.integers(0, 70)), int(rng.integers(-4, 64))
            for k in range(6):
                yy, xx = y + k, x - k // 2
                if 0 <= yy < IMAGE_SIZE and 0 <= xx < IMAGE_SIZE:
                    img[yy, xx] = img[yy, xx] * 0.35 + streak * 0.65
    elif weather == "snow":
        for _ in range(55):
            x, y = int(rng.integers(0, 63)), int(rng.integers(0, 63))
            img[y : y + 1 + (rng.random() < 0.4), x : x + 2] = 0.97
    elif weather == "fog":
        t = np.linspace(0.25, 0.6, IMAGE_SIZE, dtype=np.float32)[:, None, None]
        img = img * (1 - t) + 0.78 * t
    return img


def _apply_colour(img: np.ndarray, colour: str) -> np.ndarray:
    if colour == "colour":
        return img
    lum = _luma(np.clip(img, 0.0, 1.0))
    if colour == "monochrome":
        return np.repeat(lum, 3, axis=2)
    sepia = lum * np.asarray((1.15, 0.85, 0.55), np.float32) + np.asarray((0.06, 0.03, 0.0))
    return np.asarray(np.clip(sepia, 0.0, 1.0))


def render_scene(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """Render ``spec`` as a (64, 64, 3) uint8 RGB image; the same spec and rng state give the same pixels."""
    return render_scene_and_mask(spec, rng)[0]


def render_scene_and_mask(spec: SceneSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_scene`'s image and the subject's alpha mask ((64, 64) float32 in [0, 1])."""
    img = _sky(spec.time, rng)
    _draw_place(img, spec.place, spec.time, rng)
    mask = _place_subject(img, spec, rng)
    img = _apply_lighting(img, spec.lighting, mask)
    img = _apply_mood(np.clip(img, 0, 1), spec.mood, rng)
    img = _apply_weather(np.clip(img, 0, 1), spec.weather, rng)
    img = _apply_colour(np.clip(img, 0, 1), spec.colour)
    if spec.lighting == "cinematic":  # letterbox bars survive every colour mode
        img[:7] = 0.0
        img[-7:] = 0.0
    return np.asarray((np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)), mask


def random_spec(rng: np.random.Generator) -> SceneSpec:
    """Draw every attribute uniformly."""
    return SceneSpec(**{name: keys[int(rng.integers(len(keys)))] for name, keys in ATTRIBUTE_KEYS.items()})
