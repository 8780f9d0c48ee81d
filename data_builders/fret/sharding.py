"""Sharded FRet builds: which seeds a shard builds and where it writes (merging them: `merge.py`).

`corpus.num_seeds` seeds are sampled from the whole corpus first, then cut into `shard.count`
contiguous runs of whole generate batches (`llm.gen_batch_size` in-process, `llm.submit_size` for
vllm/openai), balanced to within one batch. A batch is the unit because a batch's results may depend on
its members (sampling is seeded per batch; padded kernels round per shape): a shard sends the LLM,
the embedder and the search exactly the batches the unsharded build sends, so the merged shards equal
the unsharded build. Shard I of N writes `<output_dir>/shard-I-of-N/` (I zero-padded), with its own
LLM cache and manifest; every shard searches the one corpus index of `--stage embed` / `--stage index`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gecko_lightning.errors import UserError

from ..config import BuildConfig, ShardConfig
from ..corpus import block_range


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None:
        if default is None:
            raise UserError(f"{name} is unset but SLURM_ARRAY_TASK_ID={env.get('SLURM_ARRAY_TASK_ID')} is set; "
                            f"pass --shard.index and --shard.count explicitly")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not an integer; pass --shard.index and --shard.count explicitly") from None


def slurm_array_shard(env: Mapping[str, str]) -> tuple[int, int]:
    """(index, count) of this Slurm array task: ids need not start at 0 (`--array=1-8`) or step by 1."""
    task, count = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    low, step = _env_int(env, "SLURM_ARRAY_TASK_MIN", 0), _env_int(env, "SLURM_ARRAY_TASK_STEP", 1)
    high = _env_int(env, "SLURM_ARRAY_TASK_MAX", low + (count - 1) * step)
    index, off_step = divmod(task - low, step) if step > 0 else (-1, 0)
    if count < 1 or high != low + (count - 1) * step:
        raise UserError(f"the Slurm array ids are not a range: SLURM_ARRAY_TASK_MIN={low}, _MAX={high}, _STEP={step}, "
                        f"_COUNT={count} (an id list such as --array=1,4,9 has no shard numbering); submit "
                        f"--array=0-{max(count, 1) - 1}, or pass --shard.index and --shard.count explicitly")
    if off_step or not 0 <= index < count:
        raise UserError(f"SLURM_ARRAY_TASK_ID={task} is not one of the array's {count} ids {low}..{high} "
                        f"(step {step}); pass --shard.index and --shard.count explicitly")
    return index, count


def resolve_shard(cfg: BuildConfig, env: Mapping[str, str] | None = None) -> BuildConfig:
    """`cfg` with `shard.index` and `shard.count` set, from the Slurm array when not given; both None is unsharded.

    Explicit values win. `--shard.count N` alone takes the index from the array, which must then have N tasks.
    """
    env = os.environ if env is None else env
    index, count = cfg.shard.index, cfg.shard.count
    if index is None and "SLURM_ARRAY_TASK_ID" in env:
        index, array_count = slurm_array_shard(env)
        if count is not None and count != array_count:
            raise UserError(f"shard.count={count} but this Slurm array has {array_count} tasks; submit "
                            f"--array=0-{count - 1} or drop --shard.count")
        count = array_count
    if index is None and count is None:
        return cfg
    for key, value in (("index", index), ("count", count)):
        if value is None or isinstance(value, bool) or not isinstance(value, int):
            other = "count" if key == "index" else "index"
            raise UserError(f"shard.{key}={value!r}: a sharded build needs both shard.index and shard.count as "
                            f"integers (got shard.{other}={count if key == 'index' else index!r})")
    if count < 1 or not 0 <= index < count:
        raise UserError(f"shard.index={index}, shard.count={count}: the index must be in 0..count-1 and count >= 1")
    return dataclasses.replace(cfg, shard=ShardConfig(index=index, count=count))


def shard_name(index: int, count: int) -> str:
    """`shard-03-of-16`: zero-padded so the folders list in shard order."""
    return f"shard-{index:0{len(str(count - 1))}d}-of-{count}"


def shard_dir(cfg: BuildConfig) -> Path:
    """Where this build writes: `output_dir`, or `output_dir/shard-I-of-N` for a shard (cfg as `resolve_shard` left it)."""
    out = Path(cfg.output_dir)
    return out if cfg.shard.count is None else out / shard_name(cfg.shard.index, cfg.shard.count)


def shard_seeds(seeds: list[str], unit: int, shard: ShardConfig) -> tuple[list[str], dict[str, Any] | None]:
    """This shard's run of the sampled `seeds` (all of them unsharded) and what its manifest records about it."""
    if shard.count is None:
        return seeds, None
    lo, hi = block_range(len(seeds), unit, shard.index, shard.count)
    mine = seeds[lo:hi]
    digest = hashlib.sha256(json.dumps(mine, ensure_ascii=False).encode("utf-8")).hexdigest()
    return mine, {"index": shard.index, "count": shard.count, "seed_range": [lo, hi], "total_seeds": len(seeds),
                  "batch": unit, "seeds_sha256": digest}
