"""LLM policies: prompt templates, answer extraction, generation backends and the rollout engine."""
