"""Serving tools: launch the teachers and the merger on vLLM (``serving.launch``), start and stop vLLM
servers (``serving.vllm_server``), guard the rollout servers (``serving/guard/avrt_guard.py``) and
prepare Audio Flamingo 3's think-mode weights (``serving.prepare_af3_think``)."""
