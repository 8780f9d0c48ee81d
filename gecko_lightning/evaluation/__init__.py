"""Evaluation: offline BEIR/STS/classification metrics, the MTEB wrapper, and the in-training callback.

Importing this package stays light (no mteb, no Lightning); submodules pull those in when used.
"""
