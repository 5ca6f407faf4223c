"""The student below training and evaluation: its families (``student.family``), its prompt and inputs
(``student.inputs``), how to ask a served student (``student.served``) and its export to the full
layout that vLLM loads (``student.export``)."""
