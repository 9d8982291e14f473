"""Subjects of the embedded model's dataset: colour emoji glyphs from Debian's ``fonts-noto-color-emoji``.

Noto Color Emoji is a bitmap (CBDT) font, so Pillow can only draw it at its native size 109 with
``embedded_color=True``; each glyph is cropped to its bounding box and cached as an RGBA sprite.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from imageloop.errors import TrainingError

NOTO_EMOJI_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"),
)
NOTO_EMOJI_SIZE = 109  # the only size the CBDT strike supports
FONT_HINT = "install it with: apt-get install -y fonts-noto-color-emoji"


@dataclass(frozen=True)
class Subject:
    """One subject kind: its emoji, category, English names (first = canonical) and Chinese names."""

    key: str
    emoji: str
    category: str
    en: tuple[str, ...]
    zh: tuple[str, ...]


SUBJECTS: tuple[Subject, ...] = (
    Subject("elephant", "\U0001f418", "animal", ("elephant", "grey elephant"), ("大象",)),
    Subject("penguin", "\U0001f427", "animal", ("penguin",), ("企鹅",)),
    Subject("fox", "\U0001f98a", "animal", ("fox", "red fox"), ("狐狸",)),
    Subject("frog", "\U0001f438", "animal", ("frog", "green frog"), ("青蛙",)),
    Subject("police_officer", "\U0001f46e", "person", ("police officer", "policeman", "cop"), ("警察",)),
    Subject("santa", "\U0001f385", "person", ("santa claus", "santa"), ("圣诞老人",)),
    Subject("princess", "\U0001f478", "person", ("princess",), ("公主",)),
    Subject("wizard", "\U0001f9d9", "person", ("wizard", "mage"), ("巫师", "魔法师")),
    Subject("balloon", "\U0001f388", "object", ("balloon", "red balloon"), ("气球",)),
    Subject("guitar", "\U0001f3b8", "object", ("guitar",), ("吉他",)),
    Subject("alarm_clock", "\u23f0", "object", ("alarm clock", "clock"), ("闹钟",)),
    Subject("books", "\U0001f4da", "object", ("books", "stack of books"), ("书", "一摞书")),
    Subject("house", "\U0001f3e0", "building", ("house", "small house"), ("房子", "小房子")),
    Subject("castle", "\U0001f3f0", "building", ("castle",), ("城堡",)),
    Subject("church", "\u26ea", "building", ("church", "chapel"), ("教堂",)),
    Subject("tent", "\u26fa", "building", ("tent", "camping tent"), ("帐篷",)),
    Subject("apple", "\U0001f34e", "food", ("apple", "red apple"), ("苹果",)),
    Subject("banana", "\U0001f34c", "food", ("banana",), ("香蕉",)),
    Subject("pizza", "\U0001f355", "food", ("pizza", "slice of pizza"), ("披萨", "比萨饼")),
    Subject("cake", "\U0001f370", "food", ("cake", "slice of cake"), ("蛋糕",)),
    Subject("car", "\U0001f697", "vehicle", ("car", "red car"), ("汽车", "小汽车")),
    Subject("bicycle", "\U0001f6b2", "vehicle", ("bicycle", "bike"), ("自行车",)),
    Subject("rocket", "\U0001f680", "vehicle", ("rocket",), ("火箭",)),
    Subject("sailboat", "\u26f5", "vehicle", ("sailboat", "sailing boat"), ("帆船",)),
)
SUBJECT_KEYS: tuple[str, ...] = tuple(s.key for s in SUBJECTS)
SUBJECTS_BY_KEY: dict[str, Subject] = {s.key: s for s in SUBJECTS}


def find_emoji_font() -> Path | None:
    """Return the path of the Noto Color Emoji font if it is installed, else None."""
    return next((p for p in NOTO_EMOJI_PATHS if p.is_file()), None)


@cache
def _font() -> ImageFont.FreeTypeFont:
    path = find_emoji_font()
    if path is None:
        raise TrainingError(f"the Noto Color Emoji font is not installed; {FONT_HINT}")
    return ImageFont.truetype(str(path), NOTO_EMOJI_SIZE)


@cache
def render_sprite(key: str) -> Image.Image:
    """Render subject ``key`` as an RGBA image cropped to its visible pixels (about 110-136 px wide).

    Raises TrainingError if the font is missing or the glyph renders empty (an emoji the font lacks).
    """
    subject = SUBJECTS_BY_KEY[key]
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((10, 10), subject.emoji, font=_font(), embedded_color=True)
    bbox = canvas.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if bbox is None:
        raise TrainingError(f"emoji for subject {key!r} rendered empty; the installed emoji font lacks it")
    return canvas.crop(bbox)
