"""English synonyms for rs-da (randomized smoothing by synonym substitution), from WordNet 3.0, offline.

The source: Princeton WordNet 3.0 as Debian's package `wordnet-base` installs it (/usr/share/wordnet, or
$STUDY_WORDNET_DIR), read through NLTK's WordNet reader. Huang et al. (EMNLP 2021) drew rs-da's synonyms from
counter-fitted word vectors (Mrksic et al., 2016); those are not available offline here, whereas WordNet is a
Debian package that CI installs like PostgreSQL. WordNet's synonym sets are the same kind of source that
PWWS-style word-substitution attacks use. Differences to keep in mind: WordNet synonyms are exact lemma
matches of a word's senses (all senses, no part-of-speech tagging, so a few are off-sense: "bank" ->
"depository"), and inflected forms have none (only words that are themselves a lemma are substituted).

`synonyms(word) -> tuple[str, ...]` is all this module offers to the training code (`trainables.attacks.
SynonymSubstitution`). Without WordNet files, `load_wordnet` raises DataError, one line naming the package.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

from study.errors import DataError

WORDNET_DIR_ENV = "STUDY_WORDNET_DIR"
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
REQUIRED_FILES = ("index.noun", "data.noun", "index.verb", "data.verb", "index.adj", "data.adj", "index.adv",
                  "data.adv")

# WordNet's lexicographer files (lexnames(5WN)): NLTK's reader needs this table, which Debian ships only as a
# man page. Each line: number, name, syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
            "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
            "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
            "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
            "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
            "adj.ppl").split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# Function words: WordNet lists senses for some ("a" -> "angstrom", "it" -> "information technology") that
# would turn a sentence into nonsense rather than a paraphrase.
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves one two three""".split())


def wordnet_dir() -> Path:
    """$STUDY_WORDNET_DIR, else /usr/share/wordnet (Debian's wordnet-base)."""
    return Path(os.environ.get(WORDNET_DIR_ENV) or DEFAULT_WORDNET_DIR)


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class DebianWordNetReader(WordNetCorpusReader):
        """NLTK's reader over Debian's files: the lexnames table comes from LEXNAMES, not a file."""

        def open(self, fileid):
            if fileid == "lexnames":
                return io.StringIO("".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n"
                                           for i, name in enumerate(LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version="wordnet"):
            return None  # no mapping to other WordNet versions (that is for multilingual data, unused here)

    return DebianWordNetReader


@functools.lru_cache(maxsize=4)
def load_wordnet(directory: str | None = None):
    """NLTK's WordNet reader over `directory` (default `wordnet_dir()`); DataError when the files are missing."""
    path = Path(directory) if directory else wordnet_dir()
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise DataError(f"WordNet not found in {path} (missing {missing[0]}); rs-da needs it: "
                        f"apt-get install wordnet-base, or set {WORDNET_DIR_ENV}")
    import warnings

    import nltk.data

    # NLTK (>= 3.9) reads only below its data paths: authorise this one directory
    if str(path) not in map(str, nltk.data.path):
        nltk.data.path.append(str(path))
    with warnings.catch_warnings():  # "multilingual functions are not available": we read English only
        warnings.simplefilter("ignore")
        return _reader_class()(str(path), None)


class WordNetSynonyms:
    """`synonyms(word)`: the single-word lemma names of the senses `word` is itself a lemma of, lower case,
    without the word; () for function words and words WordNet does not list. Cached per word."""

    def __init__(self, directory: str | None = None):
        self.directory = str(directory or wordnet_dir())
        self.reader = load_wordnet(self.directory)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one instance per trial, lives as long as the trial
    def synonyms(self, word: str) -> tuple[str, ...]:
        word = word.lower()
        if word in STOPWORDS or len(word) < 3 or not word.isalpha():
            return ()
        found = {lemma.lower() for synset in self.reader.synsets(word) if word in
                 (name.lower() for name in synset.lemma_names()) for lemma in synset.lemma_names()}
        return tuple(sorted(w for w in found if w.isalpha() and w != word))

    def __getstate__(self):  # the reader is rebuilt, not pickled (a trainable's state travels through Ray)
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])
