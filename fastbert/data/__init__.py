"""Pretraining data: corpus reading, NSP pair building, memory-mapped shards, masking collators.

Import the submodules directly (``fastbert.data.collator``, ``fastbert.data.dataset``...):
this package stays free of heavy imports so data-preparation workers start quickly.
"""
