"""Language tags of subtitles: sidecar names say ``en``, ``en-US`` or ``eng``; Matroska and MP4 streams
say ``eng`` or ``und``. Tags are compared on their primary language, with the common ISO 639-2 codes
(bibliographic and terminological) mapped to their ISO 639-1 code, so that ``en``, ``en-GB``, ``eng``
and ``English`` all match a preference for ``"en"``."""

from __future__ import annotations

from collections.abc import Sequence

# ISO 639-1 code -> ISO 639-2 codes (B and T) and the English name, for the languages subtitles most
# often come in. Other tags are compared as written (lowercase primary subtag).
_LANGUAGES: dict[str, tuple[str, ...]] = {
    "ar": ("ara", "arabic"), "bg": ("bul", "bulgarian"), "bn": ("ben", "bengali"),
    "ca": ("cat", "catalan"), "cs": ("cze", "ces", "czech"), "da": ("dan", "danish"),
    "de": ("ger", "deu", "german"), "el": ("gre", "ell", "greek"), "en": ("eng", "english"),
    "es": ("spa", "spanish"), "et": ("est", "estonian"), "eu": ("baq", "eus", "basque"),
    "fa": ("per", "fas", "persian"), "fi": ("fin", "finnish"), "fr": ("fre", "fra", "french"),
    "he": ("heb", "hebrew"), "hi": ("hin", "hindi"), "hr": ("hrv", "croatian"),
    "hu": ("hun", "hungarian"), "id": ("ind", "indonesian"), "is": ("ice", "isl", "icelandic"),
    "it": ("ita", "italian"), "ja": ("jpn", "japanese"), "ko": ("kor", "korean"),
    "lt": ("lit", "lithuanian"), "lv": ("lav", "latvian"), "ms": ("may", "msa", "malay"),
    "nl": ("dut", "nld", "dutch"), "no": ("nor", "nob", "nno", "nb", "nn", "norwegian"),
    "pl": ("pol", "polish"), "pt": ("por", "portuguese"), "ro": ("rum", "ron", "romanian"),
    "ru": ("rus", "russian"), "sk": ("slo", "slk", "slovak"), "sl": ("slv", "slovenian"),
    "sr": ("srp", "serbian"), "sv": ("swe", "swedish"), "ta": ("tam", "tamil"), "th": ("tha", "thai"),
    "tl": ("tgl", "fil", "tagalog", "filipino"), "tr": ("tur", "turkish"), "uk": ("ukr", "ukrainian"),
    "ur": ("urd", "urdu"), "vi": ("vie", "vietnamese"), "zh": ("chi", "zho", "chinese"),
}
_ALIASES: dict[str, str] = {alias: code for code, aliases in _LANGUAGES.items() for alias in aliases}
UNDETERMINED = frozenset({"", "und", "unk", "mis", "mul", "zxx", "xx"})
"""Tags that say nothing about the language (ISO 639-2 ``und`` and friends)."""


def normalize_language(tag: str | None) -> str | None:
    """The primary language of a tag as a comparable code (``"en-US"`` -> ``"en"``, ``"ger"`` ->
    ``"de"``); None for no tag or an undetermined one (``und``)."""
    if tag is None:
        return None
    primary = tag.strip().replace("_", "-").split("-")[0].lower()
    if primary in UNDETERMINED:
        return None
    return _ALIASES.get(primary, primary)


def is_language_tag(tag: str) -> bool:
    """Whether a dot-separated part of a subtitle file name reads as a language tag (``en``, ``pt-BR``,
    ``eng``, ``zh-Hans``, or a known language name)."""
    parts = tag.replace("_", "-").split("-")
    primary = parts[0].lower()
    if primary in _ALIASES or primary in _LANGUAGES:
        return True
    if not (2 <= len(primary) <= 3 and primary.isalpha()):
        return False
    return all(1 < len(p) <= 8 and p.isalnum() for p in parts[1:])


def language_rank(tag: str | None, preferred: Sequence[str] | None) -> int:
    """Position of ``tag``'s language in ``preferred`` (0 = most wanted); ``len(preferred)`` for an
    unknown language and ``len(preferred) + 1`` for any other. Without a preference every tag ranks 0."""
    if not preferred:
        return 0
    wanted = [normalize_language(p) for p in preferred]
    lang = normalize_language(tag)
    if lang is None:
        return len(wanted)
    return wanted.index(lang) if lang in wanted else len(wanted) + 1
