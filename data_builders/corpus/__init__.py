"""The corpus: reading every source, sampling seeds, fingerprints, and the JSONL files stages share.

Lives here: `sources` (local JSONL/Parquet/CSV files, Hub names and Hub-layout folders, validated
row by row), `documents` and `chunking` (a folder or glob of .txt/.md/.html/.pdf files, extracted and
cut into passages by the embedder's tokenizer), `seeds` (seed sampling, truncation, balanced block ranges), `fingerprint` (sha256 of a
corpus or a file, as manifests record them) and `files` (atomic JSON/JSONL writes).
May import: `data_builders.config` and `gecko_lightning`; never `llm`, `index`, `fret` or the commands.
"""

from .files import read_jsonl, write_json, write_jsonl
from .fingerprint import corpus_fingerprint, file_sha256, update_from_file
from .seeds import block_range, sample_seeds, truncate_corpus
from .sources import load_corpus

__all__ = ["block_range", "corpus_fingerprint", "file_sha256", "load_corpus", "read_jsonl", "sample_seeds",
           "truncate_corpus", "update_from_file", "write_json", "write_jsonl"]
