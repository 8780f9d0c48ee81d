"""The FRet build config: typed sections with defaults; YAML and `--a.b=value` flags only override them.

    corpus:   where the passages come from, how many seeds, the token budget
    llm:      which backend scores and generates (transformers | openai | fake)
    generate / filter / retrieve / rerank / select / export: one section per stage
    cache:    the SQLite file that remembers every LLM call
    shard:    which part of the seeds this process builds
    test_split: the seeds held out of training as a label-free BEIR test set
    tracking: whether the build logs itself to W&B (off by default)

Loading goes through one jsonargparse parser (`build_parser`), so `gecko build fret`, `load_config`
and any command that reads a build config check types, name `Literal` choices and print the same
`--help` (every key with its docstring below).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, set_parsing_settings

from gecko_lightning.errors import MissingPathError, UserError
from gecko_lightning.text_format import PRESETS


@dataclass
class CorpusConfig:
    """`corpus`: where the passages come from, how many seeds are drawn and their token budget."""

    path: str = "configs/assets/tiny_corpus/corpus.jsonl"
    """A JSONL, Parquet or CSV file with `_id` (or `id`), `title`, `text` (see `columns`); a local folder in
    the Hugging Face dataset layout; a Hub dataset name (streamed; read from the local cache offline); or a
    folder or glob (`docs/**/*.md`) of .txt, .md, .html and .pdf documents, cut into passages (`chunk_tokens`).
    A folder is read as documents unless it holds data files (.parquet, .jsonl, .json, .csv, .tsv, .arrow)."""
    config: str | None = None
    """Hub dataset configuration name (BEIR/mteb corpora live in the `corpus` config)."""
    split: str = "train"
    """Split to read when `path` is a Hugging Face dataset (a Hub name or a local folder in the Hub layout)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column map {id, title, text} -> the corpus's own column names, e.g. {id: doc_id, text: body}."""
    limit: int | None = None
    """Read only the first `limit` passages (the corpus that retrieval searches)."""
    num_seeds: int | None = None
    """Sample this many seed passages from the corpus (all when null; none when null and `queries` is set)."""
    seed: int = 0
    """Seeds the seed sampling, the few-shot rotation and `negative: random`."""
    max_passage_tokens: int = 256
    """Passages longer than this (LLM tokens; words for the fake/openai backends) are truncated."""
    include: list[str] | str = field(default_factory=list)
    """Documents: read only files matching this glob (or one of a list), relative to the folder: `**/*.md`, `guide/**`."""
    exclude: list[str] | str = field(default_factory=list)
    """Documents: leave out files matching this glob (or one of a list), relative to the folder: `**/CHANGELOG.md`."""
    chunk_tokens: int = 200
    """Documents: the most tokens of a passage's text, counted by `retrieve.embedder`'s tokenizer. 200 leaves
    room under `retrieve.max_length` (256) for the title (heading path) and special tokens, so the
    embedder sees each passage whole; lower it with `retrieve.max_length` (e.g. 100 for 128)."""
    chunk_overlap: int = 0
    """Documents: tokens a passage shares with the one before it. 0: an overlapping neighbour of the seed
    would hold part of the answer and make a false hard negative."""
    near_duplicates: bool = False
    """Documents: also drop passages whose text nearly repeats an earlier one (MinHash, `datasketch`), such as
    boilerplate footers and disclaimers; exact repeats are always dropped. Both are counted in the manifest."""
    near_duplicate_threshold: float = 0.8
    """Documents: estimated Jaccard similarity of word 3-grams from which `near_duplicates` drops a passage."""
    on_error: Literal["skip", "raise"] = "skip"
    """Documents: skip (and list in the manifest) a file that cannot be decoded or parsed, or raise an error."""
    queries: str | None = None
    """Your own queries, without labels (a search log, tickets, FAQ questions): a JSONL with `_id` (or `id`)
    and `text`, a TSV of id and text, or a text file of one query per line. Each retrieves over the corpus
    and the LLM scores its list as for a generated query; they replace generation unless `num_seeds` asks
    for generated queries too."""
    queries_task: str = "Given a search query, find the passage that answers it"
    """The task instruction of the `queries` (one line): the LLM's prompts and the embedder see it with each query."""
    max_query_tokens: int = 64
    """`queries` longer than this (LLM tokens; words for the fake/openai backends) are cut; the manifest counts them."""


@dataclass
class LLMConfig:
    """`llm`: the backend that generates queries and scores (QL, RC) candidates."""

    backend: Literal["transformers", "vllm", "openai", "fake"] = "transformers"
    """transformers (in-process) | vllm (vLLM's offline engine, in-process) | openai (any
    OpenAI-compatible server, e.g. `vllm serve`) | fake (a deterministic stand-in for tests)."""
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    """HF name, folder, `package:<python package>` (a folder shipped in a pip package) or the served model name."""
    gguf_file: str | None = None
    """GGUF file inside `model` (transformers de-quantizes it on load)."""
    tokenizer: str | None = None
    """Tokenizer folder or Hub name when it differs from `model`. openai: the served model's tokenizer
    (default: `model`, which for vLLM is the Hub name unless `--served-model-name` renamed it)."""
    random_init: bool = False
    """Build the model from its config with random weights (tiny smoke-test models only)."""
    dtype: str = "float32"
    """transformers and vllm: float32 | bfloat16 | float16 (vllm also takes `auto`)."""
    device: str = "auto"
    """transformers: auto (CUDA when present, else CPU) | cpu | cuda | cuda:N."""
    chat_template: bool = True
    """Wrap generation prompts in the tokenizer's chat template when it has one."""
    max_new_tokens: int = 48
    """Generation budget per seed: the task and query lines."""
    temperature: float = 0.0
    """0 is greedy; > 0 samples with a seed derived from the batch, so runs repeat exactly."""
    stop: list[str] = field(default_factory=lambda: ["\n\n"])
    """Generation stops at these strings (after the two answer lines), saving decode steps."""
    gen_batch_size: int = 8
    """transformers: generation prompts per padded batch (vllm/openai use `submit_size`)."""
    score_batch_size: int = 20
    """Sequences per forward pass when scoring; QL/RC of one query's N candidates fit in one or a few."""
    tensor_parallel_size: int = 1
    """vllm: GPUs one model is split over."""
    gpu_memory_utilization: float | None = None
    """vllm: fraction of GPU memory the engine may take (weights + KV cache); default 0.9. On CPU vLLM
    reads it as a fraction of RAM that must be free at start-up; default: 90 % of what is free then."""
    max_model_len: int | None = None
    """vllm: context length to reserve KV cache for (default: the model's own)."""
    enable_prefix_caching: bool = True
    """vllm: reuse the KV cache of shared prompt prefixes (few-shot headers, a query's candidates)."""
    score_from_prefix_cache: bool = False
    """Score QL and joint pairs on the KV cache of a prefix they share (with `rerank.group_by_passage`, a
    passage's pairs arrive together). vllm: let those requests read the prefix cache, which vLLM skips for
    prompt log-probs by default; a request whose cached prefix reaches into the query is scored again
    uncached. transformers: run a prefix that consecutive rows share once, their tails batched on it.
    Faster where passages recur (docs/benchmarks.md, "Re-ranking passage by passage"), but scores move by
    up to ~1.5e-5 nats against the full prompts', and their last bits then depend on which pairs shared a
    submission, so a sharded build equals the unsharded one in its choices, not bit for bit; off, scoring
    is as before."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """vllm: any other `vllm.LLM(...)` argument, e.g. {enforce_eager: true, quantization: fp8}."""
    submit_size: int = 1024
    """vllm/openai: prompts handed to the engine or server at once; results are cached per submission."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """openai: the server's base URL, up to `/v1`."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable that holds the API key (never put keys in configs)."""
    concurrency: int = 64
    """openai: requests in flight at once (one async client for the whole build)."""
    timeout_s: float = 60.0
    """openai: seconds before one request is abandoned (and retried)."""
    max_retries: int = 5
    """openai: retries of a call after a timeout, a connection error, malformed JSON or HTTP 408/409/429/5xx."""
    backoff_s: float = 1.0
    """openai: the first retry waits about this many seconds (jittered); each further retry about twice as long.
    A 429 or 503 with `Retry-After` waits what the server asks instead."""
    max_wait_s: float = 600.0
    """openai: the most seconds one call spends waiting between its retries; a server that asks for longer
    (Retry-After) fails the call now, and a re-run asks it again."""
    max_failures: int = 100
    """openai: calls that may still fail after `max_retries` in one stage before the build stops.
    Failed calls are not cached, counted in the manifest (`llm_failures`), and retried by a re-run."""
    ql_method: Literal["prompt_logprobs", "echo"] = "prompt_logprobs"
    """openai: `prompt_logprobs` (vLLM) or `echo` (echo + logprobs, for servers without it). Both
    send token ids and read the query's log-probs by position, so BOS never shifts them."""
    rc_top_logprobs: int = 20
    """openai: top-k asked for when the server ignores `logprob_token_ids` (not vLLM); a label
    outside the top k then scores below the k-th."""
    use_chat_endpoint: bool = False
    """openai generation through /v1/chat/completions (the server applies its template; vLLM's
    `continue_final_message` prefills the answer prefix) instead of client-rendered ids on /v1/completions."""
    fake_delay_s: float = 0.0
    """fake: sleep per batch (lets tests kill a run midway)."""


@dataclass
class GenerateConfig:
    """`generate`: the few-shot prompt that asks the LLM for a (task, query) per seed."""

    prompt: str = "generate-v1"
    """Prompt file name in `data_builders/prompts/` (or a path to a YAML prompt file)."""
    shots: int = 3
    """Few-shot examples per call, sampled per seed so no single example dominates."""
    task_types: list[str] | None = None
    """Sample only these task types of the prompt file (default: all of them)."""
    fallback: Literal["none", "extractive"] = "none"
    """none | extractive. `extractive` turns an unparseable output into a sentence-lookup query cut from
    the passage; only for smoke tests with a random tiny LM."""


@dataclass
class FilterConfig:
    """`filter`: optional consistency filters applied after retrieval."""

    round_trip_top_k: int | None = None
    """Keep a query only if its seed ranks within the top k of its own retrieval (Promptagator)."""


@dataclass
class RetrieveConfig:
    """`retrieve`: the embedder and index that find each query's top-N candidate passages."""

    embedder: str = "sentence-transformers/all-MiniLM-L6-v2"
    """HF/sentence-transformers folder or name, a `gecko export` folder, or `package:<pkg>/<sub>`."""
    random_init: bool = False
    """Build the embedder from its config with random weights (tiny test models only)."""
    max_length: int = 256
    """Token limit for queries and passages when embedding."""
    batch_size: int = 64
    """Texts per embedding batch."""
    top_n: int = 20
    """Candidates retrieved per query, the ones the LLM re-ranks (the paper: 20)."""
    prompts: Literal["model", "gecko", "none"] = "model"
    """model: as the embedder says, like `gecko eval --prompts model`: the text format it records (a `gecko
    export`), else the prompts its sentence-transformers config declares (before `query_format` /
    `doc_format`), else `query_format` / `doc_format` alone. gecko: the paper's templates. none: the two
    formats alone."""
    query_format: str = PRESETS["plain"]["query"]
    """How a query's `task` and `query` are joined into the text an embedder without a recorded format
    reads (the `plain` preset of gecko_lightning.text_format: FRet embeds the task with the query)."""
    doc_format: str = PRESETS["plain"]["document"]
    """How a passage's `title` and `text` are joined into the text an embedder without a recorded format reads."""
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    """flat (exact inner product) | ivf | hnsw."""
    nlist: int = 100
    """ivf: number of clusters."""
    nprobe: int = 10
    """ivf: clusters searched per query."""
    hnsw_m: int = 32
    """hnsw: neighbours per graph node."""
    device: str = "auto"
    """auto (CUDA when present, else CPU) | cpu | cuda | cuda:N: where the embedder runs."""
    index_dir: str | None = None
    """Folder of the corpus embedding and its search index (`--stage embed`, `--stage index`); every
    shard of a sharded build searches it. Default `<output_dir>/index`."""


@dataclass
class RerankConfig:
    """`rerank`: the QL and RC prompts whose ranks are fused (1/r_QL + 1/r_RC)."""

    mode: Literal["separate", "joint"] = "separate"
    """separate: QL and RC from their own prompts; joint: both from one forward pass (`joint_prompt`)."""
    ql_prompt: str = "ql-v1"
    """separate: the query-likelihood prompt (a name in `data_builders/prompts/` or a YAML path)."""
    rc_prompt: str = "rc-v1"
    """separate: the relevance-classification prompt."""
    joint_prompt: str = "qlrc-v1"
    """joint: the prompt that yields QL and RC from one forward pass."""
    group_by_passage: bool = True
    """vllm/openai (and fake): score the pairs of up to `group_window` queries passage by passage (RC
    prompts of separate mode query by query), so pairs that share a prompt prefix reach the engine
    together and its prefix cache prefills that prefix once. transformers: grouped only with
    `llm.score_from_prefix_cache`, in submissions of 256 pairs. Records and scores are the same either way
    (but for what `score_from_prefix_cache` moves); false: one submission per `llm.submit_size` pairs
    (transformers: one per query) in query order."""
    group_window: int = 500_000
    """Queries whose pairs are grouped together. A passage shares its prefix only with the pairs of its
    window: with seeds about as many as passages, a window of W queries holds about 20 W / corpus size
    of a passage's candidacies (docs/scaling.md), so larger shares more, and holds more pairs (a few
    hundred bytes each, on top of the retrieve rows) in memory."""


@dataclass
class SelectConfig:
    """`select`: which candidates become the positive and the hard negative (no LLM calls)."""

    positive: Literal["llm_top1", "ql_top1", "seed"] = "llm_top1"
    """llm_top1 (the fused QL+RC top candidate, the paper's) | ql_top1 (the top candidate by QL alone,
    for an LLM whose RC judgement is weak: measure it with `gecko eval rerank`) | seed."""
    negative: Literal["lowest", "random", "margin", "none"] = "lowest"
    """lowest (rank N) | random (another candidate) | margin (positive-aware: the candidate the embedder
    scores highest below `negative_margin` times the positive's score, none when no candidate is that far
    below; NV-Retriever's TopK-PercPos) | none."""
    negative_margin: float = 0.95
    """negative `margin`: a candidate is a negative only when the embedder scores it below this fraction of
    the positive's score (NV-Retriever: 0.95). In (0, 1]."""
    teacher_margin: float | None = None
    """Never take as the negative a candidate whose QL score (mean token log-likelihood of the query) is within
    this many nats of the positive's: the LLM finds the query nearly as likely from it, a probable false
    negative. Applies to every `negative` rule; the manifest counts the negatives it changed. null: off."""
    positive_margin: float | None = None
    """Keep a training record only when its positive's QL score leads every other candidate's by at least
    this many nats: where the LLM finds the query nearly as likely from another candidate, its choice is a
    coin toss and a wrong positive teaches the embedder the wrong order (a confidence filter, as
    Promptagator and Gecko drop the queries they cannot trust). Held-out queries are chosen before it, so
    the test split does not change; the manifest counts the records it dropped. null: keep every record."""


@dataclass
class ExportConfig:
    """`export`: how records are written into shards beside `manifest.json`."""

    shard_size: int = 100_000
    """Records per shard file."""
    format: Literal["jsonl", "jsonl.gz", "parquet"] = "jsonl"
    """jsonl | jsonl.gz | parquet."""


@dataclass
class CacheConfig:
    """`cache`: the SQLite file that remembers every LLM call."""

    path: str | None = None
    """SQLite file; default `<output_dir>/llm_cache.sqlite`. Share it between builds to reuse calls."""


@dataclass
class ShardConfig:
    """`shard`: split the seeds over independent processes (e.g. a Slurm array)."""

    index: int | None = None
    """This process builds shard `index` (0-based) of `count` into `<output_dir>/shard-I-of-N` (with
    `--stage embed`: embeds corpus slice `index`); default from the Slurm array, `$SLURM_ARRAY_TASK_ID`
    minus `$SLURM_ARRAY_TASK_MIN`."""
    count: int | None = None
    """Number of shards the seeds are split into; default `$SLURM_ARRAY_TASK_COUNT`. Unset outside an
    array job: one unsharded build in `output_dir`."""


@dataclass
class SplitConfig:
    """`test_split`: seeds held out of training and written as a BEIR folder, `<output_dir>/test/`.

    A seed is held out when a hash of its id falls below `fraction`, so the split depends on the id
    alone: shards, merges and `--from` re-selections hold out exactly the same seeds. Held-out seeds
    still go through generate, retrieve and rerank (their labels come from the LLM); only select and
    export treat them apart. See docs/fret.md, "The test split".
    """

    fraction: float = 0.2
    """Share of the seeds held out, in [0, 1); 0 turns the split off (the build of before, byte for byte).
    0.2 leaves about 30 test queries at the demo's 200 seeds."""
    relevance: Literal["graded", "seed"] = "graded"
    """graded: the seed passage scores 2, and a candidate that outranks the seed by both QL and RC scores 1 |
    seed: the seed passage alone, score 1."""


@dataclass
class TrackingConfig:
    """`tracking`: log the build to W&B (docs/tracking.md). It changes no file of the build and is not part
    of the build's identity: the manifest leaves it out, so turning it on reuses a finished build."""

    wandb: bool = False
    """Log a run of job_type `build`: the manifest's counts and timings as its summary, a table of sample
    records, and the build folder as a `dataset` artifact. Offline (under `<output_dir>/wandb/`) unless a
    W&B key is set; `gecko sync` uploads it later."""
    project: str = "gecko"
    """W&B project."""
    mode: Literal["online", "offline", "disabled"] | None = None
    """online | offline | disabled; null: $WANDB_MODE, else offline in CI or without an API key."""
    artifact: str | None = None
    """Name of the dataset artifact; default the build folder's name. W&B versions it by content."""
    table_rows: int = 100
    """Records in the table: the first ones in shard order (the seeds are sampled at random)."""
    reference_above_mb: float = 100.0
    """Files larger than this (MiB) are logged by `file://` reference (path, size and md5; no upload)."""


@dataclass
class BuildConfig:
    """One FRet build: the sections below, each a typed dataclass whose defaults YAML and flags override."""

    output_dir: str = "outputs/fret"
    """Where `stages/`, the record shards, `manifest.json` and (by default) the LLM cache go."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    test_split: SplitConfig = field(default_factory=SplitConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """What the build is: every section but `tracking`, which changes no file (the manifest stores this)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "tracking"}


# ---- loading: one jsonargparse parser for `gecko build fret`, `load_config` and other commands ----


class BuildParser(ArgumentParser):
    """jsonargparse's parser whose errors are one `UserError` line, not usage text and a bare exit."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        raise UserError(explain(self, message)) from ex

    def dump(self, cfg: Namespace, *args: Any, **kwargs: Any) -> str:
        """Only the `BuildConfig` keys: what a command adds says what to run, not what to build, so
        `--print_config` gives a file that `--config` of any command (and `load_config`) reads back."""
        keys = {f.name for f in dataclasses.fields(BuildConfig)}
        cfg = cfg.clone()
        for key in [k for k in vars(cfg) if k not in keys and not k.startswith("__")]:
            del cfg[key]
        return super().dump(cfg, *args, **kwargs)


def build_parser(prog: str, description: str) -> BuildParser:
    """A parser for every `BuildConfig` key, for `gecko build fret` and any command that reads a build config.

    It takes `--config FILE` (repeatable: later files override earlier ones), `--section.key=value`
    for every key (values parse as YAML: `--filter.round_trip_top_k=null`), `--print_config` (a YAML
    that `--config` reads back) and `--help`, which lists each key with its docstring. `Literal`
    keys name their choices. A command adds its own arguments to the parser, parses, and turns the
    namespace into a `BuildConfig` with `config_from`. Errors raise `UserError` (one line; `gecko`
    exits 2), not argparse's exit.
    """
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # the attribute docstrings are the help
    parser = BuildParser(prog=prog, description=description)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="A YAML build config (configs/data/); repeat it to layer files, later ones win.")
    parser.add_class_arguments(BuildConfig, fail_untyped=True)
    return parser


def _sections() -> dict[str, type]:
    hints = get_type_hints(BuildConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(BuildConfig) if dataclasses.is_dataclass(hints[f.name])}


def config_from(namespace: Namespace) -> BuildConfig:
    """The `BuildConfig` held by a namespace that a `build_parser` parser returned (other keys are ignored).

    The parser has already checked every value's type; a section given as a scalar (`select: 3` in
    YAML), which jsonargparse lets through, is refused here.
    """
    values = {}
    for f in dataclasses.fields(BuildConfig):
        value = namespace.get(f.name)
        if f.name in _sections():
            if not isinstance(value, Namespace):
                raise UserError(f"config section {f.name!r} must be a mapping of its keys, got {value!r}; "
                                f"e.g. {f.name}: {{...}} in YAML or --{f.name}.KEY=VALUE")
            value = _sections()[f.name](**value.as_dict())
        values[f.name] = value
    return BuildConfig(**values)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """A YAML file (or none) and then `overrides` -> a checked `BuildConfig`, as `gecko build fret` reads them.

    `overrides` maps dotted keys to values, e.g. {"select.positive": "seed", "filter.round_trip_top_k": None};
    unknown keys and values of the wrong type raise `UserError`, exactly as the command line does.
    """
    parser = build_parser("gecko build fret", "")
    if path is not None and not Path(path).is_file():
        raise MissingPathError(f"config file {str(path)!r} does not exist; see configs/data/ for examples")
    try:
        base = parser.parse_path(path) if path is not None else parser.get_defaults()
        config_from(base)  # a section written as a scalar is refused here, naming the file
    except UserError as e:
        raise UserError(f"{path}: {e}") from e
    tree = Namespace()
    for key, value in (overrides or {}).items():
        tree[key] = value  # a dotted key makes the nested sections
    return config_from(parser.parse_object(tree.as_dict(), namespace=base))


def _type_name(hint: Any) -> str:
    args = get_args(hint)
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if get_origin(hint) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "null"
    return str(hint).replace("typing.", "") if args else getattr(hint, "__name__", str(hint))


def _keys(parser: ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions if a.dest not in ("help", "config", "print_config")]


def explain(parser: ArgumentParser, message: str) -> str:
    """jsonargparse's message (often several lines) -> one line naming the key, the bad value and the fix."""
    key = re.match(r'Parser key "([^"]+)"', message)
    value = re.search(r"(?:Got value|Given value): (.*)$", message, re.M)
    action = key and next((a for a in parser._actions if a.dest == key[1]), None)
    if action is not None and value and getattr(action, "_typehint", None) is not None:
        return f"{key[1]}={value[1]!r} is not valid: expected {_type_name(action._typehint)}"
    unknown = (re.match(r"unrecognized arguments: (\S+)", message) or re.match(r"Option '([^']+)' is not accepted", message)
               or re.match(r"Group '([^']+)' does not accept option '([^']+)'", message))
    if unknown:
        name = unknown[1].lstrip("-").split("=")[0] if unknown.lastindex == 1 else f"{unknown[1]}.{unknown[2]}"
        close = difflib.get_close_matches(name, _keys(parser), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key or argument {name!r}{hint} ({parser.prog} --help lists every key)"
    return " ".join(message.split())
