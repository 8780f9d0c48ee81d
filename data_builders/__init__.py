"""Build FRet: LLM-generated (task, query) pairs, re-ranked neighbours, written as training records.

One subpackage or module per concept; imports only go down this list (import-linter checks it,
see `[tool.importlinter]` in pyproject.toml):

    cli, judge, hub_card,   the commands: `gecko build fret`, `gecko eval rerank`, the Hub dataset card,
    chunk                   `gecko data chunk` (a folder of documents -> passages)
    fret/                   the stages, their context, the runner, sharding, merging, re-selection
    index, prompts          corpus embedding and search; the versioned prompt files and their parsing
    llm/, corpus/           the LLM interface and engines, tokens, cache; every corpus source, seeds
    config                  `BuildConfig`: every key of `gecko build fret`, typed and documented

Everything here may import `gecko_lightning` (the record schema is the contract between the two);
`gecko_lightning` never imports this package: the `gecko` command dispatches to it by module name.
"""
