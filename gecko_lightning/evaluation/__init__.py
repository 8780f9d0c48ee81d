"""Evaluation: offline BEIR/STS/classification metrics, the MTEB wrapper, and the in-training callback.

Importing this package stays light (no mteb, no Lightning); submodules pull those in when used.
May import: `encoder`, `checkpoint`, `text_format`, `data` and the other library modules; never
`module` (the LightningModule), `cli` or `data_builders` (`gecko eval rerank` reaches the builder's
judge by module name). import-linter checks it.
"""
