"""Names of the languages patients most often prefer in the United States, by BCP-47 primary
subtag (the one place pages and reports look them up)."""

from __future__ import annotations

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "es": "Spanish", "zh": "Chinese", "vi": "Vietnamese", "tl": "Tagalog",
    "ar": "Arabic", "fr": "French", "ko": "Korean", "ru": "Russian", "ht": "Haitian Creole",
    "pt": "Portuguese", "de": "German", "hi": "Hindi", "pl": "Polish", "ja": "Japanese",
    "it": "Italian", "fa": "Persian", "so": "Somali", "ur": "Urdu", "bn": "Bengali",
    "km": "Khmer", "hmn": "Hmong", "ase": "American Sign Language",
}


def language_name(code: str | None) -> str:
    """Words for a language code (`es`, `es-MX`); the code itself when we have no name."""
    if not code:
        return ""
    return LANGUAGE_NAMES.get(code.split("-")[0].lower(), code)
