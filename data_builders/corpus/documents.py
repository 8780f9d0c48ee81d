"""Documents as a corpus: which files a folder or a glob names, and each file's text split at its headings.

`corpus.path` may name a folder (read recursively) or a glob such as `docs/**/*.md`. The files read
are .txt, .md/.markdown, .html/.htm and .pdf, by extension; `corpus.include` / `corpus.exclude`
narrow the set. Each file becomes a `Document`: its path relative to the folder (or to the glob's
fixed part), a title, and `Section`s (heading path, text) that chunking.py cuts into passages.

Extraction is done by maintained libraries, one per job (docs/fret.md, "A folder of documents"):
python-frontmatter drops a Markdown file's front matter (and gives its `title`), markdown-it-py
finds the headings (a `#` line inside a code block is not one), trafilatura keeps an HTML page's main
text, as Markdown, without its navigation, menus and footers, and pypdf reads a PDF page by page
(the `[pdf]` extra). A folder that holds data files (Parquet, JSONL, CSV, ...) keeps being read as
a Hugging Face dataset folder, exactly as before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gecko_lightning.errors import UserError
from gecko_lightning.paths import resolve_path

from ..config import CorpusConfig

FORMATS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".pdf": "pdf"}
# A folder holding any of these is a dataset in the Hub layout (sources.py streams it with `datasets`).
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".tsv", ".arrow")
COMPRESSED = ("", ".gz", ".bz2", ".xz", ".zst", ".zip")  # datasets reads data files compressed too
GLOB_CHARS = ("*", "?", "[")


class Unreadable(Exception):
    """A file that cannot be decoded or parsed; the message is the one-line reason the manifest lists."""


@dataclass(frozen=True)
class Section:
    headings: tuple[str, ...]
    """The path of headings above the text, outermost first (empty before the first heading)."""
    text: str


@dataclass
class Document:
    rel: str
    """Path relative to the corpus folder, with `/` on every OS: the stable part of each passage id."""
    title: str | None
    sections: list[Section]


@dataclass
class Listing:
    """The files a documents corpus reads, in sorted relative-path order, and what it passed over."""

    root: Path
    files: list[tuple[str, Path]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    """Reason -> files: `unsupported_extension` or `excluded` (by corpus.include / corpus.exclude)."""
    other_extensions: Counter = field(default_factory=Counter)


def _is_glob(path: str) -> bool:
    return any(c in path for c in GLOB_CHARS) and not Path(path).expanduser().exists()


def _visible(root: Path, pattern: str) -> dict[str, Path]:
    """Relative posix path -> file, for the files `pattern` matches under `root`, hidden ones (`.git`) left out."""
    found = {f.relative_to(root).as_posix(): f for f in root.glob(pattern) if f.is_file()}
    return {rel: f for rel, f in found.items() if not any(part.startswith(".") for part in rel.split("/"))}


def _holds_data_files(folder: Path) -> bool:
    names = (rel.rsplit("/", 1)[-1].lower() for rel in _visible(folder, "**/*"))
    return any(n.removesuffix(z).endswith(DATA_SUFFIXES) for n in names for z in COMPRESSED)


def reads_documents(cfg: CorpusConfig) -> bool:
    """Whether `cfg.path` is a documents corpus: a glob, or a folder without data files (or one with
    corpus.include / corpus.exclude set). A Hub-layout folder (Parquet, JSONL, CSV ...) is not."""
    if _is_glob(cfg.path):
        return True
    path = Path(resolve_path(cfg.path)).expanduser()
    return path.is_dir() and (bool(cfg.include or cfg.exclude) or not _holds_data_files(path))


def _root_and_pattern(cfg: CorpusConfig) -> tuple[Path, str]:
    """A folder: itself and `**/*`. A glob: its leading part without wildcards and the rest."""
    path = Path(resolve_path(cfg.path)).expanduser()
    if path.is_dir():
        return path, "**/*"
    parts = path.parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
    root = Path(*parts[:first]) if first else Path(".")
    if not root.is_dir():
        raise UserError(f"corpus.path {cfg.path!r}: folder {str(root)!r} does not exist; give an existing folder "
                        f"or a glob inside one, e.g. docs/**/*.md")
    return root, "/".join(parts[first:])


def _globbed(root: Path, patterns: list[str] | str) -> set[Path]:
    return {f for pattern in ([patterns] if isinstance(patterns, str) else patterns) for f in root.glob(pattern)}


def list_documents(cfg: CorpusConfig) -> Listing:
    """Every file `cfg` reads, sorted by relative path so ids and order agree on every machine.

    Hidden files and folders (`.git`, `.cache`) are left out, as the corpus fingerprint leaves them out.
    """
    root, pattern = _root_and_pattern(cfg)
    listing = Listing(root)
    include = _globbed(root, cfg.include) if cfg.include else None
    exclude = _globbed(root, cfg.exclude)
    found = _visible(root, pattern)
    for rel in sorted(found):
        path = found[rel]
        if path.suffix.lower() not in FORMATS:
            listing.skipped["unsupported_extension"] += 1
            listing.other_extensions[path.suffix.lower() or "(none)"] += 1
        elif (include is not None and path not in include) or path in exclude:
            listing.skipped["excluded"] += 1
        else:
            listing.files.append((rel, path))
    return listing


def read_document(rel: str, path: Path) -> Document:
    """The file's title and sections; raises `Unreadable` with the reason when it can't be read."""
    kind = FORMATS[path.suffix.lower()]
    if kind == "pdf":
        return _pdf(rel, path)
    data = path.read_bytes()
    if b"\0" in data:
        raise Unreadable("binary data (NUL bytes), not text")
    if kind == "html":
        return _html(rel, data)
    text = _utf8(data)
    if kind == "markdown":
        return _markdown(rel, text)
    text = unwrap(text)
    return Document(rel, None, [Section((), text)] if text else [])


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Unreadable(f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8") from None


def _markdown(rel: str, text: str) -> Document:
    import frontmatter

    try:
        post = frontmatter.loads(text)
    except Exception as e:  # noqa: BLE001  (the YAML/TOML parsers raise their own error types)
        raise Unreadable(f"malformed front matter ({' '.join(str(e).split())})") from None
    title = post.metadata.get("title")
    return Document(rel, str(title) if title else None, markdown_sections(post.content))


def markdown_sections(text: str) -> list[Section]:
    """Text between headings, each with its heading path. markdown-it-py finds the blocks: headings (ATX
    and setext, never a `#` line in a code block) go into the path, a paragraph's wrapped lines are joined
    (so a break between them is no better than a space), and other blocks (lists, code, tables) stay as written."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    lines = text.splitlines(keepends=True)
    sections, stack, blocks = [], [], []
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.nesting == -1 or tok.map is None or tok.type == "hr":
            continue
        if tok.type == "heading_open":
            _add(sections, stack, blocks)
            level, blocks = int(tok.tag[1]), []
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, tokens[i + 1].content.strip())]
        elif tok.type == "paragraph_open":
            blocks.append(" ".join(tokens[i + 1].content.split("\n")))
        else:
            blocks.append("".join(lines[tok.map[0] : tok.map[1]]).rstrip())
    _add(sections, stack, blocks)
    return sections


def _add(sections: list[Section], stack: list[tuple[int, str]], blocks: list[str]) -> None:
    text = "\n\n".join(b for b in blocks if b.strip()).strip()
    if text:
        sections.append(Section(tuple(h for _, h in stack if h), text))


def unwrap(text: str) -> str:
    """Paragraphs (split at blank lines) with their lines joined by a space: a text or PDF page wraps
    lines for the eye, and a chunk break should fall at a sentence end, not at a line wrap."""
    paragraphs, lines = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            lines.append(line.strip())
        elif lines:
            paragraphs.append(" ".join(lines))
            lines = []
    return "\n\n".join(paragraphs)


def _html(rel: str, data: bytes) -> Document:
    """The page's main text as Markdown (headings kept as `#` lines for the sections); its `<title>`."""
    import lxml.html
    import trafilatura

    try:
        main = trafilatura.extract(data, output_format="markdown", include_formatting=True, include_tables=True,
                                   include_comments=False, include_images=False, include_links=False)
        title = lxml.html.fromstring(data).findtext(".//title")
    except Exception as e:  # noqa: BLE001  (lxml and trafilatura raise many types on broken markup)
        raise Unreadable(f"unparseable HTML ({type(e).__name__}: {' '.join(str(e).split())})") from None
    title = " ".join(title.split()) if title else None
    return Document(rel, title or None, markdown_sections(main or ""))


def _pdf(rel: str, path: Path) -> Document:
    """Each page's text, pages joined by a blank line so a paragraph's break stays a paragraph break."""
    try:
        from pypdf import PdfReader
    except ImportError:
        raise UserError(f"{path}: reading PDF files needs pypdf: pip install 'gecko-lightning[pdf]'") from None
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):  # an empty user password opens owner-only locks
            raise Unreadable("encrypted PDF (it needs a password); decrypt it or leave it out")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except Unreadable:
        raise
    except Exception as e:  # noqa: BLE001  (pypdf raises PdfReadError, but also KeyError/ValueError on damage)
        raise Unreadable(f"unreadable PDF ({type(e).__name__}: {' '.join(str(e).split())})") from None
    text = "\n\n".join(unwrap(p) for p in pages if p.strip())
    return Document(rel, str(title).strip() or None if title else None, [Section((), text)] if text else [])
