"""Moved to ``evaluation.evaluate``: ``python -m training.evaluate`` still runs it (with a notice) so existing scripts keep working."""

if __name__ == "__main__":
    import runpy
    import sys

    print("note: python -m training.evaluate is now python -m evaluation.evaluate", file=sys.stderr)
    runpy.run_module("evaluation.evaluate", run_name="__main__", alter_sys=True)
