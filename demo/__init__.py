"""The demo (`make demo`): the method in miniature on a synthetic task, with its own tiny teachers and merger."""
