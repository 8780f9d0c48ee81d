"""The demo's mixture: its shipped NLI and classification sources, and how the demo adds the FRet build."""

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from gecko_lightning.lightning_cli import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "configs" / "assets"


def _records(folder: Path) -> list[dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = [json.loads(line) for shard in manifest["shards"] for line in (folder / shard).read_text().splitlines()]
    assert len(rows) == manifest["records"]
    return rows


def test_nli_source_is_premise_entailment_contradiction():
    """Each record against the raw SNLI files: the positive is an entailed hypothesis of its premise, the
    negative a contradiction (SentEval layout: s1 premise, s2 hypothesis, labels)."""
    rows = _records(ASSETS / "demo_nli")
    assert sum(r["negative"] is not None for r in rows) > 0.9 * len(rows)
    assert rows and all(r["symmetric"] and r["source"] == "snli" for r in rows)
    raw = Path(__file__).resolve().parents[2] / "shared" / "data" / "snli_senteval"
    if not raw.is_dir():
        pytest.skip("../shared/data/snli_senteval is absent (a user's clone)")
    s1, s2, labels = ((raw / f"{n}.test").read_text(encoding="utf-8").splitlines() for n in ("s1", "s2", "labels"))
    pairs = {(a.strip(), b.strip()): lab.strip() for a, b, lab in zip(s1, s2, labels)}  # the raw lines end in a space
    for r in rows:
        assert pairs[(r["query"], r["positive"]["text"])] == "entailment"
        if r["negative"] is not None:  # a premise without a contradiction keeps no negative
            assert pairs[(r["query"], r["negative"]["text"])] == "contradiction"


def test_classification_source_spans_every_intent_evenly():
    rows = _records(ASSETS / "demo_banking77")
    per_label = Counter(r["meta"]["label"] for r in rows)
    assert len(per_label) == 77 and set(per_label.values()) == {8}
    texts = {r["query"]: r["meta"]["label"] for r in rows}
    for r in rows:  # positives share the query's intent, negatives do not (both drawn from the sample)
        assert texts[r["positive"]["text"]] == r["meta"]["label"] != texts[r["negative"]["text"]]
    assert all(r["symmetric"] for r in rows)


@pytest.mark.parametrize("config, kind", [("configs/demo_mixture.yaml", "mixture"), ("configs/demo.yaml", "fret")])
def test_demo_adds_the_fret_build_to_either_config(config, kind, capsys, monkeypatch):
    """scripts/demo_env.sh's fret_data_arg, as demo.sh passes it: a mixture gains the build as a source."""
    monkeypatch.chdir(REPO)
    flag = subprocess.run(["bash", "-c", 'source scripts/demo_env.sh && fret_data_arg outputs/x/fret'],
                          cwd=REPO, env={"FIT_CONFIG": config, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True).stdout.strip()
    with pytest.raises(SystemExit):
        run_lightning_cli(["fit", "--config", config, flag, "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    if kind == "mixture":
        paths = [s["path"] for s in data["sources"]]
        assert paths == ["configs/assets/demo_nli", "configs/assets/demo_banking77", "outputs/x/fret"]
    else:
        assert data["path"] == "outputs/x/fret"
