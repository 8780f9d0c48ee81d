"""Build FRet: LLM-generated (task, query) pairs, re-ranked neighbours, written as training records."""
