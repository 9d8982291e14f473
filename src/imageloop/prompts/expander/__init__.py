"""Expansion strategies behind one interface: rules (always there), retrieval, local LLM, remote LLM, and the chain."""

from imageloop.prompts.expander._common import Expander, Expansion, KeptExample, Recall, StrategyFailed
from imageloop.prompts.expander.rules import RulesExpander

__all__ = ["Expander", "Expansion", "KeptExample", "Recall", "RulesExpander", "StrategyFailed"]
