"""FRet itself: the stages, the context they share, the runner, sharding, merging and re-selection.

Lives here, bottom to top: `sharding` (which seeds a shard builds, where it writes), `context`
(`Context`: config, output folder, LLM cache, the lazily built LLM), `stages` (generate, retrieve,
rerank, select: each a function of a `Context`), `runner` (runs the stages in order, exports the
records and the manifest), then `merge` (joins finished shards through the runner) and `reselect`
(`--from`: select and export again over a finished build).
May import: `index`, `prompts`, `llm`, `corpus`, `config` and `gecko_lightning`; never the commands
(`cli`, `judge`, `hub_card`). Inside, imports go up this list only: stages never import the runner.
"""
