"""Metadata for the 112 languages of the LASER Tatoeba test set, and the study's language groups.

Every language is paired with English in the data (``tatoeba.<code>-eng.<code>`` and
``tatoeba.<code>-eng.eng``). ``code`` is the code used in those file names; a few are macro or
legacy ISO 639-3 codes (``ber``, ``kur``, ``cmn``, ``wuu``, ``yue``, ``zsm``, ``lvs``, ``pes``,
``swh``, ``max``, ``kzj``, ``dtp``) and are kept exactly as in the files.

Fields
------
``script``
    The majority script of the non-English side *of the data files* (counted per letter with
    ``unicodedata``), not of the language in general. Mixed files: ``srp`` (69% Latin, 31%
    Cyrillic), ``uzb`` (68% Latin, 32% Cyrillic), ``lfn`` (73% Latin, 27% Cyrillic); ``kur`` is
    Kurmanji in Latin script; ``ber`` and ``kab`` are in Latin script (no Tifinagh); ``jpn`` is
    "Japanese" (kana + kanji); ``cmn``/``wuu``/``yue`` are "Han".
``family`` / ``branch``
    Top-level family and the first major subgroup under it (Glottolog/Ethnologue-style).
    ``eus`` is a "Language isolate"; ``epo``, ``ido``, ``ile``, ``ina``, ``lfn``, ``nov`` and
    ``tzl`` are "Constructed"; ``cbk`` (Chavacano) is "Creole".
``resource``
    Rule (reproducible, stated once): a language is ``"high"`` iff CC-100 -- the CommonCrawl
    corpus of XLM-R (Conneau et al., ACL 2020), as released at https://data.statmt.org/cc-100/ --
    has a file for that very language whose listed xz-compressed size is at least 1 GB
    ("G" in the release listing); otherwise ``"low"``. Languages that CC-100 does not list
    separately are ``"low"``; a Tatoeba code is matched only to the CC-100 file of the same
    language: ``pes`` -> fa, ``zsm`` -> ms, ``lvs`` -> lv, ``nob`` -> no, ``cmn`` -> zh-Hans.
    Varieties with their own language-ID label that CC-100 did not keep (``nno``, ``arz``,
    ``arq``, ``wuu``, ``yue``, ...) are "low" even though a related standard language is "high".
    Sizes near the threshold, for the record: kat 1.1G, aze 1.3G, sqi 1.3G, tam 1.3G,
    srp 1.5G, est 1.7G (high); kaz 889M, urd 884M, ben 860M, mal 831M, isl 779M, hye 776M,
    glg 708M, mkd 706M, tgl 701M, bel 692M (low). This gives 42 "high" and 70 "low".

Groups
------
``LOW_RESOURCE_GROUP`` (the study's target): 20 "low" languages with at least 200 test
sentences each, spread over 10 scripts and 9 families; constructed and historical languages are
excluded. (``amh``, the only Ethiopic-script language, has only 168 sentences and is left out;
pass it explicitly if wanted.) ``HIGH_RESOURCE_GROUP``: 6 "high" controls over 5 scripts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str
    family: str
    branch: str
    resource: str  # "high" | "low", see the module docstring for the rule


_TABLE: tuple[Language, ...] = (
    Language("afr", "Afrikaans", "Latin", "Indo-European", "Germanic", "low"),
    Language("amh", "Amharic", "Ethiopic", "Afro-Asiatic", "Semitic", "low"),
    Language("ang", "Old English", "Latin", "Indo-European", "Germanic", "low"),
    Language("ara", "Arabic", "Arabic", "Afro-Asiatic", "Semitic", "high"),
    Language("arq", "Algerian Arabic", "Arabic", "Afro-Asiatic", "Semitic", "low"),
    Language("arz", "Egyptian Arabic", "Arabic", "Afro-Asiatic", "Semitic", "low"),
    Language("ast", "Asturian", "Latin", "Indo-European", "Romance", "low"),
    Language("awa", "Awadhi", "Devanagari", "Indo-European", "Indo-Aryan", "low"),
    Language("aze", "Azerbaijani", "Latin", "Turkic", "Oghuz", "high"),
    Language("bel", "Belarusian", "Cyrillic", "Indo-European", "Slavic", "low"),
    Language("ben", "Bengali", "Bengali", "Indo-European", "Indo-Aryan", "low"),
    Language("ber", "Berber", "Latin", "Afro-Asiatic", "Berber", "low"),
    Language("bos", "Bosnian", "Latin", "Indo-European", "Slavic", "low"),
    Language("bre", "Breton", "Latin", "Indo-European", "Celtic", "low"),
    Language("bul", "Bulgarian", "Cyrillic", "Indo-European", "Slavic", "high"),
    Language("cat", "Catalan", "Latin", "Indo-European", "Romance", "high"),
    Language("cbk", "Chavacano", "Latin", "Creole", "Spanish-based creole", "low"),
    Language("ceb", "Cebuano", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("ces", "Czech", "Latin", "Indo-European", "Slavic", "high"),
    Language("cha", "Chamorro", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("cmn", "Mandarin Chinese", "Han", "Sino-Tibetan", "Sinitic", "high"),
    Language("cor", "Cornish", "Latin", "Indo-European", "Celtic", "low"),
    Language("csb", "Kashubian", "Latin", "Indo-European", "Slavic", "low"),
    Language("cym", "Welsh", "Latin", "Indo-European", "Celtic", "low"),
    Language("dan", "Danish", "Latin", "Indo-European", "Germanic", "high"),
    Language("deu", "German", "Latin", "Indo-European", "Germanic", "high"),
    Language("dsb", "Lower Sorbian", "Latin", "Indo-European", "Slavic", "low"),
    Language("dtp", "Central Dusun", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("ell", "Greek", "Greek", "Indo-European", "Hellenic", "high"),
    Language("epo", "Esperanto", "Latin", "Constructed", "International auxiliary", "low"),
    Language("est", "Estonian", "Latin", "Uralic", "Finnic", "high"),
    Language("eus", "Basque", "Latin", "Language isolate", "Basque", "low"),
    Language("fao", "Faroese", "Latin", "Indo-European", "Germanic", "low"),
    Language("fin", "Finnish", "Latin", "Uralic", "Finnic", "high"),
    Language("fra", "French", "Latin", "Indo-European", "Romance", "high"),
    Language("fry", "Western Frisian", "Latin", "Indo-European", "Germanic", "low"),
    Language("gla", "Scottish Gaelic", "Latin", "Indo-European", "Celtic", "low"),
    Language("gle", "Irish", "Latin", "Indo-European", "Celtic", "low"),
    Language("glg", "Galician", "Latin", "Indo-European", "Romance", "low"),
    Language("gsw", "Swiss German", "Latin", "Indo-European", "Germanic", "low"),
    Language("heb", "Hebrew", "Hebrew", "Afro-Asiatic", "Semitic", "high"),
    Language("hin", "Hindi", "Devanagari", "Indo-European", "Indo-Aryan", "high"),
    Language("hrv", "Croatian", "Latin", "Indo-European", "Slavic", "high"),
    Language("hsb", "Upper Sorbian", "Latin", "Indo-European", "Slavic", "low"),
    Language("hun", "Hungarian", "Latin", "Uralic", "Ugric", "high"),
    Language("hye", "Armenian", "Armenian", "Indo-European", "Armenian", "low"),
    Language("ido", "Ido", "Latin", "Constructed", "International auxiliary", "low"),
    Language("ile", "Interlingue", "Latin", "Constructed", "International auxiliary", "low"),
    Language("ina", "Interlingua", "Latin", "Constructed", "International auxiliary", "low"),
    Language("ind", "Indonesian", "Latin", "Austronesian", "Malayo-Polynesian", "high"),
    Language("isl", "Icelandic", "Latin", "Indo-European", "Germanic", "low"),
    Language("ita", "Italian", "Latin", "Indo-European", "Romance", "high"),
    Language("jav", "Javanese", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("jpn", "Japanese", "Japanese", "Japonic", "Japanese", "high"),
    Language("kab", "Kabyle", "Latin", "Afro-Asiatic", "Berber", "low"),
    Language("kat", "Georgian", "Georgian", "Kartvelian", "Karto-Zan", "high"),
    Language("kaz", "Kazakh", "Cyrillic", "Turkic", "Kipchak", "low"),
    Language("khm", "Khmer", "Khmer", "Austroasiatic", "Khmeric", "low"),
    Language("kor", "Korean", "Hangul", "Koreanic", "Korean", "high"),
    Language("kur", "Kurdish (Kurmanji)", "Latin", "Indo-European", "Iranian", "low"),
    Language("kzj", "Coastal Kadazan", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("lat", "Latin", "Latin", "Indo-European", "Italic", "low"),
    Language("lfn", "Lingua Franca Nova", "Latin", "Constructed", "International auxiliary", "low"),
    Language("lit", "Lithuanian", "Latin", "Indo-European", "Baltic", "high"),
    Language("lvs", "Latvian", "Latin", "Indo-European", "Baltic", "high"),
    Language("mal", "Malayalam", "Malayalam", "Dravidian", "South Dravidian", "low"),
    Language("mar", "Marathi", "Devanagari", "Indo-European", "Indo-Aryan", "low"),
    Language("max", "North Moluccan Malay", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("mhr", "Meadow Mari", "Cyrillic", "Uralic", "Mari", "low"),
    Language("mkd", "Macedonian", "Cyrillic", "Indo-European", "Slavic", "low"),
    Language("mon", "Mongolian", "Cyrillic", "Mongolic", "Central Mongolic", "low"),
    Language("nds", "Low German", "Latin", "Indo-European", "Germanic", "low"),
    Language("nld", "Dutch", "Latin", "Indo-European", "Germanic", "high"),
    Language("nno", "Norwegian Nynorsk", "Latin", "Indo-European", "Germanic", "low"),
    Language("nob", "Norwegian Bokmal", "Latin", "Indo-European", "Germanic", "high"),
    Language("nov", "Novial", "Latin", "Constructed", "International auxiliary", "low"),
    Language("oci", "Occitan", "Latin", "Indo-European", "Romance", "low"),
    Language("orv", "Old East Slavic", "Cyrillic", "Indo-European", "Slavic", "low"),
    Language("pam", "Kapampangan", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("pes", "Persian", "Arabic", "Indo-European", "Iranian", "high"),
    Language("pms", "Piedmontese", "Latin", "Indo-European", "Romance", "low"),
    Language("pol", "Polish", "Latin", "Indo-European", "Slavic", "high"),
    Language("por", "Portuguese", "Latin", "Indo-European", "Romance", "high"),
    Language("ron", "Romanian", "Latin", "Indo-European", "Romance", "high"),
    Language("rus", "Russian", "Cyrillic", "Indo-European", "Slavic", "high"),
    Language("slk", "Slovak", "Latin", "Indo-European", "Slavic", "high"),
    Language("slv", "Slovenian", "Latin", "Indo-European", "Slavic", "high"),
    Language("spa", "Spanish", "Latin", "Indo-European", "Romance", "high"),
    Language("sqi", "Albanian", "Latin", "Indo-European", "Albanian", "high"),
    Language("srp", "Serbian", "Latin", "Indo-European", "Slavic", "high"),
    Language("swe", "Swedish", "Latin", "Indo-European", "Germanic", "high"),
    Language("swg", "Swabian", "Latin", "Indo-European", "Germanic", "low"),
    Language("swh", "Swahili", "Latin", "Niger-Congo", "Bantu", "low"),
    Language("tam", "Tamil", "Tamil", "Dravidian", "South Dravidian", "high"),
    Language("tat", "Tatar", "Cyrillic", "Turkic", "Kipchak", "low"),
    Language("tel", "Telugu", "Telugu", "Dravidian", "South-Central Dravidian", "low"),
    Language("tgl", "Tagalog", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("tha", "Thai", "Thai", "Kra-Dai", "Tai", "high"),
    Language("tuk", "Turkmen", "Latin", "Turkic", "Oghuz", "low"),
    Language("tur", "Turkish", "Latin", "Turkic", "Oghuz", "high"),
    Language("tzl", "Talossan", "Latin", "Constructed", "Artistic", "low"),
    Language("uig", "Uyghur", "Arabic", "Turkic", "Karluk", "low"),
    Language("ukr", "Ukrainian", "Cyrillic", "Indo-European", "Slavic", "high"),
    Language("urd", "Urdu", "Arabic", "Indo-European", "Indo-Aryan", "low"),
    Language("uzb", "Uzbek", "Latin", "Turkic", "Karluk", "low"),
    Language("vie", "Vietnamese", "Latin", "Austroasiatic", "Vietic", "high"),
    Language("war", "Waray", "Latin", "Austronesian", "Malayo-Polynesian", "low"),
    Language("wuu", "Wu Chinese", "Han", "Sino-Tibetan", "Sinitic", "low"),
    Language("xho", "Xhosa", "Latin", "Niger-Congo", "Bantu", "low"),
    Language("yid", "Yiddish", "Hebrew", "Indo-European", "Germanic", "low"),
    Language("yue", "Cantonese", "Han", "Sino-Tibetan", "Sinitic", "low"),
    Language("zsm", "Standard Malay", "Latin", "Austronesian", "Malayo-Polynesian", "high"),
)

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in sorted(_TABLE, key=lambda x: x.code)}

# Study target: "low" languages, >= 200 sentences each, spread over scripts and families.
LOW_RESOURCE_GROUP: tuple[str, ...] = (
    "arz",  # Arabic script, Afro-Asiatic (Semitic)
    "ben",  # Bengali script, Indo-European (Indo-Aryan)
    "ceb",  # Latin, Austronesian
    "cym",  # Latin, Indo-European (Celtic)
    "eus",  # Latin, language isolate
    "gle",  # Latin, Indo-European (Celtic)
    "hye",  # Armenian script, Indo-European (Armenian)
    "jav",  # Latin, Austronesian
    "kab",  # Latin, Afro-Asiatic (Berber)
    "khm",  # Khmer script, Austroasiatic
    "kur",  # Latin, Indo-European (Iranian)
    "mal",  # Malayalam script, Dravidian
    "mar",  # Devanagari, Indo-European (Indo-Aryan)
    "mon",  # Cyrillic, Mongolic
    "swh",  # Latin, Niger-Congo (Bantu)
    "tat",  # Cyrillic, Turkic
    "tel",  # Telugu script, Dravidian
    "uig",  # Arabic script, Turkic
    "urd",  # Arabic script, Indo-European (Indo-Aryan)
    "yid",  # Hebrew script, Indo-European (Germanic)
)

# High-resource controls.
HIGH_RESOURCE_GROUP: tuple[str, ...] = ("deu", "fra", "rus", "cmn", "ara", "hin")

GROUPS: dict[str, tuple[str, ...]] = {
    "low": LOW_RESOURCE_GROUP,
    "high": HIGH_RESOURCE_GROUP,
    "all": tuple(LANGUAGES),
}


def resolve_languages(langs: str | list[str] | None = None, group: str | None = None) -> list[str]:
    """Return language codes from ``langs`` (comma-separated string or list) and/or ``group``.

    The group's codes come first, then ``langs``; order is preserved and duplicates removed.
    With neither given, the default is the low group followed by the high group.
    """
    codes: list[str] = []
    if group is not None:
        if group not in GROUPS:
            raise ValueError(f"unknown language group {group!r} (valid groups: {', '.join(GROUPS)})")
        codes.extend(GROUPS[group])
    if langs is not None:
        items = langs.split(",") if isinstance(langs, str) else list(langs)
        codes.extend(c.strip() for c in items if c.strip())
    if langs is None and group is None:
        codes = [*LOW_RESOURCE_GROUP, *HIGH_RESOURCE_GROUP]
    unknown = [c for c in dict.fromkeys(codes) if c not in LANGUAGES]
    if unknown:
        bad = ", ".join(repr(c) for c in unknown)
        noun = "code" if len(unknown) == 1 else "codes"
        raise ValueError(
            f"unknown language {noun} {bad} (valid: the 112 Tatoeba codes; see study.evaluation.languages.LANGUAGES)"
        )
    return list(dict.fromkeys(codes))


def in_group(langs, group: str) -> list[str]:
    """The codes of `langs` that belong to `group` ("low", "high" or "other"), in their order."""
    return [code for code in langs if group_of(code) == group]


def group_of(code: str) -> str:
    """``"low"`` / ``"high"`` for members of the default groups, else ``"other"``."""
    if code in LOW_RESOURCE_GROUP:
        return "low"
    if code in HIGH_RESOURCE_GROUP:
        return "high"
    return "other"
