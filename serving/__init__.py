"""Serving tools: launch the teachers and the merger on vLLM (``serving.launch``) and prepare Audio
Flamingo 3's think-mode weights (``serving.prepare_af3_think``)."""
